"""The HTTP endpoint of a running feddns: /metrics, /healthz, /readyz, /debug, and ``status``.

A real server runs on loopback ports (DNS and HTTP both on port 0) and is
queried with dnspython and plain HTTP. Covers the metrics a scrape returns
after real queries (counted per origin, type and rcode; latency sampled;
stale answers; programming latency after a data change), readiness that
turns from 503 to 200 when a late static file appears (and is 200 at once
after a warm start), the debug view of the registry and of one service,
``feddns status`` exit codes against a fresh, a degraded and an unreachable
instance, the prompt REFUSED to the forward plugin's ``. IN NS`` probe, the
query log switch, and DNS carrying on when the HTTP port is taken. Every
wait is a bounded poll.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from feddns.config import load_settings
from feddns.model.registry import ClusterState
from feddns.model.services import ClusterSnapshot, Endpoint, Port, Service
from feddns.sources import snapshot
from tests.support import (
    ServerThread,
    ask,
    http_get,
    make_query,
    serve,
    wait_until,
    write_federation,
)

REPO = Path(__file__).resolve().parents[2]
WEB = "web.shop.svc.clusterset.local."
OBSERVE = {"listen": "127.0.0.1:0"}


def svc(ip: str, cluster_ip: str) -> dict[str, Any]:
    return {"namespace": "shop", "name": "web", "cluster_ips": [cluster_ip],
            "ports": [{"name": "http", "port": 80}], "endpoints": [{"address": ip}]}


CLUSTERS = {"east": {"services": [svc("10.1.0.1", "10.96.1.10")]},
            "west": {"services": [svc("10.2.0.1", "10.96.2.10")]}}


def metrics(server: ServerThread) -> dict[str, list[Any]]:
    code, text = http_get(server, "/metrics")
    assert code == 200
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples: list[Any], name: str, **labels: str) -> float | None:
    for s in samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    return None


def url(server: ServerThread) -> str:
    assert server.app is not None and server.app.http is not None
    host, port = server.app.http.address  # type: ignore[misc]
    return f"http://{host}:{port}"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[ServerThread]:
    config = write_federation(tmp_path, CLUSTERS, extra={"observe": OBSERVE})
    with serve(config) as server:
        yield server


def test_a_scrape_counts_the_answers_sent_by_origin_type_and_rcode(
        running: ServerThread) -> None:
    for _ in range(70):
        assert ask(running.port, make_query(WEB)).rcode() == dns.rcode.NOERROR
    ask(running.port, make_query(WEB, "AAAA"), tcp=True)
    ask(running.port, make_query("nope.shop.svc.clusterset.local."))
    ask(running.port, make_query("example.org."))
    samples = metrics(running)["feddns_dns_queries"]
    series = "feddns_dns_queries_total"
    assert value(samples, series, origin="clusterset.local.", qtype="A", rcode="NOERROR") == 70
    assert value(samples, series, origin="clusterset.local.", qtype="AAAA",
                 rcode="NOERROR") == 1
    assert value(samples, series, origin="clusterset.local.", qtype="A", rcode="NXDOMAIN") == 1
    assert value(samples, series, origin="", qtype="A", rcode="REFUSED") == 1
    latency = metrics(running)["feddns_dns_answer_duration_seconds"]
    # The first query of each transport is always timed; then one per 10 ms at most.
    assert 1 <= value(latency, "feddns_dns_answer_duration_seconds_count", transport="udp") <= 71
    assert value(latency, "feddns_dns_answer_duration_seconds_count", transport="tcp") == 1


def test_a_scrape_shows_each_cluster_state_age_services_and_endpoints(
        running: ServerThread) -> None:
    found = metrics(running)
    state = found["feddns_cluster_state"]
    assert value(state, "feddns_cluster_state", cluster="east", state="fresh") == 1
    assert value(state, "feddns_cluster_state", cluster="east", state="stale") == 0
    age = value(found["feddns_cluster_data_age_seconds"], "feddns_cluster_data_age_seconds",
                cluster="west")
    assert age is not None and 0 <= age < 60
    assert value(found["feddns_cluster_endpoints"], "feddns_cluster_endpoints",
                 cluster="west") == 1
    assert value(found["feddns_cluster_info"], "feddns_cluster_info", cluster="east",
                 source="static", region="region-1") == 1
    assert value(found["feddns_ready"], "feddns_ready") == 1
    assert value(found["feddns_event_loop_tasks"], "feddns_event_loop_tasks") >= 4  # type: ignore[operator]
    assert found["process_resident_memory_bytes"][0].value > 0


def test_a_data_change_is_timed_from_the_registry_to_the_compiled_table(
        running: ServerThread, tmp_path: Path) -> None:
    name = "feddns_table_programming_duration_seconds_count"
    before = value(metrics(running)["feddns_table_programming_duration_seconds"], name)
    assert before is not None and before >= 1  # the initial load
    changed = {**CLUSTERS, "west": {"services": [svc("10.2.0.9", "10.96.2.99")]}}
    (tmp_path / "services.yaml").write_text(yaml.safe_dump({"clusters": changed}))
    wait_until(lambda: "10.96.2.99" in str(ask(running.port, make_query(WEB)).answer))
    after = value(metrics(running)["feddns_table_programming_duration_seconds"], name)
    assert after is not None and after > before
    compiled = metrics(running)["feddns_table_compile_duration_seconds"]
    assert value(compiled, "feddns_table_compile_duration_seconds_count") >= 2  # type: ignore[operator]


def test_stale_answers_are_counted(tmp_path: Path) -> None:
    config = write_federation(tmp_path, {"east": CLUSTERS["east"]},
                              extra={"observe": OBSERVE, "selection": {"hold_down": 0}})
    with serve(config) as server:
        app = server.app
        assert app is not None
        server.call(lambda: app.registry.set_state("east", ClusterState.STALE,
                                                   now=app.clock(), error="lost"))
        wait_until(lambda: bool(ask(server.port, make_query(WEB, edns=0)).options))
        reply = ask(server.port, make_query(WEB, edns=0))
        assert [o.otype for o in reply.options] == [dns.edns.EDE]
        stale = metrics(server)["feddns_dns_stale_answers"]
        assert value(stale, "feddns_dns_stale_answers_total",  # type: ignore[operator]
                     origin="clusterset.local.") >= 2


def test_health_is_200_and_readiness_turns_200_when_a_late_source_delivers(
        tmp_path: Path) -> None:
    config = write_federation(tmp_path, CLUSTERS, extra={"observe": OBSERVE})
    data = tmp_path / "services.yaml"
    content = data.read_text()
    data.unlink()  # the static file appears later
    server = ServerThread(load_settings(config)).start(wait_loaded=False)
    try:
        assert http_get(server, "/healthz") == (200, "ok\n")
        code, text = http_get(server, "/readyz")
        assert (code, text) == (
            503, "not ready: waiting for east, west (at most sync_timeout 15 s)\n")
        assert value(metrics(server)["feddns_ready"], "feddns_ready") == 0
        assert ask(server.port, make_query(WEB)).rcode() == dns.rcode.SERVFAIL
        data.write_text(content)
        wait_until(lambda: http_get(server, "/readyz")[0] == 200)
        assert http_get(server, "/readyz") == (200, "ready\n")
        assert ask(server.port, make_query(WEB)).rcode() == dns.rcode.NOERROR
    finally:
        server.stop()


def test_readiness_turns_200_after_sync_timeout_naming_the_clusters_that_never_synced(
        tmp_path: Path) -> None:
    config = write_federation(tmp_path, CLUSTERS, extra={
        "observe": OBSERVE, "freshness": {"sync_timeout": 0.5}})
    (tmp_path / "services.yaml").unlink()  # the source never delivers
    started = time.monotonic()
    server = ServerThread(load_settings(config)).start(wait_loaded=False)
    try:
        assert ask(server.port, make_query(WEB)).rcode() == dns.rcode.SERVFAIL
        wait_until(lambda: http_get(server, "/readyz")[0] == 200, timeout=10, interval=0.05)
        # The timer opened the gate: not before sync_timeout (the source never delivers).
        assert time.monotonic() - started >= 0.5
        assert http_get(server, "/readyz") == (
            200, "ready; degraded: unsynced past sync_timeout: east, west\n")
        assert ask(server.port, make_query(WEB)).rcode() == dns.rcode.NXDOMAIN
        view = json.loads(http_get(server, "/debug")[1])
        assert [(c["name"], c["state"], c["unsynced"]) for c in view["clusters"]] == [
            ("east", "unsynced", True), ("west", "unsynced", True)]
        assert view["sync_gate"] == {"open": True, "sync_timeout_seconds": 0.5, "awaited": [],
                                     "unsynced": ["east", "west"]}
        states = metrics(server)["feddns_cluster_state"]
        assert value(states, "feddns_cluster_state", cluster="east", state="unsynced") == 1
    finally:
        server.stop()


def test_readiness_is_200_at_once_after_a_warm_start_though_no_source_synced(
        tmp_path: Path) -> None:
    saved = {"east": snapshot.SavedCluster(
        ClusterSnapshot.from_services("east", [Service("shop", "web", cluster_ips=(
            "10.96.1.10",), ports=(Port("http", 80),), endpoints=(Endpoint("10.1.0.1"),))]),
        time.time() - 30)}
    state = tmp_path / "snapshot"
    snapshot.write_atomically(state, snapshot.encode(saved, federation="test", wall=time.time()))
    config = write_federation(tmp_path, {"east": CLUSTERS["east"]},
                              extra={"observe": OBSERVE, "snapshot": {"path": str(state)}})
    (tmp_path / "services.yaml").unlink()  # the source never delivers
    server = ServerThread(load_settings(config)).start(wait_loaded=False)
    try:
        assert http_get(server, "/readyz") == (200, "ready\n")
        assert ask(server.port, make_query(WEB)).rcode() == dns.rcode.NOERROR  # stale data
        view = json.loads(http_get(server, "/debug")[1])
        assert view["warm_started"] is True
        assert [(c["name"], c["state"], c["synced_once"]) for c in view["clusters"]] == [
            ("east", "stale", False)]
    finally:
        server.stop()


def test_the_debug_view_shows_clusters_and_the_table(running: ServerThread) -> None:
    code, text = http_get(running, "/debug")
    assert code == 200
    view = json.loads(text)
    assert view["ready"] is True and view["federation"] == "test"
    east = next(c for c in view["clusters"] if c["name"] == "east")
    assert {k: east[k] for k in ("state", "services", "endpoints", "source", "error")} == {
        "state": "fresh", "services": 1, "endpoints": 1, "source": "static", "error": None}
    assert view["table"]["services"] == 1 and view["table"]["serial"] > 0
    assert view["table"]["origins"] == ["clusterset.local."]
    assert view["bus"] is None


def test_the_debug_view_of_one_service_shows_its_candidates(running: ServerThread) -> None:
    code, text = http_get(running, "/debug?service=shop/web")
    assert code == 200
    service = json.loads(text)
    assert [c["cluster"] for c in service["clusters"]] == ["east", "west"]
    candidates = {c["cluster"]: c for c in service["plan"]["candidates"]}
    assert candidates["west"]["addresses"] == ["10.96.2.10"]
    assert candidates["west"]["level"] == "ready"
    assert http_get(running, "/debug?service=shop/nope")[0] == 404
    assert http_get(running, "/debug?service=nope")[0] == 400


def feddns_status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "feddns", "status", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=30, check=False)


def test_status_exits_0_when_every_cluster_is_fresh(running: ServerThread) -> None:
    proc = feddns_status("--url", url(running))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[2].split()[:2] == ["CLUSTER", "STATE"]
    assert [ln.split()[:2] for ln in lines[3:5]] == [["east", "fresh"], ["west", "fresh"]]
    assert proc.stdout.rstrip().endswith("status: all 2 cluster(s) fresh")


def test_status_exits_1_when_a_cluster_is_not_fresh(tmp_path: Path) -> None:
    config = write_federation(tmp_path, CLUSTERS, extra={"observe": OBSERVE})
    with serve(config) as server:
        app = server.app
        assert app is not None
        server.call(lambda: app.registry.set_state("west", ClusterState.STALE,
                                                   now=app.clock(), error="watch lost"))
        proc = feddns_status("--url", url(server))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    west = next(ln for ln in proc.stdout.splitlines() if ln.startswith("west "))
    assert west.split()[1] == "stale" and west.endswith("static  watch lost")
    assert proc.stdout.rstrip().endswith("status: degraded: west stale")


def test_status_exits_2_when_nothing_answers() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        proc = feddns_status("--url", f"http://127.0.0.1:{port}", "--timeout", "2")
    assert proc.returncode == 2
    assert proc.stdout == "" and "cannot reach" in proc.stderr


@dataclass(frozen=True)
class Bus:
    connected: bool = False
    broker: str | None = None
    brokers: tuple[str, ...] = ("127.0.0.1:1883",)
    connects: int = 3
    last_error: str | None = "connection refused"
    published: int = 4
    received: int = 9
    applied: int = 8
    duplicates: int = 1
    dropped: int = 0
    gap_requests: int = 5
    oversized_own: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: {"replayed": 2})
    reasons: tuple[str, ...] = ("bad_signature", "replayed", "address")
    peers: dict[str, Any] = field(default_factory=dict)


def test_the_bus_counters_reach_metrics_and_status(running: ServerThread) -> None:
    app = running.app
    assert app is not None
    app.bus_stats = Bus
    found = metrics(running)
    assert value(found["feddns_bus_rejected"], "feddns_bus_rejected_total",
                 reason="replayed") == 2
    assert value(found["feddns_bus_connected"], "feddns_bus_connected") == 0
    assert value(found["feddns_bus_gap_requests"], "feddns_bus_gap_requests_total") == 5
    proc = feddns_status("--url", url(running))
    assert proc.returncode == 1
    assert "bus: DISCONNECTED, 3 connect(s)" in proc.stdout
    assert "last error: connection refused" in proc.stdout


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_the_forward_plugins_health_probe_gets_a_prompt_refused(
        running: ServerThread, tcp: bool) -> None:
    probe = dns.message.make_query(".", "NS")  # RD=1, as CoreDNS sends it
    reply = ask(running.port, probe, tcp=tcp, timeout=2.0)  # an answer, not a timeout
    assert reply.rcode() == dns.rcode.REFUSED


def test_the_query_log_logs_each_query_when_switched_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = write_federation(tmp_path, CLUSTERS,
                              extra={"observe": {**OBSERVE, "query_log": True}})
    with caplog.at_level(logging.INFO, logger="feddns.query"), serve(config) as server:
        # The same query three times: a repeat must not be answered from the
        # transport's front memo behind the log's back.
        query = make_query(WEB, "SRV")
        for _ in range(3):
            ask(server.port, query)
        wait_until(lambda: sum("SRV" in r.getMessage() for r in caplog.records) == 3)
    lines = [r.getMessage() for r in caplog.records if r.name == "feddns.query"]
    assert len(lines) == 3
    for line in lines:
        assert line.startswith("query 127.0.0.1#")
        assert line.endswith(f" udp {WEB} SRV NOERROR")


def test_nothing_is_logged_per_query_by_default(
        running: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        for _ in range(20):
            ask(running.port, make_query(WEB))
    assert [r for r in caplog.records if r.name == "feddns.query"] == []


def test_dns_is_served_when_the_metrics_port_is_taken(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_federation(tmp_path, CLUSTERS,
                                  extra={"observe": {"listen": f"127.0.0.1:{port}"}})
        with caplog.at_level(logging.ERROR), serve(config) as server:
            assert ask(server.port, make_query(WEB)).rcode() == dns.rcode.NOERROR
            assert server.app is not None and server.app.http is None
    assert any("cannot serve metrics" in r.getMessage() for r in caplog.records)
