"""Observability without sockets: counting, the collector, logs, status.

Covers the handler's per-answer counting (each answer counted once, by origin,
query type and rcode, on the fast and the full path), stale answers, the
metric families the collector builds (exactly those :data:`METRICS` defines,
with their labels, in a valid exposition), the docs table generated from them,
JSON log lines and the query log, the ``status`` report and exit code, and
reload bookkeeping. The deployment files are linted in ``tests/deploy``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.rcode
import pytest
from prometheus_client.parser import text_string_to_metric_families

from feddns.app import App
from feddns.config import Settings
from feddns.dns.handling import Handler
from feddns.histogram import Buckets
from feddns.model.registry import ClusterState
from feddns.model.services import Endpoint, Port, Service, ServiceType
from feddns.observe import logs, monitoring, status
from feddns.observe.counting import qtype_label
from feddns.observe.debug import bus_view, parse_service
from feddns.observe.families import METRICS, render_metrics_table
from feddns.observe.metrics import (
    FeddnsCollector,
    build_registry,
    exposition,
    query_totals,
)
from feddns.runtime.reloader import restart_changes
from tests.unit.dnscase import (
    federation,
    handle,
    make_handler,
    settings_for,
)

REPO = Path(__file__).resolve().parents[2]
ORIGIN = "clusterset.local."
WEB = "web.shop.svc.clusterset.local."


def web(ip: str = "10.1.0.1") -> Service:
    return Service("shop", "web", cluster_ips=("10.96.0.10",), ports=(Port("http", 80),),
                   endpoints=(Endpoint(ip, zone="zone-1"),))


def db(n: int) -> Service:
    """A headless service with ``n`` ready endpoints (a big answer)."""
    return Service("data", "db", type=ServiceType.HEADLESS, ports=(Port("pg", 5432),),
                   endpoints=tuple(Endpoint(f"10.2.{i // 250}.{i % 250 + 1}", zone="zone-1",
                                            hostname=f"db-{i}") for i in range(n)))


def ask(handler: Handler, qname: str, qtype: str | int = "A", *, edns: bool = True,
        tcp: bool = False, full: bool = False, **kw: Any) -> dns.message.Message:
    q = dns.message.make_query(qname, qtype, use_edns=0 if edns else None, **kw)
    data = q.to_wire()
    reply = handler.handle_full(data, tcp=tcp) if full else handle(handler, data, tcp)
    assert reply is not None
    return dns.message.from_wire(reply, ignore_trailing=True)


def counted(handler: Handler) -> dict[tuple[str, str, str], int]:
    return query_totals(handler.query_counts)[0]


# --- counting ---------------------------------------------------------------------------


def test_a_histogram_puts_a_value_equal_to_a_bound_in_that_bucket() -> None:
    buckets = Buckets((0.1, 1.0))
    for value in (0.1, 0.5, 1.0, 7.0):
        buckets.observe(value)
    assert buckets.cumulative() == [(0.1, 1), (1.0, 3), (float("inf"), 4)]
    assert (buckets.count, buckets.total) == (4, 8.6)


def test_every_answer_is_counted_once_by_origin_query_type_and_rcode() -> None:
    fed = federation({"c1": [web()]})
    handler = make_handler(fed.table)
    for _ in range(3):
        ask(handler, WEB)                      # fast path, memoized after the first
    ask(handler, WEB, full=True)               # the full path counts the same way
    ask(handler, WEB, "AAAA")                  # NODATA
    ask(handler, "nope.shop.svc.clusterset.local.")
    ask(handler, WEB, "CAA")                   # type 257: not in the list
    ask(handler, "example.com.", edns=False)   # outside every origin
    ask(handler, ".", "NS")                    # the forward plugin's health probe
    assert counted(handler) == {
        (ORIGIN, "A", "NOERROR"): 4,
        (ORIGIN, "AAAA", "NOERROR"): 1,
        (ORIGIN, "A", "NXDOMAIN"): 1,
        (ORIGIN, "other", "NOERROR"): 1,
        ("", "A", "REFUSED"): 1,
        ("", "NS", "REFUSED"): 1,
    }


def test_errors_are_counted_without_an_origin() -> None:
    fed = federation({"c1": [web()]})
    handler = make_handler(fed.table)
    bad = bytearray(dns.message.make_query(WEB, "A").to_wire())
    bad[5] = 2  # QDCOUNT 2: FORMERR
    assert handle(handler, bytes(bad)) is not None
    assert ask(handler, WEB, edns=True, full=False,
               options=None).rcode() == dns.rcode.NOERROR
    badvers = dns.message.make_query(WEB, "A", use_edns=1)
    reply = handle(handler, badvers.to_wire())
    assert reply is not None
    totals = counted(handler)
    assert totals[("", "other", "FORMERR")] == 1
    assert totals[("", "A", "BADVERS")] == 1
    assert handle(handler, b"\x00\x01") is None  # short: dropped, not counted
    assert sum(counted(handler).values()) == 3


def test_an_answer_too_big_for_udp_is_counted_once_though_it_leaves_the_fast_path() -> None:
    fed = federation({"c1": [db(60)]}, dns={"max_records": 60})
    handler = make_handler(fed.table)
    msg = ask(handler, "db.data.svc.clusterset.local.", edns=False)
    assert msg.flags & dns.flags.TC  # did not fit 512 octets
    assert counted(handler) == {(ORIGIN, "A", "NOERROR"): 1}
    assert handler.truncated_total() == 1


def test_stale_answers_are_counted_as_noerror_and_as_stale() -> None:
    fed = federation({"c1": [web()]})
    fed.registry.set_state("c1", ClusterState.STALE, now=10.0, error="lost")
    fed.sync()
    handler = make_handler(fed.table)
    msg = ask(handler, WEB)
    assert [o.otype for o in msg.options] == [dns.edns.EDE]
    ask(handler, WEB, edns=False)  # no EDE without EDNS, but stale all the same
    totals, stale = query_totals(handler.query_counts)
    assert totals == {(ORIGIN, "A", "NOERROR"): 2}
    assert stale == {ORIGIN: 2}


def test_query_types_outside_the_list_are_counted_as_other() -> None:
    assert [qtype_label(t) for t in (1, 28, 33, 65, 99, 257, 65535)] == [
        "A", "AAAA", "SRV", "HTTPS", "other", "other", "other"]


# --- the collector ------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    online: bool | None
    heartbeat_age: float | None
    services: int = 3
    complete: bool = True
    rejected_services: dict[str, str] = field(default_factory=dict)
    signed_with: str | None = None


@dataclass(frozen=True)
class Bus:
    connected: bool = True
    broker: str | None = "mqtt-b:1883"
    brokers: tuple[str, ...] = ("mqtt-a:1883", "mqtt-b:1883")
    connects: int = 2
    last_error: str | None = None
    published: int = 5
    received: int = 7
    applied: int = 6
    duplicates: int = 1
    dropped: int = 0
    gap_requests: int = 4
    oversized_own: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: {"bad_signature": 3})
    reasons: tuple[str, ...] = ("bad_signature", "replayed", "address")
    peers: dict[str, Peer] = field(default_factory=lambda: {"west": Peer(True, 1.5)})


def app_for(clusters: list[str], **overrides: Any) -> App:
    return App(settings_for(clusters, **overrides), listen=["127.0.0.1:0"])


def scrape(app: App) -> dict[str, Any]:
    text = exposition(build_registry(app)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return families


def test_the_collector_exports_exactly_the_metrics_it_defines_with_their_labels() -> None:
    app = app_for(["c1", "c2"])
    app.bus_stats = Bus
    names = set()
    for family in FeddnsCollector(app).collect():
        spec = next(m for m in METRICS if family.name in (m.name, m.name.removesuffix("_total")))
        assert family.type == spec.kind, family.name
        names.add(spec.name)
        for sample in family.samples:
            extra = {"le"} if spec.kind == "histogram" else set()
            assert set(sample.labels) - extra == set(spec.labels), sample
    assert names == {m.name for m in METRICS}


def test_the_exposition_parses_and_carries_the_process_metrics() -> None:
    app = app_for(["c1"])
    families = scrape(app)
    assert len(families) == len(set(families))
    for name in ("process_resident_memory_bytes", "process_open_fds", "feddns_cluster_state",
                 "feddns_dns_queries", "feddns_table_programming_duration_seconds"):
        assert name in families, name
    states = {s.labels["state"]: s.value for s in families["feddns_cluster_state"].samples}
    assert states == {"syncing": 1.0, "fresh": 0.0, "stale": 0.0, "expired": 0.0,
                      "unsynced": 0.0}
    assert "feddns_bus_connected" not in families  # no bus, no bus metrics


def test_bus_metrics_come_from_the_bus_stats_callable() -> None:
    app = app_for(["c1"])
    app.bus_stats = lambda: Bus(connected=False)
    families = scrape(app)
    assert families["feddns_bus_connected"].samples[0].value == 0.0
    assert families["feddns_bus_gap_requests"].samples[0].value == 4.0
    rejected = {s.labels["reason"]: s.value for s in families["feddns_bus_rejected"].samples}
    # Every known reason is exported from the start, at 0 until it happens.
    assert rejected == {"bad_signature": 3.0, "replayed": 0.0, "address": 0.0}
    peers = families["feddns_bus_peer_heartbeat_age_seconds"].samples
    assert [(s.labels["cluster"], s.value) for s in peers] == [("west", 1.5)]


def test_the_broker_in_use_is_a_gauge_the_debug_view_and_the_status_line() -> None:
    app = app_for(["c1"])
    app.bus_stats = Bus
    in_use = scrape(app)["feddns_bus_broker_in_use"].samples
    assert {s.labels["broker"]: s.value for s in in_use} == {
        "mqtt-a:1883": 0.0, "mqtt-b:1883": 1.0}
    debugged = bus_view(Bus())
    assert (debugged["broker"], debugged["brokers"]) == (
        "mqtt-b:1883", ["mqtt-a:1883", "mqtt-b:1883"])
    report = status.render(view("fresh", bus=debugged), "http://x")
    assert "bus: connected to mqtt-b:1883 (brokers: mqtt-a:1883, mqtt-b:1883)," in report


def test_the_docs_metric_table_is_the_one_the_code_renders() -> None:
    docs = (REPO / "docs" / "operations.md").read_text()
    begin, end = "<!-- metrics-table:begin -->\n", "<!-- metrics-table:end -->"
    assert begin in docs and end in docs
    table = docs.split(begin, 1)[1].split(end, 1)[0]
    assert table == render_metrics_table(), "docs/operations.md: re-render the metrics table"


def test_metric_names_follow_the_house_rules() -> None:
    for m in METRICS:
        assert m.name.startswith("feddns_"), m.name
        assert m.name.endswith("_total") == (m.kind == "counter"), m.name
        if "duration" in m.name or "lag" in m.name or "age" in m.name:
            assert m.name.endswith("_seconds"), m.name


# --- logs ---------------------------------------------------------------------------------


def test_json_log_lines_carry_the_message_and_the_extra_fields() -> None:
    record = logging.LogRecord("feddns.app", logging.WARNING, __file__, 1,
                               "cluster %s: %s", ("east", "stale"), None)
    record.cluster = "east"
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "cluster east: stale"
    assert (line["level"], line["logger"], line["cluster"]) == ("warning", "feddns.app", "east")
    assert line["time"].endswith("Z")


def test_the_query_log_names_the_client_the_name_the_type_and_the_rcode(
        caplog: pytest.LogCaptureFixture) -> None:
    fed = federation({"c1": [web()]})
    logged = logs.LoggingHandler(make_handler(fed.table))
    with caplog.at_level(logging.INFO, logger=logs.QUERY_LOGGER):
        logged.handle_udp(dns.message.make_query("WEB.shop.svc.clusterset.local.",
                                                 "AAAA").to_wire(), ("10.1.2.3", 5300))
        logged.handle_tcp(b"\x00", ("10.1.2.3", 5301))
    assert [r.getMessage() for r in caplog.records] == [
        "query 10.1.2.3#5300 udp web.shop.svc.clusterset.local. AAAA NOERROR",
        "query 10.1.2.3#5301 tcp - TYPE0 dropped",
    ]


@pytest.mark.parametrize("data", [b"", b"\x00" * 12, b"\x00" * 12 + b"\x05ab", b"\x00" * 12
                                  + b"\x40" + b"a" * 70 + b"\x00\x00\x01\x00\x01"])
def test_a_malformed_question_is_not_decoded_for_the_query_log(data: bytes) -> None:
    assert logs.question_of(data) is None


# --- status, debug, reload bookkeeping ----------------------------------------------------


def view(*states: str, ready: bool = True, bus: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "version": "1", "federation": "f", "ready": ready,
        "table": {"serial": 1, "services": 2, "names": 9},
        "clusters": [{"name": f"c{i}", "state": s, "data_age_seconds": 75.0, "services": 2,
                      "endpoints": 3, "source": "static", "error": None}
                     for i, s in enumerate(states)],
        "bus": bus,
    }


@pytest.mark.parametrize(("data", "found"), [
    (view("fresh", "fresh"), []),
    (view("fresh", "stale"), ["c1 stale"]),
    (view("syncing", ready=False), ["c0 syncing", "not ready"]),
    (view("fresh", bus={"connected": False}), ["bus disconnected"]),
])
def test_status_is_degraded_by_any_cluster_not_fresh_or_a_lost_bus(
        data: dict[str, Any], found: list[str]) -> None:
    assert status.problems(data) == found
    expected = ("status: degraded: " + ", ".join(found) if found
                else "status: all 2 cluster(s) fresh")
    assert status.render(data, "http://x").rstrip().endswith(expected)


def test_the_status_table_shows_each_cluster_with_its_age() -> None:
    report = status.render(view("fresh", bus={"connected": True, "connects": 1,
                                               "peers": {"w": {"online": True,
                                                               "heartbeat_age_seconds": 2}}}),
                           "http://x")
    lines = report.splitlines()
    assert lines[2].split() == ["CLUSTER", "STATE", "DATA", "AGE", "SERVICES", "ENDPOINTS",
                                "SOURCE", "ERROR"]
    assert lines[3].split() == ["c0", "fresh", "1m15s", "2", "3", "static", "-"]
    assert "PEER" in report and "w     yes" in report


def test_the_status_names_each_peers_rejected_services() -> None:
    peers = {"e": {"online": True, "heartbeat_age_seconds": 1,
                   "rejected_services": {"shop/checkout": "address"}}}
    report = status.render(view("fresh", "fresh", bus={"connected": True, "peers": peers}),
                           "http://x")
    assert "REJECTED SERVICES" in report and "shop/checkout (address)" in report
    assert report.rstrip().endswith("status: all 2 cluster(s) fresh")  # one service, not down


def test_a_peers_rejected_services_are_a_gauge_and_in_the_debug_view() -> None:
    app = app_for(["c1"])
    peer = Peer(True, 1.0, rejected_services={"shop/checkout": "address"})
    app.bus_stats = lambda: Bus(peers={"west": peer})
    families = scrape(app)
    gauge = families["feddns_bus_peer_rejected_services"].samples
    assert [(s.labels["cluster"], s.value) for s in gauge] == [("west", 1.0)]
    view = bus_view(Bus(peers={"west": peer}))
    assert view["peers"]["west"]["rejected_services"] == {"shop/checkout": "address"}
    assert (view["peers"]["west"]["services"], view["peers"]["west"]["complete"]) == (3, True)


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (0.25, "0.2s"), (75, "1m15s"),
                                               (7300, "2h01m"), (200000, "2d07h")])
def test_durations_are_short(seconds: float | None, text: str) -> None:
    assert status.duration(seconds) == text


def test_a_wildcard_listen_address_is_asked_on_loopback() -> None:
    assert status.url_from_listen("0.0.0.0:9154") == "http://127.0.0.1:9154"
    assert status.url_from_listen("[::]:9154") == "http://[::1]:9154"
    assert status.url_from_listen("10.0.0.5:80") == "http://10.0.0.5:80"


def test_a_service_is_named_namespace_slash_name() -> None:
    assert parse_service("shop/web") == ("shop", "web")
    assert [parse_service(v) for v in ("web", "/web", "shop/", "a/b/c")] == [None] * 4


def test_only_settings_a_reload_cannot_apply_are_reported_as_needing_a_restart() -> None:
    old = settings_for(["c1"])
    new = settings_for(["c1", "c2"], dns={"listen": ["127.0.0.1:53"], "record_ttl": 7},
                       observe={"listen": "127.0.0.1:1"}, federation="other")
    assert restart_changes(old, new) == ["dns.listen", "federation", "observe.listen"]
    assert restart_changes(old, new, listen_fixed=True, observe_fixed=True) == ["federation"]
    assert restart_changes(old, settings_for(["c2"], selection={"hold_down": 1})) == []


def test_observe_settings_default_to_loopback_text_logs_and_no_query_log() -> None:
    observe = Settings().observe
    assert (observe.listen, observe.log_format, observe.query_log) == (
        "127.0.0.1:9154", "text", False)
    assert Settings.model_validate({"observe": {"listen": None}}).observe.listen is None


# --- the event-loop monitor ---------------------------------------------------------------


class TimerLoop:
    """Records the callbacks a sampler schedules; the test runs them."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def call_later(self, delay: float, callback: Any) -> Any:
        self.callbacks.append(callback)
        return type("Handle", (), {"cancel": lambda self: None})()


def test_the_lag_sampler_keeps_the_worst_lateness_since_it_was_last_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [10.0]
    monkeypatch.setattr(monitoring, "perf_counter", lambda: clock[0])
    loop = TimerLoop()
    sampler = monitoring.LagSampler(loop, interval=0.005)  # type: ignore[arg-type]
    sampler.start()
    for late in (0.0, 0.003, 0.0, 0.001):  # fired 0, 3, 0 and 1 ms after their due time
        clock[0] += 0.005 + late
        loop.callbacks[-1]()
    assert sampler.take() == pytest.approx(0.003)
    assert sampler.take() == 0.0
    assert len(loop.callbacks) == 5  # one timer at a time, re-armed by each sample


def test_the_used_slots_include_a_counter_first_used_after_the_last_scrape() -> None:
    from feddns.observe.metrics import UsedSlots

    counts = [0] * 1000
    used = UsedSlots()
    assert used.of(counts) == []
    counts[7] = 2
    assert used.of(counts) == [7]
    counts[7] += 5  # a known slot grew: no rescan needed, still right
    assert used.of(counts) == [7]
    counts[900] = 1
    assert used.of(counts) == [7, 900]


async def test_the_exposition_in_slices_is_the_whole_exposition() -> None:
    from feddns.observe.metrics import exposition_in_slices

    app = app_for(["c1", "c2"])
    app.bus_stats = Bus
    registry = build_registry(app)

    def without_process(text: str) -> list[str]:  # process and GC figures move between reads
        return [line for line in text.splitlines() if not line.startswith(("process_",
                                                                            "python_gc_"))]

    sliced = (await exposition_in_slices(registry)).decode()
    assert without_process(sliced) == without_process(exposition(registry).decode())
