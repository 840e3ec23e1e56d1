"""The selection policy across names: residency, names beyond MCS, the explain record.

This module also holds the federation the other policy tables share
(``test_locality``, ``test_selection``, ``test_health``): four clusters in two
regions, with client networks per cluster and per zone, queried through the
real answer table and handler with an explicit client address and without
sockets, threads or clock reads (the explain record's "now" is a constant).

Topology::

    region eu: east  (zones eu-a, eu-b)  clients 10.1.0.0/16, eu-a 10.1.1.0/24,
                                         eu-b 10.1.2.0/24, 10.1.4.0/24 (both ways),
                                         fd00:1::/32, eu-a fd00:1:1::/48
               west  (zones eu-b, eu-c)  clients 10.2.0.0/16, eu-b 10.2.2.0/24,
                                         eu-c 10.2.3.0/24, fd00:2::/32
               south (zone eu-d)         clients 10.4.0.0/16
    region us: north (zone us-a)         clients 10.3.0.0/16 and 10.1.128.0/17
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dns.edns
import dns.flags
import dns.message
import pytest

from feddns.config import Settings
from feddns.model.registry import ClusterState
from feddns.model.services import Endpoint, Port, Service, ServiceType
from feddns.runtime.options import locator_from
from tests.unit.dnscase import (
    Case,
    Federation,
    check,
    federation,
    handle,
    make_handler,
    query,
    section,
    soa,
)

ORIGIN = "clusterset.local."
NOW = 1000.0
"""What the answer table's clock reads (only the explain record's ages use it)."""
NEG = (soa(ORIGIN, serial=2000),)

WEB = f"web.shop.svc.{ORIGIN}"
ZONES = f"zones.data.svc.{ORIGIN}"
EXPLAIN = f"_explain.{WEB}"

# Client addresses, by the place they are in.
EAST_A = "10.1.1.7"  # east, zone eu-a
EAST_B = "10.1.2.7"  # east, zone eu-b
EAST = "10.1.9.7"  # east, zone unknown
WEST_B = "10.2.2.7"
WEST_C = "10.2.3.7"
WEST = "10.2.9.7"
SOUTH = "10.4.9.7"
NORTH = "10.3.9.7"
OUTSIDE = "198.51.100.7"  # no network places it
FORWARDER = "192.0.2.53"  # trusted for ECS, placed nowhere itself
WEST_FORWARDER = "10.2.0.53"  # trusted for ECS, itself placed in west

CLUSTER_IP = {"east": "10.96.1.10", "west": "10.96.2.10", "south": "10.96.4.10",
              "north": "10.96.3.10"}
CLUSTER_OF = {ip: name for name, ip in CLUSTER_IP.items()}
ALL = frozenset(CLUSTER_IP)
EU = frozenset({"east", "west", "south"})


def _cluster(name: str, region: str, zones: Sequence[str],
             networks: Sequence[tuple[str, str | None]]) -> dict[str, Any]:
    return {
        "name": name, "region": region, "zones": list(zones),
        "source": {"type": "static", "file": "/nonexistent/services.yaml"},
        "networks": [{"cidr": c, **({"zone": z} if z else {})} for c, z in networks],
    }


CLUSTERS = [
    _cluster("east", "eu", ["eu-a", "eu-b"], [
        ("10.1.0.0/16", None), ("10.1.1.0/24", "eu-a"), ("10.1.2.0/24", "eu-b"),
        # The same network twice, cluster-level first: the zone-level entry wins.
        ("10.1.4.0/24", None), ("10.1.4.0/24", "eu-b"),
        ("fd00:1::/32", None), ("fd00:1:1::/48", "eu-a"),
    ]),
    _cluster("west", "eu", ["eu-b", "eu-c"], [
        ("10.2.0.0/16", None), ("10.2.2.0/24", "eu-b"), ("10.2.3.0/24", "eu-c"),
        ("fd00:2::/32", None),
    ]),
    _cluster("south", "eu", ["eu-d"], [("10.4.0.0/16", None)]),
    # A /17 inside east's /16: the longer prefix wins.
    _cluster("north", "us", ["us-a"], [("10.3.0.0/16", None), ("10.1.128.0/17", None)]),
]
TRUSTED = ["192.0.2.0/24", "10.2.0.53/32", "2001:db8:53::/48"]


def topology(**overrides: Any) -> Settings:
    """The four-cluster federation's settings, with top-level ``overrides`` merged in."""
    data: dict[str, Any] = {"clusters": CLUSTERS,
                            "locality": {"trusted_forwarders": TRUSTED}}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Settings.model_validate(data)


def located(data: Mapping[str, Iterable[Service] | None], **overrides: Any) -> Federation:
    """A compiled federation whose clients are located by the config's networks.

    Clusters missing from ``data`` have delivered no services (give ``None`` for a
    cluster that never delivered anything).
    """
    settings = topology(**overrides)
    data = {c.name: data.get(c.name, []) for c in settings.clusters}
    return federation(data, settings=settings, locator=locator_from(settings),
                      clock=lambda: NOW)


def web(cluster: str, *, ready: int = 1, unready: int = 0, terminating: int = 0,
        ip: str | None = None, ports: tuple[Port, ...] = (Port("http", 80),),
        **kw: Any) -> Service:
    """``shop/web`` (ClusterIP) in ``cluster``.

    It has ``ready`` ready endpoints, ``unready`` unready ones and ``terminating``
    serving-but-terminating ones.
    """
    eps = [Endpoint(f"10.200.0.{n}") for n in range(1, ready + 1)]
    eps += [Endpoint(f"10.201.0.{n}", ready=False, serving=False) for n in range(1, unready + 1)]
    eps += [Endpoint(f"10.202.0.{n}", ready=False, serving=True, terminating=True)
            for n in range(1, terminating + 1)]
    return Service("shop", "web", cluster_ips=(ip or CLUSTER_IP[cluster],), ports=ports,
                   endpoints=tuple(eps), **kw)


def webs(down: Iterable[str] = (), *, clusters: Iterable[str] = ALL,
         **ready: int) -> dict[str, list[Service]]:
    """``web`` in each of ``clusters``; those in ``down`` have no ready endpoint."""
    down = set(down)
    return {c: [web(c, ready=0 if c in down else ready.get(c, 1), unready=1)]
            for c in sorted(clusters)}


ZONE_PODS = {
    "east": [("e-a", "10.1.1.100", "eu-a"), ("e-b", "10.1.2.100", "eu-b")],
    "west": [("w-b", "10.2.2.100", "eu-b"), ("w-c", "10.2.3.100", "eu-c")],
    "south": [("s-d", "10.4.4.100", "eu-d")],
    "north": [("n-a", "10.3.1.100", "us-a")],
}
"""A headless service with one pod per zone: its answer tells the client's place."""


def zones_service(cluster: str) -> Service:
    return Service("data", "zones", ServiceType.HEADLESS, ports=(Port("tcp", 7),),
                   endpoints=tuple(Endpoint(ip, hostname=h, zone=z)
                                   for h, ip, z in ZONE_PODS[cluster]))


PLACE_ANSWER = {
    "east/eu-a": {"10.1.1.100"},
    "east/eu-b": {"10.1.2.100"},
    "east": {"10.1.1.100", "10.1.2.100"},
    "west/eu-b": {"10.2.2.100"},
    "west/eu-c": {"10.2.3.100"},
    "west": {"10.2.2.100", "10.2.3.100"},
    "south": {"10.4.4.100"},
    "north": {"10.3.1.100"},
    "unknown": {ip for pods in ZONE_PODS.values() for _, ip, _ in pods},
}
"""What ``zones`` answers a client at each place (the nearest tier only)."""


def everything() -> dict[str, list[Service]]:
    """``web`` and ``zones`` in every cluster, all healthy."""
    return {c: [web(c), zones_service(c)] for c in sorted(ALL)}


def addresses(fed: Federation, qname: str, qtype: str = "A", *, addr: str | None = None,
              full: bool = False, qid: int = 0,
              options: Sequence[dns.edns.Option] = ()) -> set[str]:
    """The addresses of one answer (as text), asked from ``addr``."""
    msg = query(fed.table, qname, qtype, full=full, qid=qid, options=options,
                addr=(addr, 5353) if addr is not None else None)
    assert msg.rcode() == 0, f"{qname} {qtype} from {addr}: rcode {msg.rcode()}"
    return {rd.to_text() for rrset in msg.answer for rd in rrset
            if rrset.rdtype in (1, 28)}


def clusters_answered(fed: Federation, qname: str = WEB, *, addr: str | None = None,
                      full: bool = False) -> frozenset[str]:
    """Which clusters' cluster IPs ``web`` (or ``qname``) answers the client at ``addr``."""
    return frozenset(CLUSTER_OF[a] for a in addresses(fed, qname, addr=addr, full=full))


def txt_lines(fed: Federation, qname: str = EXPLAIN, *, addr: str | None = None) -> list[str]:
    msg = query(fed.table, qname, "TXT", addr=(addr, 5353) if addr else None, clock=fed.clock)
    assert msg.rcode() == 0
    return [b"".join(rd.strings).decode() for rrset in msg.answer for rd in rrset]


def explain_line(lines: list[str], cluster: str) -> str:
    found = [line for line in lines if line.startswith(f"{cluster} ")]
    assert len(found) == 1, f"one explain line for {cluster}: {lines}"
    return found[0]


# --- residency -----------------------------------------------------------------------------------

EU_ONLY = {"services": [{"namespace": "shop", "name": "web", "regions": ["eu"]}]}

RESIDENCY = [
    # (client, clusters without ready endpoints, none_healthy, expected clusters or rcode)
    pytest.param(NORTH, (), None, EU, id="a client in us gets the eu clusters, not its own"),
    pytest.param(EAST_A, (), None, {"east"}, id="an eu client still gets its nearest tier"),
    pytest.param(OUTSIDE, (), None, EU, id="an unknown client gets every allowed cluster"),
    pytest.param(NORTH, ("east",), None, {"west", "south"},
                 id="failing over stays inside the region"),
    pytest.param(NORTH, EU, None, "NODATA",
                 id="all allowed clusters down: fail-closed, never the other region"),
    pytest.param(EAST_A, EU, "servfail", "SERVFAIL",
                 id="all allowed clusters down: servfail, never the other region"),
    pytest.param(NORTH, EU, "fail-open", EU,
                 id="all allowed clusters down: fail-open answers the allowed ones only"),
]


@pytest.mark.parametrize(("client", "down", "none_healthy", "expected"), RESIDENCY)
def test_residency_never_answers_an_address_outside_the_allowed_regions(
        client: str, down: tuple[str, ...], none_healthy: str | None,
        expected: frozenset[str] | str) -> None:
    policy = {"namespace": "shop", "name": "web", "regions": ["eu"]}
    if none_healthy:
        policy["none_healthy"] = none_healthy
    fed = located(webs(down), services=[policy])
    for full in (False, True):
        if expected == "NODATA":
            check(fed.table, Case(WEB, "A", authority=NEG), full=full, addr=(client, 1))
        elif expected == "SERVFAIL":
            check(fed.table, Case(WEB, "A", rcode="SERVFAIL", aa=False), full=full,
                  addr=(client, 1))
        else:
            assert clusters_answered(fed, addr=client, full=full) == expected


def test_residency_prefers_stale_data_inside_the_regions_to_fresh_data_outside() -> None:
    fed = located(webs(), **EU_ONLY)
    for cluster in EU:
        fed.registry.set_state(cluster, ClusterState.STALE, now=5.0)
    fed.sync()
    msg = query(fed.table, WEB, "A", addr=(NORTH, 1))
    assert {CLUSTER_OF[r.split()[-1]] for r in section(msg)} == EU
    assert {int(r.split()[1]) for r in section(msg)} == {30}  # stale TTL


def test_residency_applies_to_headless_addresses_srv_targets_and_endpoint_names() -> None:
    fed = located({c: [zones_service(c)] for c in ALL},
                  services=[{"namespace": "data", "regions": ["us"]}])
    assert addresses(fed, ZONES, addr=EAST_A) == {"10.3.1.100"}
    targets = {r.split()[-1] for r in section(query(fed.table, ZONES, "SRV", addr=(EAST_A, 1)))}
    assert targets == {f"n-a.north.{ZONES}"}
    check(fed.table, Case(f"n-a.north.{ZONES}", "A",
                          answer=(f"n-a.north.{ZONES} 5 IN A 10.3.1.100",)))
    check(fed.table, Case(f"e-a.east.{ZONES}", "A", rcode="NXDOMAIN", authority=NEG))


def test_residency_is_explained_for_each_excluded_cluster() -> None:
    lines = txt_lines(located(webs(), **EU_ONLY), addr=NORTH)
    line = explain_line(lines, "north")
    assert "not chosen: outside the allowed regions" in line
    assert "tier 1" in line  # north is the client's own cluster
    for cluster in EU:
        assert "not chosen: outside" not in explain_line(lines, cluster)


# --- Federation v1 names -------------------------------------------------------------------------

FED = f"web.shop.federation.svc.{ORIGIN}"
FED_EU = f"web.shop.federation.svc.eu.{ORIGIN}"
FED_US = f"web.shop.federation.svc.us.{ORIGIN}"
FED_EU_A = f"web.shop.federation.svc.eu-a.eu.{ORIGIN}"
FED_EU_D = f"web.shop.federation.svc.eu-d.eu.{ORIGIN}"


def _cname(owner: str, target: str) -> str:
    return f"{owner} 5 IN CNAME {target}"


def _a(owner: str, *clusters: str, ttl: int = 5) -> tuple[str, ...]:
    return tuple(f"{owner} {ttl} IN A {CLUSTER_IP[c]}" for c in clusters)


FEDERATION_V1 = [
    # (clusters down, client, question, expected answer section)
    pytest.param((), OUTSIDE, FED, _a(FED, *sorted(ALL)),
                 id="the global name answers every cluster"),
    pytest.param((), NORTH, FED, _a(FED, "north"), id="the global name follows the client's tiers"),
    pytest.param((), NORTH, FED_EU, _a(FED_EU, "east", "west", "south"),
                 id="a region name answers from that region only, wherever the client is"),
    pytest.param((), EAST_A, FED_EU, _a(FED_EU, "east"),
                 id="a region name still prefers the client's nearest tier within the region"),
    pytest.param((), NORTH, FED_EU_A, _a(FED_EU_A, "east"),
                 id="a zone name answers the clusters in that zone"),
    pytest.param((), NORTH, f"web.shop.federation.svc.eu-b.eu.{ORIGIN}",
                 _a(f"web.shop.federation.svc.eu-b.eu.{ORIGIN}", "east", "west"),
                 id="a zone shared by two clusters answers both"),
    pytest.param(("south",), NORTH, FED_EU_D,
                 (_cname(FED_EU_D, FED_EU), *_a(FED_EU, "east", "west")),
                 id="a zone with nothing healthy is a CNAME to its region"),
    pytest.param(EU, NORTH, FED_EU_D,
                 (_cname(FED_EU_D, FED_EU), _cname(FED_EU, FED), *_a(FED, "north")),
                 id="a region with nothing healthy is a CNAME to the global name"),
    pytest.param(("north",), EAST_A, FED_US,
                 (_cname(FED_US, FED), *_a(FED, "east")),
                 id="the chain ends at the global name, which answers per client"),
]


@pytest.mark.parametrize(("down", "client", "qname", "answer"), FEDERATION_V1)
def test_federation_v1_names_answer_from_their_scope_and_spill_to_the_wider_name(
        down: tuple[str, ...], client: str, qname: str, answer: tuple[str, ...]) -> None:
    fed = located(webs(down), names={"federation_v1": True})
    for full in (False, True):
        check(fed.table, Case(qname, "A", answer=answer), full=full, addr=(client, 1))


def test_federation_v1_names_are_off_by_default() -> None:
    fed = located(webs())
    for name in (FED, FED_EU, FED_EU_A):
        check(fed.table, Case(name, "A", rcode="NXDOMAIN", authority=NEG))


def test_a_spilling_federation_v1_name_is_a_cname_for_both_address_types() -> None:
    fed = located(webs(["south"]), names={"federation_v1": True})
    for qtype in ("A", "AAAA"):
        msg = query(fed.table, FED_EU_D, qtype, addr=(NORTH, 1))
        assert _cname(FED_EU_D, FED_EU) in section(msg), qtype


def test_a_healthy_federation_v1_name_is_never_a_cname_not_even_for_a_missing_family() -> None:
    # RFC 1034 §3.6.2: a name with a CNAME has no other data. The zone has IPv4 only;
    # a CNAME for AAAA beside its A records would let a resolver that cached the CNAME
    # send A queries on to the region as well.
    fed = located(webs(), names={"federation_v1": True})
    for full in (False, True):
        check(fed.table, Case(FED_EU_A, "AAAA", authority=NEG), full=full, addr=(NORTH, 1))
        check(fed.table, Case(FED_EU_A, "A", answer=_a(FED_EU_A, "east")), full=full,
              addr=(NORTH, 1))


@pytest.mark.parametrize("qtype", ["TXT", "SRV"])
def test_a_spilling_federation_v1_name_is_a_cname_for_other_types_too(qtype: str) -> None:
    fed = located(webs(["south"]), names={"federation_v1": True})
    msg = query(fed.table, FED_EU_D, qtype, addr=(NORTH, 1))
    assert _cname(FED_EU_D, FED_EU) in section(msg)


def test_a_zone_name_with_only_stale_data_spills_to_fresh_data_in_the_region() -> None:
    fed = located(webs(), names={"federation_v1": True})
    fed.registry.set_state("south", ClusterState.STALE, now=5.0)
    fed.sync()
    check(fed.table, Case(FED_EU_D, "A", answer=(_cname(FED_EU_D, FED_EU),
                                                 *_a(FED_EU, "east", "west"))),
          addr=(NORTH, 1))


def test_a_cname_chain_ending_in_fail_closed_nodata_carries_the_soa() -> None:
    fed = located(webs(ALL), names={"federation_v1": True})
    check(fed.table, Case(FED_EU_D, "A", answer=(_cname(FED_EU_D, FED_EU), _cname(FED_EU, FED)),
                          authority=NEG), addr=(NORTH, 1))


def test_a_cname_chain_ending_in_servfail_is_servfail() -> None:
    fed = located(webs(ALL), names={"federation_v1": True},
                  selection={"none_healthy": "servfail"})
    check(fed.table, Case(FED_EU_D, "A", rcode="SERVFAIL", aa=False), addr=(NORTH, 1))


# --- cluster-pinned names ------------------------------------------------------------------------

PINNED = [
    # (cluster_pinned, clusters down, question, expected)
    pytest.param(True, (), "east", Case(f"east.{WEB}", "A", answer=_a(f"east.{WEB}", "east")),
                 id="on: east.<svc> answers east only, even to a client in north"),
    pytest.param(True, (), "north",
                 Case(f"north.{WEB}", "A", answer=_a(f"north.{WEB}", "north")),
                 id="on: north.<svc> answers north"),
    pytest.param(True, ("east",), "east", Case(f"east.{WEB}", "A", authority=NEG),
                 id="on: a pinned cluster with nothing healthy is fail-closed, no failover"),
    pytest.param(True, (), "nowhere",
                 Case(f"nowhere.{WEB}", "A", rcode="NXDOMAIN", authority=NEG),
                 id="on: an unknown cluster id does not exist"),
    pytest.param(False, (), "east",
                 Case(f"east.{WEB}", "A", rcode="NXDOMAIN", authority=NEG),
                 id="off: the pinned name of a ClusterIP service does not exist"),
]


@pytest.mark.parametrize(("pinned", "down", "cluster", "case"), PINNED)
def test_cluster_pinned_names_answer_that_cluster_only_when_switched_on(
        pinned: bool, down: tuple[str, ...], cluster: str, case: Case) -> None:
    fed = located(webs(down), names={"cluster_pinned": pinned})
    for full in (False, True):
        check(fed.table, case, full=full, addr=(NORTH, 1))


def test_cluster_pinned_names_of_a_headless_service() -> None:
    data = {c: [zones_service(c)] for c in ALL}
    off = located(data)
    check(off.table, Case(f"east.{ZONES}", "A", authority=NEG))  # an empty non-terminal
    on = located(data, names={"cluster_pinned": True})
    assert addresses(on, f"east.{ZONES}", addr=NORTH) == {"10.1.1.100", "10.1.2.100"}
    # Within the pinned cluster the client's tiers still apply.
    assert addresses(on, f"east.{ZONES}", addr=EAST_B) == {"10.1.2.100"}


# --- the explain record --------------------------------------------------------------------------


def test_the_explain_record_lists_each_cluster_with_freshness_verdict_and_tier() -> None:
    data = webs(["south"])
    fed = located(data)
    fed.registry.set_state("north", ClusterState.STALE, now=5.0)
    fed.sync()
    lines = txt_lines(fed, addr=EAST_B)
    assert lines[0].startswith("client cluster=east, region=eu, zone=eu-b; answer from tier 0")
    east, west, south, north = (explain_line(lines, c) for c in ("east", "west", "south", "north"))
    assert "east region=eu fresh" in east
    assert "chosen tier 0" in east
    assert "level ready" in east
    assert "not chosen: farther (same cluster or zone) tier 1" in west  # shares zone eu-b
    assert "not chosen: not healthy tier 2" in south
    assert "north region=us stale" in north
    assert "not chosen: stale: a better level exists tier 3" in north
    assert "synced 999s ago" in east  # the table's clock minus the last sync


EXPLAIN_TIERS = [
    pytest.param(EAST_A, {"east": 0, "west": 2, "south": 2, "north": 3}, id="east/eu-a"),
    pytest.param(EAST, {"east": 1, "west": 2, "south": 2, "north": 3}, id="east, zone unknown"),
    pytest.param(WEST_B, {"east": 1, "west": 0, "south": 2, "north": 3}, id="west/eu-b"),
    pytest.param(NORTH, {"east": 3, "west": 3, "south": 3, "north": 1}, id="north"),
    pytest.param(OUTSIDE, {"east": 0, "west": 0, "south": 0, "north": 0},
                 id="an unknown client has every candidate in tier 0"),
]


@pytest.mark.parametrize(("client", "tiers"), EXPLAIN_TIERS)
def test_the_explain_record_gives_each_clusters_tier_for_the_asking_client(
        client: str, tiers: dict[str, int]) -> None:
    lines = txt_lines(located(webs()), addr=client)
    nearest = min(tiers.values())
    for cluster, t in tiers.items():
        line = explain_line(lines, cluster)
        assert f" tier {t} " in line, line
        assert ("chosen tier" in line and "not chosen" not in line) is (t == nearest), line


def test_the_explain_record_names_drained_and_last_resort_clusters() -> None:
    data = {"east": [web("east", ready=0, terminating=1)], "west": [web("west")],
            "south": [web("south")], "north": [web("north")]}
    fed = located(data, services=[{"namespace": "shop", "name": "web",
                                   "weights": {"east": 1, "west": 1, "north": 1}}])
    lines = txt_lines(fed, addr=EAST_A)
    assert "not chosen: last resort: a better level exists tier 0" in explain_line(lines, "east")
    assert "not chosen: drained (weight 0) tier 2" in explain_line(lines, "south")
    assert "chosen tier 2" in explain_line(lines, "west")


def test_the_explain_record_is_off_when_names_explain_is_off() -> None:
    fed = located(webs(), names={"explain": False})
    check(fed.table, Case(EXPLAIN, "TXT", rcode="NXDOMAIN", authority=NEG))


def test_the_explain_record_answers_txt_only() -> None:
    check(located(webs()).table, Case(EXPLAIN, "A", authority=NEG))


# --- fast path == full path ----------------------------------------------------------------------

LOCATED_QUERIES = [
    (WEB, "A", EAST_A), (WEB, "A", NORTH), (WEB, "A", OUTSIDE), (WEB, "AAAA", WEST_C),
    (WEB, "SRV", SOUTH), (ZONES, "A", EAST_B), (ZONES, "SRV", WEST), (ZONES, "A", "fd00:1:1::9"),
    (f"nope.{ORIGIN}", "A", EAST_A), (EXPLAIN, "TXT", NORTH), (f"e-a.east.{ZONES}", "A", NORTH),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("edns", [False, True], ids=["plain", "edns"])
def test_the_fast_path_and_the_full_path_give_the_same_bytes_for_located_queries(
        tcp: bool, edns: bool) -> None:
    fed = located(everything())
    fed.registry.set_state("south", ClusterState.STALE, now=5.0)  # stale answers (EDE) too
    fed.sync()
    # A fixed clock: the explain record shows ages, and the two paths run a moment apart.
    handler = make_handler(fed.table, clock=lambda: NOW)
    rng = random.Random(1645)
    for qname, qtype, client in LOCATED_QUERIES:
        for qid in (0, 1, 2, 3, rng.randrange(65536), rng.randrange(65536)):
            q = dns.message.make_query(qname, qtype, use_edns=0 if edns else None)
            q.id = qid
            q.flags &= ~dns.flags.RD
            data = q.to_wire()
            fast = handle(handler, data, tcp, (client, 53))
            full = handler.handle_full(data, tcp=tcp, addr=(client, 53))
            assert fast is not None
            assert fast == full, f"{qname} {qtype} from {client} qid {qid}"
