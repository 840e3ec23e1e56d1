"""KEP-1645 naming as feddns implements it, stated as case tables.

Each row is a question and the complete reply it must get (rcode, answer,
authority, and where it matters the additional section), run through the
real answer table and query handler on both the fast and the strict path.
The federation below is built from model objects; every row's comment-free
expectation can be checked against the naming rules in
``feddns/table/names.py`` and the spec (``multicluster-dns.md`` §1.2).
"""

from __future__ import annotations

from typing import Any

import pytest

from feddns import wire
from feddns.model.registry import ClusterState
from feddns.model.services import (
    ClusterSnapshot,
    Endpoint,
    Port,
    Protocol,
    Service,
    ServiceType,
)
from tests.unit.dnscase import (
    Case,
    Federation,
    check,
    federation,
    query,
    section,
    settings_for,
    soa,
)

ORIGIN = "clusterset.local."
NEG = (soa(ORIGIN, serial=2000),)
"""The authority section of every negative answer under the default SOA (TTL 5)."""

HEADLESS = ServiceType.HEADLESS
LB = ServiceType.LOAD_BALANCER
V6_NORTH = "fd00-0004-0002-0000-0000-0000-0000-0010"
"""The label of the hostname-less IPv6 endpoint fd00:4:2::10 (exploded, ':' as '-')."""


def svc(ns: str, name: str, *endpoints: Endpoint, **kw: object) -> Service:
    return Service(ns, name, endpoints=endpoints, **kw)  # type: ignore[arg-type]


def unready(address: str, **kw: object) -> Endpoint:
    return Endpoint(address, ready=False, serving=False, **kw)  # type: ignore[arg-type]


HTTP = (Port("http", 80), Port("", 8080))
PG = (Port("postgres", 5432), Port("", 9187))

DATA: dict[str, list[Service]] = {
    "east": [
        svc("shop", "web", Endpoint("10.1.1.11"), cluster_ips=("10.96.1.10",), ports=HTTP),
        svc("shop", "checkout", Endpoint("10.1.1.21"), type=LB, cluster_ips=("10.96.1.20",),
            load_balancer_ips=("203.0.113.20",), ports=(Port("https", 443),)),
        svc("shop", "api", Endpoint("10.1.1.31"), Endpoint("fd00:1:1::31"),
            cluster_ips=("10.96.1.30", "fd00:96::30"), ports=(Port("grpc", 8443),)),
        svc("shop", "legacy", unready("10.1.1.51"), cluster_ips=("10.96.1.50",),
            ports=(Port("http", 8080),)),
        svc("data", "db",
            Endpoint("10.1.2.10", hostname="db-0"), Endpoint("fd00:1:2::10", hostname="db-0"),
            Endpoint("10.1.2.11", hostname="db-1"), type=HEADLESS, ports=PG),
        svc("data", "cache", unready("10.1.3.10", hostname="cache-0"), type=HEADLESS,
            ports=(Port("redis", 6379),)),
    ],
    # A dotted, two-label cluster id (KEP-1645 / KEP-2149 allow it).
    "west.prod": [
        svc("shop", "web", Endpoint("10.3.1.11"), unready("10.3.1.12"),
            cluster_ips=("10.96.3.10",), ports=HTTP),
        # A LoadBalancer without an ingress IP yet: its cluster IP answers.
        svc("shop", "checkout", Endpoint("10.3.1.21"), type=LB, cluster_ips=("10.96.3.20",),
            ports=(Port("https", 443),)),
        svc("data", "db", Endpoint("10.3.2.10", hostname="db-0"),
            unready("10.3.2.11", hostname="db-1", terminating=True), type=HEADLESS, ports=PG),
    ],
    "north": [
        # Only unready endpoints: this cluster does not count for web.
        svc("shop", "web", unready("10.2.1.11"), cluster_ips=("10.96.2.10",), ports=HTTP),
        # Endpoints without hostname (and without a target tying them together).
        svc("data", "db", Endpoint("10.4.2.10"), Endpoint("fd00:4:2::10"), type=HEADLESS,
            ports=PG),
    ],
}

WEB = "web.shop.svc.clusterset.local."
DB = "db.data.svc.clusterset.local."
WEB_A = (f"{WEB} 5 IN A 10.96.1.10", f"{WEB} 5 IN A 10.96.3.10")
DB_TARGETS = (
    f"db-0.east.{DB}",
    f"db-1.east.{DB}",
    f"db-0.west.prod.{DB}",
    f"10-4-2-10.north.{DB}",
    f"{V6_NORTH}.north.{DB}",
)
DB_TARGET_ADDRESSES = (
    f"db-0.east.{DB} 5 IN A 10.1.2.10",
    f"db-0.east.{DB} 5 IN AAAA fd00:1:2::10",
    f"db-1.east.{DB} 5 IN A 10.1.2.11",
    f"db-0.west.prod.{DB} 5 IN A 10.3.2.10",
    f"10-4-2-10.north.{DB} 5 IN A 10.4.2.10",
    f"{V6_NORTH}.north.{DB} 5 IN AAAA fd00:4:2::10",
)

CASES = [
    # --- ClusterIP: one address per cluster with a ready endpoint (north has none) ---
    Case(WEB, "A", answer=WEB_A),
    Case(WEB, "AAAA", authority=NEG),
    # SRV on the bare name: one per port, named or not (mcs-api conformance).
    Case(WEB, "SRV", answer=(f"{WEB} 5 IN SRV 0 100 80 {WEB}", f"{WEB} 5 IN SRV 0 100 8080 {WEB}"),
         additional=WEB_A),
    Case(f"_http._tcp.{WEB}", "SRV", answer=(f"_http._tcp.{WEB} 5 IN SRV 0 100 80 {WEB}",),
         additional=WEB_A),
    Case(f"_http._tcp.{WEB}", "A", authority=NEG),
    Case(f"_http._udp.{WEB}", "SRV", rcode="NXDOMAIN", authority=NEG),
    Case(f"_8080._tcp.{WEB}", "SRV", rcode="NXDOMAIN", authority=NEG),
    Case(f"_tcp.{WEB}", "SRV", authority=NEG),
    # The cluster-pinned name of a ClusterIP service has nothing below it: it does not exist.
    Case(f"east.{WEB}", "A", rcode="NXDOMAIN", authority=NEG),
    Case(f"west.prod.{WEB}", "A", rcode="NXDOMAIN", authority=NEG),
    # --- LoadBalancer: ingress IP when present, else the cluster IP -------------------
    Case("checkout.shop.svc.clusterset.local.", "A", answer=(
        "checkout.shop.svc.clusterset.local. 5 IN A 203.0.113.20",
        "checkout.shop.svc.clusterset.local. 5 IN A 10.96.3.20",
    )),
    # --- dual-stack ClusterIP ----------------------------------------------------------
    Case("api.shop.svc.clusterset.local.", "A",
         answer=("api.shop.svc.clusterset.local. 5 IN A 10.96.1.30",)),
    Case("api.shop.svc.clusterset.local.", "AAAA",
         answer=("api.shop.svc.clusterset.local. 5 IN AAAA fd00:96::30",)),
    Case("_grpc._tcp.api.shop.svc.clusterset.local.", "SRV",
         answer=("_grpc._tcp.api.shop.svc.clusterset.local. 5 IN SRV 0 100 8443 "
                 "api.shop.svc.clusterset.local.",),
         additional=("api.shop.svc.clusterset.local. 5 IN A 10.96.1.30",
                     "api.shop.svc.clusterset.local. 5 IN AAAA fd00:96::30")),
    # --- every endpoint unready: the names exist and answer NODATA ---------------------
    Case("legacy.shop.svc.clusterset.local.", "A", authority=NEG),
    Case("legacy.shop.svc.clusterset.local.", "SRV", authority=NEG),
    Case("_http._tcp.legacy.shop.svc.clusterset.local.", "SRV", authority=NEG),
    Case("cache.data.svc.clusterset.local.", "A", authority=NEG),
    Case("_redis._tcp.cache.data.svc.clusterset.local.", "SRV", authority=NEG),
    Case("cache-0.east.cache.data.svc.clusterset.local.", "A", rcode="NXDOMAIN",
         authority=NEG),
    # --- headless: ready endpoint addresses -------------------------------------------
    Case(DB, "A", answer=(f"{DB} 5 IN A 10.1.2.10", f"{DB} 5 IN A 10.1.2.11",
                          f"{DB} 5 IN A 10.3.2.10", f"{DB} 5 IN A 10.4.2.10")),
    Case(DB, "AAAA", answer=(f"{DB} 5 IN AAAA fd00:1:2::10", f"{DB} 5 IN AAAA fd00:4:2::10")),
    # SRV on the bare name: ready endpoint x port; targets' addresses in additional.
    Case(DB, "SRV",
         answer=tuple(f"{DB} 5 IN SRV 0 100 {p} {t}" for t in DB_TARGETS for p in (5432, 9187)),
         additional=DB_TARGET_ADDRESSES),
    # _port._proto: ready endpoint x named port only.
    Case(f"_postgres._tcp.{DB}", "SRV",
         answer=tuple(f"_postgres._tcp.{DB} 5 IN SRV 0 100 5432 {t}" for t in DB_TARGETS),
         additional=DB_TARGET_ADDRESSES),
    Case(f"_9187._tcp.{DB}", "SRV", rcode="NXDOMAIN", authority=NEG),
    # Per-endpoint names: <hostname>.<clusterid>.<svc>.<ns>.svc.<origin>.
    Case(f"db-0.east.{DB}", "A", answer=(f"db-0.east.{DB} 5 IN A 10.1.2.10",)),
    Case(f"db-0.east.{DB}", "AAAA", answer=(f"db-0.east.{DB} 5 IN AAAA fd00:1:2::10",)),
    Case(f"db-1.east.{DB}", "AAAA", authority=NEG),
    Case(f"db-0.west.prod.{DB}", "A", answer=(f"db-0.west.prod.{DB} 5 IN A 10.3.2.10",)),
    Case(f"db-1.west.prod.{DB}", "A", rcode="NXDOMAIN", authority=NEG),  # not ready
    Case(f"db-0.north.{DB}", "A", rcode="NXDOMAIN", authority=NEG),
    # No hostname: the label is the address, '.' or ':' as '-', IPv6 exploded.
    Case(f"10-4-2-10.north.{DB}", "A", answer=(f"10-4-2-10.north.{DB} 5 IN A 10.4.2.10",)),
    Case(f"{V6_NORTH}.north.{DB}", "AAAA",
         answer=(f"{V6_NORTH}.north.{DB} 5 IN AAAA fd00:4:2::10",)),
    Case(f"fd00--4-2--10.north.{DB}", "AAAA", rcode="NXDOMAIN", authority=NEG),
    # The reserved cluster-pinned names are empty non-terminals: NODATA, never records.
    Case(f"east.{DB}", "A", authority=NEG),
    Case(f"east.{DB}", "SRV", authority=NEG),
    Case(f"west.prod.{DB}", "A", authority=NEG),
    Case(f"west.prod.{DB}", "AAAA", authority=NEG),
    Case(f"prod.{DB}", "A", authority=NEG),
    Case(f"north.{DB}", "SRV", authority=NEG),
    Case(f"_tcp.{DB}", "SRV", authority=NEG),
    # --- empty non-terminals above services, and names that do not exist --------------
    Case("shop.svc.clusterset.local.", "A", authority=NEG),
    Case("data.svc.clusterset.local.", "SRV", authority=NEG),
    Case("svc.clusterset.local.", "A", authority=NEG),
    Case("nope.shop.svc.clusterset.local.", "A", rcode="NXDOMAIN", authority=NEG),
    Case("other.svc.clusterset.local.", "A", rcode="NXDOMAIN", authority=NEG),
    Case("web.shop.clusterset.local.", "A", rcode="NXDOMAIN", authority=NEG),
    Case(f"x.{WEB}", "A", rcode="NXDOMAIN", authority=NEG),
    # --- the apex and the schema version ------------------------------------------------
    Case(ORIGIN, "SOA", answer=(soa(ORIGIN, serial=2000, ttl=30),)),
    Case(ORIGIN, "NS", answer=(f"{ORIGIN} 30 IN NS ns.{ORIGIN}",)),
    Case(ORIGIN, "A", authority=NEG),
    Case(f"dns-version.{ORIGIN}", "TXT", answer=(f'dns-version.{ORIGIN} 28800 IN TXT "1.0.0"',)),
    Case(f"dns-version.{ORIGIN}", "A", authority=NEG),
    # RFC 8482 §4.2: ANY gets one synthesized HINFO.
    Case(WEB, "ANY", answer=(f'{WEB} 8482 IN HINFO "RFC8482" ""',)),
    # --- outside every origin: REFUSED, not authoritative --------------------------------
    Case("example.com.", "A", rcode="REFUSED", aa=False),
    Case("local.", "SOA", rcode="REFUSED", aa=False),
    Case("xclusterset.local.", "A", rcode="REFUSED", aa=False),
    Case("web.shop.svc.cluster.local.", "A", rcode="REFUSED", aa=False),
]


@pytest.fixture(scope="module")
def demo() -> Federation:
    return federation(DATA)


@pytest.mark.parametrize("full", [False, True], ids=["fast-path", "strict-path"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_federation_answers_each_naming_case(demo: Federation, case: Case, full: bool) -> None:
    check(demo.table, case, full=full)


def test_a_mixed_case_question_finds_the_lowercase_records(demo: Federation) -> None:
    for full in (False, True):
        msg = query(demo.table, "WeB.ShOp.SVC.ClusterSet.LOCAL.", "A", full=full)
        assert msg.rcode() == 0
        assert msg.question[0].name.to_text() == "WeB.ShOp.SVC.ClusterSet.LOCAL."  # echoed
        assert section(msg) == sorted(WEB_A)


def test_an_unnamed_port_gives_no_port_name_only_the_bare_srv(demo: Federation) -> None:
    names = {wire.wire_to_text(n) for n in demo.table.by_service[("shop", "web")]}
    assert names == {WEB, f"_http._tcp.{WEB}", f"_explain.{WEB}"}


def test_the_negative_ttl_is_the_smaller_of_soa_ttl_and_soa_minimum() -> None:
    for soa_cfg, ttl in (({"ttl": 3, "minimum": 60}, 3), ({"ttl": 60, "minimum": 7}, 7)):
        fed = federation({"east": DATA["east"]}, soa=soa_cfg)
        neg = soa(ORIGIN, serial=2000, ttl=ttl, minimum=soa_cfg["minimum"])
        check(fed.table, Case("nope.clusterset.local.", "A", rcode="NXDOMAIN",
                              authority=(neg,)))
        check(fed.table, Case(WEB, "AAAA", authority=(neg,)))
        check(fed.table, Case(ORIGIN, "SOA", answer=(soa(ORIGIN, serial=2000, ttl=soa_cfg["ttl"],
                                                     minimum=soa_cfg["minimum"]),)))


# --- origins and service_address ---------------------------------------------------------

TWO_ORIGINS: dict[str, Any] = {"origins": [{"name": "clusterset.local"},
                           {"name": "mcs.example", "service_address": "cluster-ip"}]}


def test_two_origins_both_answer_every_service() -> None:
    fed = federation(DATA, **TWO_ORIGINS)
    m = "mcs.example."
    for origin in (ORIGIN, m):
        neg = (soa(origin, serial=2000),)
        check(fed.table, Case(f"web.shop.svc.{origin}", "A", answer=tuple(
            f"web.shop.svc.{origin} 5 IN A {ip}" for ip in ("10.96.1.10", "10.96.3.10"))))
        check(fed.table, Case(f"db-0.west.prod.db.data.svc.{origin}", "A",
                              answer=(f"db-0.west.prod.db.data.svc.{origin} 5 IN A 10.3.2.10",)))
        check(fed.table, Case(f"_postgres._tcp.db.data.svc.{origin}", "SRV", answer=tuple(
            f"_postgres._tcp.db.data.svc.{origin} 5 IN SRV 0 100 5432 "
            + t.replace(ORIGIN, origin) for t in DB_TARGETS)))
        check(fed.table, Case(f"dns-version.{origin}", "TXT",
                              answer=(f'dns-version.{origin} 28800 IN TXT "1.0.0"',)))
        check(fed.table, Case(origin, "NS", answer=(f"{origin} 30 IN NS ns.{origin}",)))
        # Each origin's negative answers carry its own SOA.
        check(fed.table, Case(f"nope.{origin}", "A", rcode="NXDOMAIN", authority=neg))
        check(fed.table, Case(f"shop.svc.{origin}", "A", authority=neg))


def test_an_origin_with_service_address_cluster_ip_answers_load_balancers_by_cluster_ip() -> None:
    fed = federation(DATA, **TWO_ORIGINS)
    check(fed.table, Case("checkout.shop.svc.mcs.example.", "A", answer=(
        "checkout.shop.svc.mcs.example. 5 IN A 10.96.1.20",
        "checkout.shop.svc.mcs.example. 5 IN A 10.96.3.20",
    )))
    check(fed.table, Case("checkout.shop.svc.clusterset.local.", "A", answer=(
        "checkout.shop.svc.clusterset.local. 5 IN A 203.0.113.20",
        "checkout.shop.svc.clusterset.local. 5 IN A 10.96.3.20",
    )))


# --- bounded headless answers --------------------------------------------------------------


def _pods(n: int) -> list[Endpoint]:
    """``n`` dual-stack pods tied by target only (no hostname), each with v4 and v6."""
    out = []
    for i in range(n):
        out += [Endpoint(f"10.0.0.{i + 1}", target=f"pod-{i}"),
                Endpoint(f"fd00::{i + 1}", target=f"pod-{i}")]
    return out


def test_a_headless_answer_is_a_bounded_subset_with_a_and_aaaa_covering_the_same_pods() -> None:
    pods = svc("ns", "h", *_pods(5), type=HEADLESS, ports=(Port("p", 7),))
    fed = federation({"east": [pods]}, dns={"max_records": 2})
    base = "h.ns.svc.clusterset.local."
    # The subset rotates across queries (by query ID); for one rotation step, A and
    # AAAA hold the same pods (KEP-1645). Every pod is in some step.
    seen: set[str] = set()
    for qid in range(6):
        a = [r.split()[-1] for r in section(query(fed.table, base, "A", qid=qid))]
        aaaa = [r.split()[-1] for r in section(query(fed.table, base, "AAAA", qid=qid))]
        assert len(a) == len(aaaa) == 2
        # Pod i has 10.0.0.(i+1) and fd00::(i+1): the same pods behind both families.
        assert sorted(x.rsplit(".", 1)[1] for x in a) == \
            sorted(x.rsplit(":", 1)[1] for x in aaaa)
        seen.update(a)
    assert seen == {f"10.0.0.{i + 1}" for i in range(5)}
    srv = section(query(fed.table, base, "SRV"))
    assert len(srv) == 2
    # Every ready pod keeps its own name (the bound applies to the service name only):
    # a target-tied pod without hostname is named by its first address, holding both.
    for i in range(5):
        owner = f"10-0-0-{i + 1}.east.{base}"
        check(fed.table, Case(owner, "A", answer=(f"{owner} 5 IN A 10.0.0.{i + 1}",)))
        check(fed.table, Case(owner, "AAAA", answer=(f"{owner} 5 IN AAAA fd00::{i + 1}",)))
    # The SRV targets are pods' own names, and their additional records are exactly
    # those pods' addresses.
    msg = query(fed.table, base, "SRV")
    targets = {r.split()[-1] for r in section(msg)}
    extra = {r.split()[0] for r in section(msg, "additional")}
    assert targets == extra
    assert {t.split(".")[0] for t in targets} <= {f"10-0-0-{i + 1}" for i in range(5)}


def test_a_clusterip_answer_is_bounded_per_family_too() -> None:
    many = [svc("ns", "s", Endpoint(f"10.1.0.{i}"), cluster_ips=(f"10.96.0.{i}",))
            for i in range(1, 6)]
    fed = federation({f"c{i}": [s] for i, s in enumerate(many)}, dns={"max_records": 3})
    assert len(section(query(fed.table, "s.ns.svc.clusterset.local.", "A"))) == 3


# --- before every cluster has delivered data (the sync gate) ---------------------------------

BEFORE_LOAD = [
    # A name not found may exist in the cluster not heard from yet.
    Case("nope.shop.svc.clusterset.local.", "A", rcode="SERVFAIL", aa=False),
    Case("nope.clusterset.local.", "A", rcode="SERVFAIL", aa=False),
    # A name known from any source answers NODATA for a type it lacks, never SERVFAIL:
    # musl's getaddrinfo asks A and AAAA together and fails the whole lookup on a
    # SERVFAIL for either (issue #12).
    Case(WEB, "AAAA", authority=NEG),
    Case("shop.svc.clusterset.local.", "A", authority=NEG),  # ENT
    Case(f"east.{DB}", "A", authority=NEG),  # ENT
    Case(f"db-1.east.{DB}", "AAAA", authority=NEG),
    # A known service with nothing ready anywhere heard from: NODATA (fail-closed).
    Case("legacy.shop.svc.clusterset.local.", "A", authority=NEG),
    # Names already known answer from the clusters heard from.
    Case(WEB, "A", answer=(f"{WEB} 5 IN A 10.96.1.10",)),
    # The apex and the schema version do not depend on cluster data.
    Case(ORIGIN, "SOA", answer=(soa(ORIGIN, serial=2000, ttl=30),)),
    Case(ORIGIN, "NS", answer=(f"{ORIGIN} 30 IN NS ns.{ORIGIN}",)),
    Case(ORIGIN, "A", authority=NEG),
    Case(f"dns-version.{ORIGIN}", "TXT", answer=(f'dns-version.{ORIGIN} 28800 IN TXT "1.0.0"',)),
    Case("example.com.", "A", rcode="REFUSED", aa=False),
]


@pytest.mark.parametrize("case", BEFORE_LOAD, ids=[c.id for c in BEFORE_LOAD])
def test_before_every_cluster_loaded_unknown_answers_servfail_never_nxdomain(case: Case) -> None:
    fed = federation({"east": DATA["east"], "west.prod": None})
    check(fed.table, case)
    check(fed.table, case, full=True)


def test_once_the_last_cluster_loads_unknown_names_answer_nxdomain() -> None:
    fed = federation({"east": DATA["east"], "west.prod": None})
    check(fed.table, BEFORE_LOAD[0])
    fed.load("west.prod", [])  # an empty cluster has delivered data too
    assert fed.sync() == 0  # nothing visible changed...
    assert fed.table.serial == 2000
    # ...but unknown is now absent.
    check(fed.table, Case("nope.shop.svc.clusterset.local.", "A", rcode="NXDOMAIN",
                          authority=NEG))
    check(fed.table, Case(WEB, "AAAA", authority=NEG))
    check(fed.table, Case("shop.svc.clusterset.local.", "A", authority=NEG))


def test_past_sync_timeout_a_cluster_that_never_synced_stops_holding_back_nxdomain() -> None:
    fed = federation({"east": DATA["east"], "west.prod": None})
    check(fed.table, BEFORE_LOAD[0])
    assert fed.registry.awaited() == ["west.prod"]
    assert fed.registry.stop_waiting("west.prod") is True  # what the sync_timeout timer does
    fed.sync()
    assert fed.table.serial == 2000  # nothing visible changed
    for full in (False, True):
        check(fed.table, Case("nope.shop.svc.clusterset.local.", "A", rcode="NXDOMAIN",
                              authority=NEG), full=full)
        check(fed.table, Case(WEB, "A", answer=(f"{WEB} 5 IN A 10.96.1.10",)), full=full)
    entry = fed.registry.clusters["west.prod"]
    assert (entry.unsynced, entry.display_state) == (True, "unsynced")
    assert fed.registry.unsynced() == ["west.prod"] and fed.registry.awaited() == []
    # When it syncs at last, its names come in and it is an ordinary fresh cluster.
    fed.load("west.prod", DATA["west.prod"])
    fed.sync()
    assert entry.display_state == "fresh" and fed.registry.unsynced() == []
    assert section(query(fed.table, WEB, "A")) == sorted(
        [f"{WEB} 5 IN A 10.96.1.10", f"{WEB} 5 IN A 10.96.3.10"])
    assert fed.registry.stop_waiting("west.prod") is False  # a late timer changes nothing


def test_a_cluster_restored_from_the_warm_start_snapshot_counts_as_synced_for_the_gate() -> None:
    fed = federation({"east": DATA["east"], "west.prod": None})
    check(fed.table, BEFORE_LOAD[0])
    fed.registry.restore(ClusterSnapshot.from_services("west.prod", DATA["west.prod"]), now=5.0,
                         age=60.0)
    fed.sync()
    check(fed.table, Case("nope.shop.svc.clusterset.local.", "A", rcode="NXDOMAIN",
                          authority=(soa(ORIGIN, serial=2001),)))
    entry = fed.registry.clusters["west.prod"]
    assert entry.restored and not entry.synced_once and entry.state is ClusterState.STALE
    assert entry.last_fresh == -55.0  # its age counts from when it was last known fresh


def test_a_federation_without_clusters_is_loaded_from_the_start() -> None:
    fed = federation({}, settings=settings_for([]))
    check(fed.table, Case(WEB, "A", rcode="NXDOMAIN", authority=(soa(ORIGIN, serial=1000),)))


# --- regressions ---------------------------------------------------------------------------


def test_the_same_pod_ip_in_two_clusters_is_answered_once_by_a_headless_service() -> None:
    # Overlapping pod CIDRs across clusters are common; an RRset never holds the same
    # record twice (RFC 2181 §5). The dnscase helper compares the header counts.
    h = [svc("ns", "h", Endpoint("10.0.0.1", hostname="p"), type=HEADLESS)]
    fed = federation({"a": h, "b": h})
    base = "h.ns.svc.clusterset.local."
    check(fed.table, Case(base, "A", answer=(f"{base} 5 IN A 10.0.0.1",)))
    check(fed.table, Case(f"p.b.{base}", "A", answer=(f"p.b.{base} 5 IN A 10.0.0.1",)))


def test_headless_ports_sharing_a_number_give_one_bare_srv_per_endpoint() -> None:
    dns_ports = (Port("dns", 53, Protocol.UDP), Port("dns-tcp", 53, Protocol.TCP))
    h = svc("ns", "h", Endpoint("10.0.0.1", hostname="p"), type=HEADLESS, ports=dns_ports)
    fed = federation({"a": [h]})
    base = "h.ns.svc.clusterset.local."
    srv = f"0 100 53 p.a.{base}"
    check(fed.table, Case(base, "SRV", answer=(f"{base} 5 IN SRV {srv}",),
                          additional=(f"p.a.{base} 5 IN A 10.0.0.1",)))
    check(fed.table, Case(f"_dns._udp.{base}", "SRV", answer=(f"_dns._udp.{base} 5 IN SRV {srv}",)))
    check(fed.table, Case(f"_dns-tcp._tcp.{base}", "SRV",
                          answer=(f"_dns-tcp._tcp.{base} 5 IN SRV {srv}",)))


def test_a_name_server_listed_twice_is_one_ns_record_with_its_address_once() -> None:
    ns = {"name": "ns1.clusterset.local", "addresses": ["192.0.2.53", "192.0.2.53"]}
    fed = federation({"east": []}, nameservers=[ns, ns])
    check(fed.table, Case(ORIGIN, "NS", answer=(f"{ORIGIN} 30 IN NS ns1.{ORIGIN}",),
                          additional=(f"ns1.{ORIGIN} 5 IN A 192.0.2.53",)))
    check(fed.table, Case(f"ns1.{ORIGIN}", "A", answer=(f"ns1.{ORIGIN} 5 IN A 192.0.2.53",)))



def test_an_endpoint_name_over_255_octets_is_left_out_so_the_srv_answer_stays_parseable() -> None:
    # A 63-octet hostname under a long service and dotted cluster id makes a 273-octet
    # endpoint name (RFC 1035 §2.3.4: at most 255). Before the fix its SRV target made
    # the whole SRV answer unparseable (dnspython: NameTooLong).
    name, ns, host = "s" * 40, "n" * 40, "h" * 63
    cluster = "a" * 63 + "." + "b" * 40
    h = svc(ns, name, Endpoint("10.0.0.1", hostname=host), Endpoint("10.0.0.2", hostname="ok"),
            type=HEADLESS, ports=(Port("p", 1),))
    fed = federation({cluster: [h]})
    base = f"{name}.{ns}.svc.clusterset.local."
    ok = f"ok.{cluster}.{base}"
    assert len(ok) + 1 <= 255 < len(f"{host}.{cluster}.{base}") + 1
    # Both endpoints are ready, so both answer at the service name...
    check(fed.table, Case(base, "A", answer=(f"{base} 5 IN A 10.0.0.1", f"{base} 5 IN A 10.0.0.2")))
    # ...but only the one that can be named is an SRV target.
    check(fed.table, Case(base, "SRV", answer=(f"{base} 5 IN SRV 0 100 1 {ok}",),
                          additional=(f"{ok} 5 IN A 10.0.0.2",)))
    check(fed.table, Case(ok, "A", answer=(f"{ok} 5 IN A 10.0.0.2",)))
    assert all(len(n) <= 255 for n in fed.table.names)


def test_a_service_name_too_long_for_a_long_origin_is_not_served_there() -> None:
    long_origin = ".".join(["o" * 63] * 3) + ".x"  # 197 octets on the wire
    fed = federation({"east": [svc("n" * 30, "s" * 30, Endpoint("10.0.0.1"),
                                   cluster_ips=("10.96.0.1",), ports=(Port("http", 80),))]},
                     origins=[{"name": "clusterset.local"}, {"name": long_origin}])
    base = f"{'s' * 30}.{'n' * 30}.svc.clusterset.local."
    check(fed.table, Case(base, "A", answer=(f"{base} 5 IN A 10.96.0.1",)))
    assert all(len(n) <= 255 for n in fed.table.names)
    # base, _http._tcp and _explain only
    assert len(fed.table.by_service[("n" * 30, "s" * 30)]) == 3
