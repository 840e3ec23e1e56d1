"""The registry and incremental compilation: what a change recompiles, and the SOA serial.

A change to one service recompiles that service only (the other services'
encoded answers stay memoized, the very same objects), and the SOA serial
moves only when something a resolver could see changed. Cluster state
transitions and removals change exactly that cluster's contribution.
No clock is read: ``now`` and ``wall_now`` are passed explicitly.
"""

from __future__ import annotations

from typing import Any

import dns.message
import dns.name
import pytest

from feddns import wire
from feddns.model.registry import ClusterState, Registry
from feddns.model.services import ClusterSnapshot, Endpoint, Port, Service, ServiceType
from feddns.table.answers import CompiledAnswer
from feddns.table.compiler import next_serial, sync_table
from tests.unit.dnscase import (
    Case,
    Federation,
    check,
    federation,
    handle,
    make_handler,
    make_table,
    section,
    settings_for,
    soa,
)

WEB = "web.shop.svc.clusterset.local."
DB = "db.data.svc.clusterset.local."


def web(ip: str, *endpoints: Endpoint) -> Service:
    return Service("shop", "web", cluster_ips=(ip,), ports=(Port("http", 80),),
                   endpoints=endpoints or (Endpoint("10.1.0.1", zone="z1", node="n1"),))


def db(*endpoints: Endpoint) -> Service:
    return Service("data", "db", ServiceType.HEADLESS, ports=(Port("pg", 5432),),
                   endpoints=endpoints or (Endpoint("10.2.0.1", hostname="db-0"),))


def initial() -> Federation:
    return federation({"east": [web("10.96.1.10"), db()], "west": [web("10.96.2.10")]})


def compiled(fed: Federation, name: str, qtype: str = "A") -> CompiledAnswer:
    """The table's answer object for a question (memoized after the first lookup)."""
    qname = dns.name.from_text(name).to_wire()
    assert qname is not None
    return fed.table.lookup(qname.lower(), wire.A if qtype == "A" else wire.SRV, wire.CLASS_IN,
                            now=0.0)


def answers(fed: Federation, name: str, qtype: str = "A", *, qid: int = 0) -> list[str]:
    from tests.unit.dnscase import query

    return section(query(fed.table, name, qtype, qid=qid))


# --- what a change recompiles ----------------------------------------------------------------


def test_a_change_to_one_service_recompiles_only_that_service() -> None:
    fed = initial()
    web_a, db_a = compiled(fed, WEB), compiled(fed, DB)
    assert compiled(fed, WEB) is web_a  # memoized
    fed.load("east", [web("10.96.1.10"), db(Endpoint("10.2.0.9", hostname="db-0"))])
    assert fed.registry.dirty == {("data", "db")}
    assert fed.sync() == 1
    assert compiled(fed, WEB) is web_a  # untouched service: the same encoded answer
    assert compiled(fed, DB) is not db_a
    assert answers(fed, DB) == [f"{DB} 5 IN A 10.2.0.9"]


def test_apply_service_reports_whether_the_records_changed() -> None:
    fed = initial()
    key = ("shop", "web")
    plan, nodes = fed.table.plans[key], dict(fed.table.by_service[key])
    assert fed.table.apply_service(key, plan, nodes) is False
    assert fed.table.apply_service(key, None, {}) is True
    assert ("shop", "web") not in fed.table.by_service
    check(fed.table, Case(WEB, "A", rcode="NXDOMAIN", authority=(soa(serial=2000),)))


def test_sync_table_counts_services_that_changed_visibly_and_clears_dirty() -> None:
    fed = initial()
    fed.load("east", [web("10.96.1.99"), db(Endpoint("10.2.0.9", hostname="db-0"))])
    fed.load("west", [web("10.96.2.10", Endpoint("10.1.0.1", node="other-node"))])
    assert fed.registry.dirty == {("shop", "web"), ("data", "db")}
    assert fed.sync() == 2
    assert fed.registry.dirty == set()
    assert fed.sync() == 0


# --- the SOA serial ----------------------------------------------------------------------------


def test_the_first_compile_sets_the_serial_from_the_wall_clock() -> None:
    fed = initial()
    assert fed.table.serial == 2000
    check(fed.table, Case("clusterset.local.", "SOA", answer=(soa(serial=2000, ttl=30),)))


def test_replacing_a_snapshot_with_an_equal_one_keeps_the_serial() -> None:
    fed = initial()
    before = compiled(fed, WEB)
    fed.load("east", [web("10.96.1.10"), db()], now=50.0)
    assert fed.registry.dirty == set()  # equal by value: nothing even marked dirty
    assert fed.sync() == 0
    assert fed.table.serial == 2000
    assert compiled(fed, WEB) is before


@pytest.mark.parametrize("change", [
    {"node": "node-7"}, {"zone": "zone-9"}, {"serving": False}, {"terminating": True},
    {"target": "pod-x"},
], ids=lambda c: next(iter(c)))
def test_an_invisible_endpoint_change_recompiles_but_keeps_the_serial(
    change: dict[str, Any],
) -> None:
    fed = initial()
    before = compiled(fed, WEB)
    ep = Endpoint("10.1.0.1", zone="z1", node="n1")._replace(**change)
    fed.load("east", [web("10.96.1.10", ep), db()])
    assert fed.registry.dirty == {("shop", "web")}  # the model changed...
    assert fed.sync() == 0  # ...the DNS answers did not
    assert fed.table.serial == 2000
    assert compiled(fed, WEB) is before


def test_another_ready_endpoint_moves_the_default_weight_so_the_serial_moves() -> None:
    # Default weights follow each cluster's ready endpoints (issue #4), so one more
    # endpoint changes how often the cluster comes first: a visible change.
    fed = initial()
    more = (Endpoint("10.1.0.1", zone="z1", node="n1"), Endpoint("10.1.0.2"))
    fed.load("east", [web("10.96.1.10", *more), db()])
    assert fed.sync() == 1
    assert fed.table.serial == 2001


def test_an_endpoints_node_and_zone_under_a_cluster_ip_service_are_not_visible() -> None:
    fed = initial()
    fed.load("east", [web("10.96.1.10", Endpoint("10.1.0.1", zone="z9", node="n9")), db()])
    assert fed.sync() == 0
    assert fed.table.serial == 2000


def test_reordering_a_headless_services_endpoints_keeps_the_answer_and_the_serial() -> None:
    # Regression: the compiled RRsets followed arrival order, so a re-list of the same
    # endpoints in another order recompiled the service and moved the serial.
    pods = [Endpoint("fd00::1", hostname="db-0"), Endpoint("10.2.0.1", hostname="db-0"),
            Endpoint("10.2.0.2", hostname="db-1"), Endpoint("10.2.0.3", target="pod-3")]
    fed = federation({"east": [db(*pods)]})
    before = compiled(fed, DB)
    for order in ([3, 2, 1, 0], [2, 0, 3, 1]):
        fed.load("east", [db(*(pods[i] for i in order))])
        assert fed.registry.dirty == {("data", "db")}
        assert fed.sync() == 0
        assert fed.table.serial == 2000
        assert compiled(fed, DB) is before


def test_which_endpoints_a_bounded_headless_answer_holds_does_not_depend_on_order() -> None:
    pods = [Endpoint(f"10.2.0.{i}", hostname=f"db-{i}") for i in range(1, 6)]
    first = federation({"east": [db(*pods)]}, dns={"max_records": 2})
    second = federation({"east": [db(*reversed(pods))]}, dns={"max_records": 2})
    for qid in range(4):
        assert answers(first, DB, qid=qid) == answers(second, DB, qid=qid)
        assert answers(first, DB, "SRV", qid=qid) == answers(second, DB, "SRV", qid=qid)


def test_a_new_cluster_ip_changes_the_answer_and_the_serial() -> None:
    fed = initial()
    fed.load("east", [web("10.96.1.11"), db()])
    assert fed.sync() == 1
    assert fed.table.serial == 2001
    assert answers(fed, WEB) == [f"{WEB} 5 IN A 10.96.1.11", f"{WEB} 5 IN A 10.96.2.10"]
    check(fed.table, Case("nope.clusterset.local.", "A", rcode="NXDOMAIN",
                          authority=(soa(serial=2001),)))


def test_the_last_ready_endpoint_going_unready_changes_the_serial() -> None:
    fed = initial()
    fed.load("west", [web("10.96.2.10", Endpoint("10.1.0.1", ready=False))])
    assert fed.sync() == 1
    assert answers(fed, WEB) == [f"{WEB} 5 IN A 10.96.1.10"]


def test_the_serial_moves_forward_even_when_the_wall_clock_is_behind() -> None:
    assert next_serial(5000, 100.0) == 5001
    assert next_serial(5000, 9000.7) == 9000
    assert next_serial(0xFFFFFFFF, 0.0) == 0  # RFC 1982 wrap-around
    fed = initial()
    fed.wall = 10.0
    fed.load("east", [web("10.96.1.11"), db()])
    fed.sync()
    assert fed.table.serial == 2001


def test_a_serial_change_re_encodes_the_apex_but_not_other_answers() -> None:
    fed = initial()
    web_a = compiled(fed, WEB)
    fed.load("east", [web("10.96.1.10"), db(Endpoint("10.2.0.9", hostname="db-0"))])
    fed.sync()
    assert compiled(fed, WEB) is web_a
    check(fed.table, Case("clusterset.local.", "SOA", answer=(soa(serial=2001, ttl=30),)))


# --- deletions and removals --------------------------------------------------------------------


def test_replace_applies_deletions_a_service_missing_from_the_snapshot_vanishes() -> None:
    fed = initial()
    fed.load("east", [web("10.96.1.10")])  # db is gone
    assert fed.sync() == 1
    neg = (soa(serial=2001),)
    check(fed.table, Case(DB, "A", rcode="NXDOMAIN", authority=neg))
    check(fed.table, Case(f"db-0.east.{DB}", "A", rcode="NXDOMAIN", authority=neg))
    # Its empty non-terminals went with it.
    check(fed.table, Case(f"east.{DB}", "A", rcode="NXDOMAIN", authority=neg))
    check(fed.table, Case("data.svc.clusterset.local.", "A", rcode="NXDOMAIN", authority=neg))
    # What other services need stays.
    check(fed.table, Case("svc.clusterset.local.", "A", authority=neg))
    assert fed.table.ents  # the shop services' parents remain


def test_a_service_deleted_from_one_cluster_keeps_the_other_clusters_addresses() -> None:
    fed = initial()
    fed.load("west", [])
    assert fed.sync() == 1
    assert answers(fed, WEB) == [f"{WEB} 5 IN A 10.96.1.10"]


def test_removing_a_cluster_drops_only_its_contribution() -> None:
    fed = initial()
    db_a = compiled(fed, DB)
    fed.registry.remove_cluster("west")
    assert fed.registry.dirty == {("shop", "web")}
    assert fed.sync() == 1
    assert answers(fed, WEB) == [f"{WEB} 5 IN A 10.96.1.10"]
    assert compiled(fed, DB) is db_a
    assert "west" not in fed.registry.clusters


def test_removing_the_only_cluster_of_a_service_removes_the_service() -> None:
    fed = initial()
    fed.registry.remove_cluster("east")
    fed.sync()
    check(fed.table, Case(DB, "A", rcode="NXDOMAIN", authority=(soa(serial=2001),)))


def test_removing_a_cluster_that_never_loaded_completes_loading() -> None:
    fed = federation({"east": [web("10.96.1.10")], "west": None})
    calls: list[int] = []
    fed.registry.on_change = lambda: calls.append(1)
    assert not fed.table.loaded
    fed.registry.remove_cluster("west")
    assert calls == [1]
    fed.sync()
    assert fed.table.loaded
    check(fed.table, Case("nope.clusterset.local.", "A", rcode="NXDOMAIN",
                          authority=(soa(serial=2000),)))


# --- cluster states --------------------------------------------------------------------------


def test_a_cluster_starts_syncing_and_becomes_fresh_on_its_first_snapshot() -> None:
    registry = Registry.for_clusters(["east", "west"])
    assert registry.clusters["east"].state is ClusterState.SYNCING
    assert not registry.is_loaded
    registry.replace(ClusterSnapshot.from_services("east", [web("10.96.1.10")]), now=7.0)
    entry = registry.clusters["east"]
    assert (entry.state, entry.state_since, entry.last_sync) == (ClusterState.FRESH, 7.0, 7.0)
    assert not registry.is_loaded
    registry.replace(ClusterSnapshot("west", {}), now=8.0)
    assert registry.is_loaded


def test_a_stale_cluster_leaves_the_answer_while_a_fresh_one_answers_and_keeps_its_data() -> None:
    fed = initial()
    fed.registry.set_state("west", ClusterState.STALE, now=10.0, error="connection lost")
    entry = fed.registry.clusters["west"]
    assert (entry.state, entry.state_since, entry.error) == (
        ClusterState.STALE, 10.0, "connection lost")
    assert fed.registry.dirty == {("shop", "web")}
    assert fed.sync() == 1
    assert answers(fed, WEB) == [f"{WEB} 5 IN A 10.96.1.10"]
    assert entry.snapshot is not None and ("shop", "web") in entry.snapshot.services
    # With every cluster stale, the stale data answers, with the stale TTL (RFC 8767).
    fed.registry.set_state("east", ClusterState.STALE, now=11.0, error="connection lost")
    fed.sync()
    assert answers(fed, WEB) == [f"{WEB} 30 IN A 10.96.1.10", f"{WEB} 30 IN A 10.96.2.10"]


def test_an_expired_cluster_stops_answering_and_returns_when_it_syncs_again() -> None:
    fed = initial()
    fed.registry.set_state("east", ClusterState.EXPIRED, now=10.0)
    assert fed.sync() == 2
    assert answers(fed, WEB) == [f"{WEB} 5 IN A 10.96.2.10"]
    # Known only from expired data: unknown now, so SERVFAIL, never NXDOMAIN (#4).
    check(fed.table, Case(DB, "A", rcode="SERVFAIL", aa=False))
    assert fed.registry.service_keys() == {("shop", "web")}
    # A fresh snapshot (even an unchanged one) brings it back.
    fed.load("east", [web("10.96.1.10"), db()], now=20.0)
    assert fed.registry.clusters["east"].state is ClusterState.FRESH
    assert fed.sync() == 2
    assert answers(fed, DB) == [f"{DB} 5 IN A 10.2.0.1"]


def test_setting_the_same_state_again_only_updates_the_error() -> None:
    fed = initial()
    fed.registry.set_state("west", ClusterState.STALE, now=10.0, error="a")
    fed.sync()
    fed.registry.set_state("west", ClusterState.STALE, now=30.0, error="b")
    entry = fed.registry.clusters["west"]
    assert (entry.state_since, entry.error) == (10.0, "b")
    assert fed.registry.dirty == set()


def test_a_fresh_snapshot_clears_the_error_and_the_stale_state() -> None:
    fed = initial()
    fed.registry.set_state("west", ClusterState.STALE, now=10.0, error="lost")
    fed.load("west", [web("10.96.2.10")], now=11.0)
    entry = fed.registry.clusters["west"]
    assert (entry.state, entry.error, entry.state_since) == (ClusterState.FRESH, None, 11.0)


def test_put_service_sets_and_deletes_one_service() -> None:
    fed = initial()
    fed.registry.put_service("west", ("data", "db"), db(Endpoint("10.3.0.1", hostname="db-0")),
                             now=5.0)
    assert fed.sync() == 1
    assert answers(fed, f"db-0.west.{DB}") == [f"db-0.west.{DB} 5 IN A 10.3.0.1"]
    fed.registry.put_service("west", ("data", "db"), None, now=6.0)
    assert fed.sync() == 1
    check(fed.table, Case(f"db-0.west.{DB}", "A", rcode="NXDOMAIN",
                          authority=(soa(serial=2002),)))
    # Deleting what is not there, or setting an equal service, changes nothing.
    fed.registry.put_service("west", ("data", "db"), None, now=7.0)
    fed.registry.put_service("west", ("shop", "web"), web("10.96.2.10"), now=7.0)
    assert fed.registry.dirty == set()
    assert fed.registry.clusters["west"].last_sync == 7.0


def test_on_change_fires_once_per_batch_of_new_dirt() -> None:
    registry = Registry.for_clusters(["east"])
    calls: list[int] = []
    registry.on_change = lambda: calls.append(1)
    registry.replace(ClusterSnapshot.from_services("east", [web("10.96.1.10")]), now=1.0)
    assert calls  # the first load always notifies (SERVFAIL may turn into NXDOMAIN)
    calls.clear()
    assert registry.take_dirty() == [("shop", "web")]
    assert registry.dirty == set()
    registry.put_service("east", ("shop", "web"), web("10.96.1.11"), now=2.0)
    registry.put_service("east", ("shop", "web"), web("10.96.1.12"), now=3.0)
    assert calls == [1]  # already dirty: no second compile is scheduled


def test_a_table_built_with_a_serial_masks_it_to_32_bits() -> None:
    table = make_table(settings_for([]), serial=2**32 + 5)
    assert table.serial == 5
    registry = Registry.for_clusters([])
    assert sync_table(table, registry, wall_now=0.0) == 0
    assert table.loaded


def test_a_repeated_identical_query_sees_a_change_at_once() -> None:
    # The handler's front memo answers repeated identical (non-rotating) queries; any
    # table change must clear it.

    fed = initial()
    handler = make_handler(fed.table)
    query = dns.message.make_query(DB, "A", id=7)
    query.flags = 0
    wire_query = query.to_wire()

    def addresses() -> list[str]:
        reply = dns.message.from_wire(handle(handler, wire_query) or b"")
        return sorted(rd.address for rrset in reply.answer for rd in rrset)

    assert addresses() == addresses() == ["10.2.0.1"]
    assert handler.front.fronts[0], "the second query was answered from the front memo"
    fed.load("east", [web("10.96.1.10"), db(Endpoint("10.2.0.9", hostname="db-0"))])
    fed.sync()
    assert addresses() == ["10.2.0.9"]


# --- freshness follows the source, not the data --------------------------------------------


def test_a_sign_of_life_moves_last_fresh_only_while_the_cluster_is_fresh() -> None:
    fed = initial()
    east = fed.registry.clusters["east"]
    assert east.last_fresh == 1.0  # the load
    generation = fed.registry.generation
    fed.registry.confirm("east", now=50.0)  # a bookmark, a probe, an unchanged file
    assert east.last_fresh == 50.0
    assert fed.registry.generation == generation and not fed.registry.dirty  # no compile
    fed.registry.set_state("east", ClusterState.STALE, now=52.0)
    fed.registry.confirm("east", now=60.0)
    assert east.last_fresh == 50.0  # a lost source proves nothing


def test_max_stale_counts_from_the_last_sign_of_life_not_from_the_last_data_change() -> None:
    fed = initial()
    fed.registry.confirm("east", now=86_000.0)  # quiet for a day, but healthy
    fed.registry.set_state("east", ClusterState.STALE, now=86_002.0)
    assert fed.registry.expire(now=86_000.0 + 600.0, max_stale=600.0) == []
    assert fed.registry.expire(now=86_000.0 + 600.5, max_stale=600.0) == ["east"]


def test_a_change_while_fresh_is_a_sign_of_life_too() -> None:
    fed = initial()
    fed.registry.put_service("east", ("shop", "web"), web("10.96.1.11"), now=30.0)
    assert fed.registry.clusters["east"].last_fresh == 30.0


def test_the_endpoint_count_follows_replaces_single_changes_and_restores() -> None:
    registry = Registry.for_clusters(["east", "west"])
    two = (Endpoint("10.1.0.1"), Endpoint("10.1.0.2"))
    registry.replace(ClusterSnapshot.from_services("east", [web("10.96.0.1", *two),
                                                            db(Endpoint("10.2.0.1"))]), now=1.0)
    assert registry.clusters["east"].endpoints == 3
    registry.put_service("east", ("shop", "web"), web("10.96.0.1", two[0]), now=2.0)
    assert registry.clusters["east"].endpoints == 2
    registry.put_service("east", ("data", "db"), None, now=3.0)
    assert registry.clusters["east"].endpoints == 1
    registry.put_service("east", ("data", "db"), db(*two), now=4.0)
    snap = registry.clusters["east"].snapshot
    assert snap is not None and registry.clusters["east"].endpoints == snap.endpoint_count == 3
    registry.restore(ClusterSnapshot.from_services("west", [db(*two)]), now=5.0, age=1.0)
    assert registry.clusters["west"].endpoints == 2


def test_a_services_endpoint_counts_are_a_memo_outside_its_value() -> None:
    endpoints = (Endpoint("10.0.0.1"), Endpoint("fd00::1"), Endpoint("fd00::2", ready=False),
                 Endpoint("10.0.0.2", ready=False, serving=True, terminating=True),
                 Endpoint("10.0.0.3", ready=False, serving=False, terminating=True))
    svc = Service("ns", "web", endpoints=endpoints)
    twin = Service("ns", "web", endpoints=endpoints)
    assert svc.endpoint_counts() == (1, 1, 1, 0)
    assert svc.endpoint_counts() is svc.endpoint_counts()  # counted once
    assert svc == twin and hash(svc) == hash(twin) and "_counts" not in repr(svc)
    assert Service("ns", "web").endpoint_counts() == (0, 0, 0, 0)
