"""Client locality: where a query comes from, as case tables.

In order: EDNS Client Subnet from trusted forwarders only (echoed with the
scope that decided the answer; malformed ECS is FORMERR), then the source
address against the clusters' networks (longest prefix wins, a zone-level
network beats a cluster-level one), then ``locality.local_cluster``; a client
nothing places gets the federation-wide answer. The place shows in the
answer of ``zones``, a headless service with one pod per zone (see
``test_policy``), asked through the real handler on both paths.
"""

from __future__ import annotations

import ipaddress

import dns.edns
import dns.rcode
import pytest

from tests.unit.dnscase import Case, check, query, section
from tests.unit.test_policy import (
    CLUSTERS,
    EAST,
    EAST_A,
    EAST_B,
    FORWARDER,
    NORTH,
    OUTSIDE,
    PLACE_ANSWER,
    SOUTH,
    WEB,
    WEST,
    WEST_B,
    WEST_C,
    WEST_FORWARDER,
    ZONES,
    addresses,
    everything,
    explain_line,
    located,
    txt_lines,
)

# --- the source address --------------------------------------------------------------------------

SOURCES = [
    pytest.param(EAST_A, "east/eu-a", id="a zone-level network places cluster and zone"),
    pytest.param(EAST_B, "east/eu-b", id="another zone of the same cluster"),
    pytest.param(EAST, "east", id="a cluster-level network places the cluster, zone unknown"),
    pytest.param("10.1.4.7", "east/eu-b",
                 id="the same network listed cluster-level then zone-level: the zone wins"),
    pytest.param("10.1.200.7", "north",
                 id="longest prefix wins: north's /17 inside east's /16"),
    pytest.param("10.1.127.255", "east", id="just below north's /17 it is east again"),
    pytest.param(WEST_B, "west/eu-b", id="west, zone eu-b"),
    pytest.param(WEST_C, "west/eu-c", id="west, zone eu-c"),
    pytest.param(WEST, "west", id="west, zone unknown"),
    pytest.param(SOUTH, "south", id="south"),
    pytest.param(NORTH, "north", id="north"),
    pytest.param("fd00:1:1::7", "east/eu-a", id="IPv6 zone-level network"),
    pytest.param("fd00:1:9::7", "east", id="IPv6 cluster-level network"),
    pytest.param("fd00:2::7", "west", id="IPv6 network of another cluster"),
    pytest.param(OUTSIDE, "unknown", id="no network places it: the federation-wide answer"),
    pytest.param("2001:db8:1::7", "unknown", id="an unplaced IPv6 client"),
    pytest.param(FORWARDER, "unknown",
                 id="a trusted forwarder without ECS is located by its own address"),
    pytest.param(WEST_FORWARDER, "west", id="a placed forwarder without ECS: its place"),
]


@pytest.mark.parametrize("full", [False, True], ids=["fast-path", "full-path"])
@pytest.mark.parametrize(("client", "place"), SOURCES)
def test_the_source_address_places_the_client(client: str, place: str, full: bool) -> None:
    fed = located(everything())
    assert addresses(fed, ZONES, addr=client, full=full) == PLACE_ANSWER[place]


LOCAL_CLUSTER = [
    pytest.param(OUTSIDE, "west", id="an unplaced client is taken to be in the local cluster"),
    pytest.param("2001:db8:1::7", "west", id="so is an unplaced IPv6 client"),
    pytest.param(EAST_A, "east/eu-a", id="a network still places its clients first"),
    pytest.param(NORTH, "north", id="in any cluster"),
]


@pytest.mark.parametrize(("client", "place"), LOCAL_CLUSTER)
def test_locality_local_cluster_is_the_default_place(client: str, place: str) -> None:
    fed = located(everything(), locality={"local_cluster": "west"})
    for full in (False, True):
        assert addresses(fed, ZONES, addr=client, full=full) == PLACE_ANSWER[place]


def test_without_networks_or_local_cluster_every_client_gets_the_federation_wide_answer() -> None:
    fed = located(everything(), clusters=[{**c, "networks": []} for c in CLUSTERS])
    assert not fed.table.locator.active
    for client in (EAST_A, NORTH, OUTSIDE, None):
        for full in (False, True):
            assert addresses(fed, ZONES, addr=client, full=full) == PLACE_ANSWER["unknown"]


def test_an_unknown_client_has_every_candidate_in_tier_zero() -> None:
    lines = txt_lines(located(everything()), addr=OUTSIDE)
    assert lines[0].startswith("client unknown; answer from tier 0")
    for cluster in ("east", "west", "south", "north"):
        line = explain_line(lines, cluster)
        assert "chosen tier 0" in line and "not chosen" not in line, line


# --- EDNS Client Subnet --------------------------------------------------------------------------

ECS = [
    # (ECS subnet, place it gives, scope prefix length echoed)
    pytest.param("10.1.1.0/24", "east/eu-a", 24, id="a zone-level network: its /24"),
    pytest.param("10.1.1.7/32", "east/eu-a", 24, id="a host inside it: still the rule's /24"),
    pytest.param("10.1.2.0/24", "east/eu-b", 24, id="another zone"),
    pytest.param("10.1.4.0/24", "east/eu-b", 24, id="equal networks: the zone-level one"),
    # Placed by east's /16, but eu-a's /24 lies inside it: the scope is the widest block
    # around the subnet that holds no differently placed network (10.1.8.0/21).
    pytest.param("10.1.9.0/24", "east", 21,
                 id="a cluster-level network with zone networks nearby: a narrower scope"),
    pytest.param("10.1.200.0/24", "north", 17, id="longest prefix wins: north's /17"),
    pytest.param("10.2.3.0/24", "west/eu-c", 24, id="west, zone eu-c"),
    pytest.param("10.2.9.0/24", "west", 21, id="west, zone unknown"),
    # The subnet spans places (eu-a's /24 is inside it): unknown, and the scope says
    # how long a prefix would be needed.
    pytest.param("10.1.0.0/16", "unknown", 24, id="a subnet wider than the scope: unknown"),
    pytest.param("198.51.100.0/24", "unknown", 1, id="a subnet no network places: unknown"),
    pytest.param("fd00:1:1::/56", "east/eu-a", 48, id="IPv6 zone-level network"),
    pytest.param("fd00:1:9::/56", "east", 45, id="IPv6 cluster-level network"),
    pytest.param("2001:db8:5::/48", "unknown", 1, id="IPv6 subnet no network places"),
]


def _ecs(subnet: str) -> dns.edns.ECSOption:
    net = ipaddress.ip_network(subnet)
    return dns.edns.ECSOption(str(net.network_address), net.prefixlen)


def _echoed(msg: dns.message.Message) -> list[tuple[str, int, int]]:
    return [(o.address, o.srclen, o.scopelen) for o in msg.options
            if isinstance(o, dns.edns.ECSOption)]


@pytest.mark.parametrize("forwarder", [FORWARDER, WEST_FORWARDER, "2001:db8:53::1"])
@pytest.mark.parametrize(("subnet", "place", "scope"), ECS)
def test_ecs_from_a_trusted_forwarder_places_the_client_and_is_echoed_with_its_scope(
        subnet: str, place: str, scope: int, forwarder: str) -> None:
    fed = located(everything())
    msg = query(fed.table, ZONES, "A", addr=(forwarder, 53), options=[_ecs(subnet)])
    assert msg.rcode() == 0
    assert {r.split()[-1] for r in section(msg)} == PLACE_ANSWER[place]
    net = ipaddress.ip_network(subnet)
    assert _echoed(msg) == [(str(net.network_address), net.prefixlen, scope)]


def test_the_echoed_scope_never_covers_a_differently_placed_network() -> None:
    # A resolver caches the answer for the whole scope (RFC 7871 §7.3.1), so every
    # network inside the echoed scope must be placed like the subnet itself.
    locator = located(everything()).table.locator
    for subnet in ("10.1.9.0/24", "10.1.1.0/24", "10.1.200.0/24", "10.2.9.0/24",
                   "10.1.3.0/24", "10.1.127.0/24", "198.51.100.0/24", "fd00:1:9::/56"):
        net = ipaddress.ip_network(subnet)
        cls, scope = locator.class_of_subnet(net)
        assert scope <= net.prefixlen, subnet
        block = ipaddress.ip_network((net.network_address, scope), strict=False)
        for rule in locator.rules:
            if rule.network.version == block.version and \
                    rule.network.subnet_of(block):  # type: ignore[arg-type]
                assert locator.locate(rule.network.network_address)[0] == \
                    locator.place(cls), f"{subnet}: /{scope} covers {rule.network}"


UNTRUSTED = [
    pytest.param(NORTH, "north", id="a placed client cannot choose another place"),
    pytest.param(OUTSIDE, "unknown", id="an unplaced client stays unknown"),
    pytest.param("192.0.3.53", "unknown", id="just outside the trusted range"),
]


@pytest.mark.parametrize("full", [False, True], ids=["fast-path", "full-path"])
@pytest.mark.parametrize(("client", "place"), UNTRUSTED)
def test_ecs_from_an_untrusted_source_is_ignored_and_not_echoed(
        client: str, place: str, full: bool) -> None:
    fed = located(everything())
    msg = query(fed.table, ZONES, "A", addr=(client, 53), options=[_ecs("10.1.1.0/24")],
                full=full)
    assert {r.split()[-1] for r in section(msg)} == PLACE_ANSWER[place]
    assert _echoed(msg) == []


def test_ecs_is_ignored_without_any_trusted_forwarder() -> None:
    fed = located(everything(), locality={"trusted_forwarders": []})
    msg = query(fed.table, ZONES, "A", addr=(FORWARDER, 53), options=[_ecs("10.1.1.0/24")])
    assert {r.split()[-1] for r in section(msg)} == PLACE_ANSWER["unknown"]
    assert _echoed(msg) == []


def test_an_ecs_subnet_no_network_places_gets_the_local_cluster() -> None:
    fed = located(everything(), locality={"local_cluster": "west"})
    msg = query(fed.table, ZONES, "A", addr=(FORWARDER, 53), options=[_ecs("198.51.100.0/24")])
    assert {r.split()[-1] for r in section(msg)} == PLACE_ANSWER["west"]


def test_ecs_places_the_client_for_clusterip_services_too() -> None:
    fed = located(everything())
    msg = query(fed.table, WEB, "A", addr=(FORWARDER, 53), options=[_ecs("10.3.7.0/24")])
    assert section(msg) == [f"{WEB} 5 IN A 10.96.3.10"]


def _raw(data: bytes) -> dns.edns.GenericOption:
    return dns.edns.GenericOption(dns.edns.OptionType.ECS, data)


MALFORMED = [
    pytest.param([_raw(b"\x00\x01\x18")], id="shorter than family, prefixes"),
    pytest.param([_raw(b"\x00\x03\x18\x00\x0a\x01\x01")], id="unknown family"),
    pytest.param([_raw(b"\x00\x01\x21\x00\x0a\x01\x01\x01\x01")], id="IPv4 source prefix 33"),
    pytest.param([_raw(b"\x00\x02\x81\x00" + bytes(17))], id="IPv6 source prefix 129"),
    pytest.param([_raw(b"\x00\x01\x18\x10\x0a\x01\x01")], id="scope prefix not 0 in a query"),
    pytest.param([_raw(b"\x00\x01\x18\x00\x0a\x01\x01\x00")], id="address longer than prefix"),
    pytest.param([_raw(b"\x00\x01\x18\x00\x0a\x01")], id="address shorter than prefix"),
    pytest.param([_raw(b"\x00\x01\x17\x00\x0a\x01\x01")], id="bits set beyond the prefix"),
    pytest.param([_ecs("10.1.1.0/24"), _ecs("10.2.3.0/24")], id="two ECS options"),
]


@pytest.mark.parametrize("options", MALFORMED)
def test_malformed_ecs_from_a_trusted_forwarder_is_formerr(
        options: list[dns.edns.Option]) -> None:
    fed = located(everything())
    for full in (False, True):
        msg = query(fed.table, ZONES, "A", addr=(FORWARDER, 53), options=options, full=full)
        assert dns.rcode.to_text(msg.rcode()) == "FORMERR"
        assert section(msg) == []


@pytest.mark.parametrize("options", MALFORMED[:3])
def test_malformed_ecs_from_an_untrusted_source_is_ignored_like_any_ecs(
        options: list[dns.edns.Option]) -> None:
    fed = located(everything())
    msg = query(fed.table, ZONES, "A", addr=(NORTH, 53), options=options)
    assert msg.rcode() == 0
    assert {r.split()[-1] for r in section(msg)} == PLACE_ANSWER["north"]


def test_ecs_source_prefix_zero_places_nobody_and_is_echoed() -> None:
    # RFC 7871 §7.1.2: /0 means the client's address must not be used. The subnet
    # spans every network, so the client is unknown (the federation-wide answer).
    fed = located(everything())
    msg = query(fed.table, ZONES, "A", addr=(FORWARDER, 53),
                options=[_raw(b"\x00\x01\x00\x00")])
    assert msg.rcode() == 0
    assert {r.split()[-1] for r in section(msg)} == PLACE_ANSWER["unknown"]
    assert [(address, src) for address, src, _ in _echoed(msg)] == [("0.0.0.0", 0)]


def test_located_answers_are_memoized_per_place_not_shared() -> None:
    # The first client's answer must not be served to a client elsewhere (one memo per
    # place class), whichever path asks first.
    fed = located(everything())
    order = [EAST_A, NORTH, EAST_A, OUTSIDE, NORTH, EAST_B]
    places = ["east/eu-a", "north", "east/eu-a", "unknown", "north", "east/eu-b"]
    for i, (client, place) in enumerate(zip(order, places, strict=True)):
        assert addresses(fed, ZONES, addr=client, full=bool(i % 2)) == PLACE_ANSWER[place]
    check(fed.table, Case(f"e-a.east.{ZONES}", "A",
                          answer=(f"e-a.east.{ZONES} 5 IN A 10.1.1.100",)), addr=(NORTH, 1))
