"""The federation page's JSON without a browser or a socket: timeline, matrix, decision.

An App is built (never started; the tests run on an event loop only because the
registry schedules compiles on it) with a fake clock, its registry fed snapshots and
its table compiled at once, as the query path would see it. Covers: the counts
the plots read agree with the collector's; state changes are recorded once, with
the time the registry gives; rates come from consecutive samples; the matrix pages,
filters and colours cells by health, weight and residency; the decision for a
place is the explain record's (the same lines the TXT record carries) and its A
answer the one the table gives; malformed questions are refused.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from feddns import wire
from feddns.app import App
from feddns.model.registry import ClusterState
from feddns.model.services import ClusterSnapshot, Endpoint, Port, Service
from feddns.observe.counting import rcode_totals
from feddns.observe.decision import DecisionError, decision_view
from feddns.observe.federation import ServiceIndex, matrix_view, overview_view
from feddns.observe.metrics import query_totals
from feddns.table.evaluation import evaluate
from feddns.table.names import EXPLAIN
from tests.unit.dnscase import handle, settings_for

ORIGIN = "clusterset.local."


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def svc(name: str, ip: str, *, ready: int = 1, not_ready: int = 0, ns: str = "shop") -> Service:
    endpoints = tuple(Endpoint(f"{ip}{10 + i}", zone="zone-1") for i in range(ready)) + tuple(
        Endpoint(f"{ip}{90 + i}", zone="zone-1", ready=False, serving=False)
        for i in range(not_ready))
    return Service(ns, name, cluster_ips=(ip + "100",), ports=(Port("http", 80),),
                   endpoints=endpoints)


def built(count: int = 3, **overrides: Any) -> tuple[App, Clock]:
    clock = Clock()
    settings = settings_for(["east", "west"], **overrides)
    data = settings.model_dump(mode="json")
    data["clusters"][1]["region"] = "region-2"
    data["clusters"][1]["zones"] = ["zone-2"]
    data["clusters"][0]["networks"] = [{"cidr": "10.1.0.0/16", "zone": "zone-1"}]
    settings = type(settings).model_validate(data)
    app = App(settings, listen=["127.0.0.1:0"], clock=clock, wall=lambda: 1_800_000_000.0
              + clock.now)
    east = {("shop", f"s{i:03d}"): svc(f"s{i:03d}", "10.1.0.") for i in range(count)}
    east[("shop", "web")] = svc("web", "10.1.1.", ready=2)
    west = {("shop", "web"): svc("web", "10.2.1.", ready=0, not_ready=1),
            ("data", "db"): svc("db", "10.2.2.", ns="data")}
    app.registry.replace(ClusterSnapshot("east", east), now=clock.now)
    app.registry.replace(ClusterSnapshot("west", west), now=clock.now)
    app.compile_now()
    return app, clock


async def test_the_plots_count_answers_by_rcode_as_the_collector_does() -> None:
    app, _ = built()
    for name in ("web.shop.svc.clusterset.local.", "nope.shop.svc.clusterset.local.",
                 "example.org."):
        query = wire_query(name)
        handle(app.handler, query)
    totals, stale = rcode_totals(app.handler.query_counts)
    collector, _ = query_totals(app.handler.query_counts)
    by_rcode: dict[str, int] = {}
    for (_, _, rcode), n in collector.items():
        by_rcode[rcode] = by_rcode.get(rcode, 0) + n
    assert totals == by_rcode == {"NOERROR": 1, "NXDOMAIN": 1, "REFUSED": 1}
    assert stale == 0


def wire_query(name: str) -> bytes:
    import dns.message

    query = dns.message.make_query(name, "A")
    return bytes(query.to_wire())


async def test_a_state_change_is_recorded_once_at_the_time_the_registry_gives() -> None:
    app, clock = built()
    app.timeline.note()
    clock.now += 5
    app.registry.set_state("west", ClusterState.STALE, now=clock.now, error="watch lost")
    clock.now += 2
    app.timeline.note()
    app.timeline.note()
    view = overview_view(app)
    west = next(c for c in view["clusters"] if c["name"] == "west")
    assert [(t["from"], t["to"]) for t in west["transitions"]] == [("fresh", "stale"),
                                                                  ("syncing", "fresh")]
    assert west["transitions"][0]["ago_seconds"] == 2.0
    assert west["transitions"][0]["error"] == "watch lost"
    assert west["zones"] == ["zone-2"]


async def test_the_plots_are_rates_between_consecutive_samples() -> None:
    app, clock = built()
    app.timeline.note()
    for _ in range(10):
        handle(app.handler, wire_query("web.shop.svc.clusterset.local."))
    clock.now += 2
    app.timeline.note()
    points = app.timeline.series_view()["points"]
    assert len(points) == 1
    assert points[0]["rcodes"] == {"NOERROR": 5.0}
    assert points[0]["stale"] == 0.0


async def test_the_matrix_is_paged_and_searched_on_the_server() -> None:
    app, _ = built(count=120)
    index = ServiceIndex()
    first = matrix_view(app, index, limit=50)
    assert (first["total"], first["matches"], len(first["rows"])) == (122, 122, 50)
    assert first["rows"][0]["service"] == "data/db"
    last = matrix_view(app, index, offset=100, limit=50)
    assert len(last["rows"]) == 22
    found = matrix_view(app, index, query="shop s11")
    assert [r["service"] for r in found["rows"]] == [f"shop/s11{i}" for i in range(10)]
    assert matrix_view(app, index, limit=10_000)["limit"] == 200


async def test_a_cell_shows_ready_endpoints_the_health_level_and_the_weight() -> None:
    app, _ = built()
    row = next(r for r in matrix_view(app, ServiceIndex(), query="shop/web")["rows"])
    east, west = row["cells"]
    assert (east["ready"], east["endpoints"], east["level"], east["weight"]) == (2, 2, "ready",
                                                                                2.0)
    assert (west["ready"], west["endpoints"], west["level"]) == (0, 1, "unhealthy")
    absent = matrix_view(app, ServiceIndex(), query="data/db")["rows"][0]["cells"][0]
    assert (absent["present"], absent["level"]) == (False, None)


async def test_residency_marks_the_clusters_outside_the_allowed_regions() -> None:
    app, _ = built(services=[{"namespace": "shop", "name": "web", "regions": ["region-1"]}])
    row = matrix_view(app, ServiceIndex(), query="shop/web")["rows"][0]
    assert row["regions"] == ["region-1"]
    assert [c["excluded"] for c in row["cells"]] == [False, True]


def explain_record(app: App, place_cls: int) -> list[str]:
    """The TXT strings of ``_explain.web.shop...`` for a client class, from the table."""
    table = app.compiler.table
    base = wire.labels("web.shop.svc.clusterset.local.")
    node = table.names[EXPLAIN + base]
    outcome = evaluate(node, wire.TXT, table.locator.place(place_cls),
                       lb=False, now=app.clock())
    lines = []
    for record in outcome.variants[0][0]:
        raw = record.rdata[0]
        assert isinstance(raw, bytes)
        lines.append(raw[1:].decode())
    return lines


async def test_the_decision_for_a_cidr_is_the_explain_record_of_that_clients_class() -> None:
    app, _ = built()
    view = decision_view(app, service="shop/web", cidr="10.1.7.0/24")
    cls, _ = app.compiler.table.locator.class_of_subnet(ipaddress.ip_network("10.1.7.0/24"))
    assert view["explain"] == explain_record(app, cls)
    assert view["place"]["cluster"] == "east"
    assert view["tier"] == 0
    assert view["answers"]["A"]["records"] == ["10.1.1.100"]


async def test_the_decision_for_a_cluster_and_zone_places_the_client_there() -> None:
    app, _ = built()
    view = decision_view(app, service="shop/web", cluster="west", zone="zone-2")
    assert view["place"] == {"cluster": "west", "region": "region-2", "zone": "zone-2",
                             "given": "cluster west zone zone-2"}
    assert view["explain"][0].startswith("client cluster=west, region=region-2, zone=zone-2")
    assert view["answers"]["A"] == {"rcode": "NOERROR", "records": ["10.1.1.100"], "ttl": 5,
                                    "stale": False, "rotations": 1}
    assert view["answers"]["AAAA"]["rcode"] == "NODATA"


@pytest.mark.parametrize(("question", "status"), [
    ({"service": "web"}, 400),
    ({"service": "shop/nope"}, 404),
    ({"service": "shop/web", "cidr": "not-a-cidr"}, 400),
    ({"service": "shop/web", "cluster": "north"}, 400),
    ({"service": "shop/web", "cluster": "east", "zone": "zone-9"}, 400),
    ({"service": "shop/web", "origin": "example.org"}, 400),
])
async def test_a_malformed_question_is_refused(question: dict[str, str], status: int) -> None:
    app, _ = built()
    with pytest.raises(DecisionError) as raised:
        decision_view(app, **question)
    assert raised.value.status == status


def test_every_file_of_the_page_is_package_data_and_served() -> None:
    """A wheel carries the page (pyproject's globs), and the server knows each file."""
    import fnmatch
    import tomllib
    from pathlib import Path

    from feddns.observe.access import PAGE_FILES as OPEN_PAGE_FILES
    from feddns.observe.http import PAGE_FILES

    repo = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["feddns.observe"]
    files = sorted(p.name for p in (repo / "feddns" / "observe" / "page").iterdir())
    for name in files:
        assert any(fnmatch.fnmatch(f"page/{name}", g) for g in globs), name
    assert sorted(PAGE_FILES) == files
    assert sorted(OPEN_PAGE_FILES) == files  # each served without a token, as the page


def test_off_loopback_the_page_files_are_open_and_nothing_else_without_the_token(
        tmp_path: Any) -> None:
    """The page's files carry no data: open. Its JSON, other paths under /ui: guarded."""
    from feddns.observe.access import Access

    token_file = tmp_path / "token"
    token_file.write_text("0123456789abcdef0123\n")
    for token_set in (token_file, None):  # with a token file, and closed without one
        access = Access("0.0.0.0")
        for path in ("/ui", "/ui/", "/ui/index.html", "/ui/page.css", "/ui/page.js",
                     "/healthz"):
            assert access.allows(path, None, token_set), path
        for path in ("/debug/federation", "/debug/matrix", "/debug/decision",
                     "/debug/series", "/debug", "/metrics", "/", "/ui/feddns.yaml",
                     "/ui/page.js/", "/ui//page.js", "/uix", "/ui/../debug", "/UI"):
            assert not access.allows(path, None, token_set), path
    assert Access("0.0.0.0").allows("/debug/federation", "Bearer 0123456789abcdef0123",
                                    token_file)
