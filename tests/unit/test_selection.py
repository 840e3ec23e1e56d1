"""Tiers, spill-over, weights, rotation and SRV shaping, as case tables.

Tiers by distance from the client: same zone of the same cluster (0), same
cluster or same zone (1), same region (2), the rest (3). The answer holds the
nearest tier with healthy candidates and spills to the next when it has none;
ClusterIP and LoadBalancer services rank whole clusters by their zones,
headless services rank each endpoint by its own zone. Within the tier,
records rotate by query ID so that the first record follows the weights
(default: ready endpoints per cluster; config overrides per service and per
namespace; weight 0 drains). SRV priority is the tier, SRV weight the weight.
The federation is the one of ``test_policy``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable

import dns.message
import pytest

from feddns.model.services import Endpoint, Port, Service, ServiceType
from feddns.policy.health import Level
from feddns.policy.locality import Place
from feddns.policy.selection import Candidate, choose, rotations, srv_targets, tier
from feddns.table.table import AnswerTable
from tests.unit.dnscase import Case, check, federation, query, section, settings_for
from tests.unit.test_policy import (
    ALL,
    CLUSTER_IP,
    CLUSTER_OF,
    EAST,
    EAST_A,
    EAST_B,
    NEG,
    NORTH,
    OUTSIDE,
    SOUTH,
    WEB,
    WEST_B,
    WEST_C,
    addresses,
    clusters_answered,
    located,
    web,
    webs,
)

# --- tiers and spill-over: ClusterIP services rank clusters --------------------------------------

CLUSTER_TIERS = [
    # (client, clusters without ready endpoints, clusters answered)
    pytest.param(EAST_A, (), {"east"}, id="tier 0: the client's own cluster, in its zone"),
    pytest.param(EAST, (), {"east"}, id="tier 1: the client's own cluster, zone unknown"),
    pytest.param(WEST_C, (), {"west"}, id="tier 0 for a west client"),
    pytest.param(EAST_B, ("east",), {"west"},
                 id="spill to tier 1: another cluster in the same zone (eu-b)"),
    pytest.param(EAST_A, ("east",), {"west", "south"},
                 id="spill to tier 2: the rest of the region (no other cluster in eu-a)"),
    pytest.param(EAST, ("east",), {"west", "south"},
                 id="zone unknown: no same-zone tier, straight to the region"),
    pytest.param(WEST_C, ("west",), {"east", "south"}, id="spill to the region from west"),
    pytest.param(EAST_B, ("east", "west"), {"south"}, id="tier 1 empty too: tier 2"),
    pytest.param(EAST_A, ("east", "west", "south"), {"north"},
                 id="spill to tier 3: another region"),
    pytest.param(NORTH, (), {"north"}, id="north's own cluster"),
    pytest.param(NORTH, ("north",), {"east", "west", "south"},
                 id="north down: every other cluster is tier 3"),
    pytest.param(SOUTH, ("south",), {"east", "west"}, id="south down: its region"),
    pytest.param(OUTSIDE, (), ALL, id="an unknown client: every healthy cluster"),
    pytest.param(OUTSIDE, ("east", "north"), {"west", "south"},
                 id="an unknown client: every healthy cluster, none unhealthy"),
]


@pytest.mark.parametrize("full", [False, True], ids=["fast-path", "full-path"])
@pytest.mark.parametrize(("client", "down", "expected"), CLUSTER_TIERS)
def test_clusterip_answers_hold_the_nearest_tier_with_healthy_clusters(
        client: str, down: tuple[str, ...], expected: Iterable[str], full: bool) -> None:
    fed = located(webs(down))
    assert clusters_answered(fed, addr=client, full=full) == frozenset(expected)


def test_loadbalancer_services_rank_by_cluster_topology_too() -> None:
    data = {c: [web(c, type=ServiceType.LOAD_BALANCER,
                    load_balancer_ips=(f"203.0.113.{i}",))]
            for i, c in enumerate(sorted(ALL), start=1)}
    fed = located(data)
    lb = {c: f"203.0.113.{i}" for i, c in enumerate(sorted(ALL), start=1)}
    assert addresses(fed, WEB, addr=EAST_A) == {lb["east"]}
    assert addresses(fed, WEB, addr=NORTH) == {lb["north"]}
    assert addresses(fed, WEB, addr=OUTSIDE) == set(lb.values())


def test_a_dual_stack_clusterip_service_ranks_each_family_alike() -> None:
    data = {c: [web(c)] for c in ALL}
    data["east"] = [Service("shop", "web", cluster_ips=("10.96.1.10", "fd96::1"),
                            endpoints=(Endpoint("10.200.0.1"), Endpoint("fd00:200::1")),
                            ports=(Port("http", 80),))]
    data["west"] = [Service("shop", "web", cluster_ips=("10.96.2.10", "fd96::2"),
                            endpoints=(Endpoint("10.200.0.2"), Endpoint("fd00:200::2")),
                            ports=(Port("http", 80),))]
    fed = located(data)
    assert addresses(fed, WEB, "AAAA", addr=EAST_A) == {"fd96::1"}
    assert addresses(fed, WEB, "AAAA", addr=WEST_C) == {"fd96::2"}
    # North has no IPv6 address: its clients get the nearest tier that has one.
    assert addresses(fed, WEB, "AAAA", addr=NORTH) == {"fd96::1", "fd96::2"}
    assert addresses(fed, WEB, "A", addr=NORTH) == {"10.96.3.10"}


# --- per-family health: an address family answers only with a ready endpoint of its own ---------


def _dual(cluster: str, *, v4: bool, v6: bool, terminating6: bool = False) -> Service:
    """A dual-stack ``shop/web`` in ``cluster``; which families have a ready endpoint."""
    n = sorted(ALL).index(cluster) + 1
    eps = [Endpoint(f"10.200.0.{n}", ready=v4, serving=v4),
           Endpoint(f"fd00:200::{n}", ready=v6, serving=v6 or terminating6,
                    terminating=terminating6)]
    return Service("shop", "web", cluster_ips=(CLUSTER_IP[cluster], f"fd96::{n}"),
                   endpoints=tuple(eps), ports=(Port("http", 80),))


FAMILY_CASES = [
    # (east's IPv4 ready, east's IPv6 ready, A answered from, AAAA answered from)
    pytest.param(True, True, {"east"}, {"east"}, id="both families ready: east for both"),
    pytest.param(True, False, {"east"}, {"west", "south"},
                 id="no ready IPv6 endpoint: east's IPv6 address is no candidate"),
    pytest.param(False, True, {"west", "south"}, {"east"},
                 id="no ready IPv4 endpoint: east's IPv4 address is no candidate"),
]


@pytest.mark.parametrize("full", [False, True], ids=["fast-path", "full-path"])
@pytest.mark.parametrize(("v4", "v6", "a_from", "aaaa_from"), FAMILY_CASES)
def test_each_family_of_a_dual_stack_service_needs_a_ready_endpoint_of_its_own(
        v4: bool, v6: bool, a_from: set[str], aaaa_from: set[str], full: bool) -> None:
    data = {c: [_dual(c, v4=True, v6=True)] for c in ("west", "south", "north")}
    data["east"] = [_dual("east", v4=v4, v6=v6)]
    fed = located(data)
    n = {c: sorted(ALL).index(c) + 1 for c in ALL}
    v6_of = {f"fd96::{i}": c for c, i in n.items()}
    assert {CLUSTER_OF[a] for a in addresses(fed, WEB, "A", addr=EAST_A, full=full)} == a_from
    assert {v6_of[a] for a in addresses(fed, WEB, "AAAA", addr=EAST_A, full=full)} == aaaa_from


def test_a_family_with_only_terminating_endpoints_is_a_last_resort_for_that_family() -> None:
    data = {c: [_dual(c, v4=True, v6=False)] for c in ALL}
    data["east"] = [_dual("east", v4=True, v6=False, terminating6=True)]
    fed = located(data)
    # Nobody has a ready IPv6 endpoint: east's serving-terminating one is the last resort.
    assert addresses(fed, WEB, "AAAA", addr=NORTH) == {"fd96::1"}
    assert addresses(fed, WEB, "A", addr=NORTH) == {CLUSTER_IP["north"]}


def test_a_family_nobody_can_answer_is_nodata_while_the_other_family_answers() -> None:
    # No ready IPv6 endpoint anywhere, IPv4 fine: AAAA is NODATA even with the servfail
    # choice (the service is healthy; a SERVFAIL for the AAAA half of getaddrinfo fails
    # musl's whole lookup). With nothing ready at all, the choice applies.
    data = {c: [_dual(c, v4=True, v6=False)] for c in ALL}
    fed = located(data, selection={"none_healthy": "servfail"})
    for full in (False, True):
        check(fed.table, Case(WEB, "AAAA", authority=NEG), addr=(EAST_A, 1), full=full)
        check(fed.table, Case(WEB, "A", answer=(f"{WEB} 5 IN A {CLUSTER_IP['east']}",)),
              addr=(EAST_A, 1), full=full)
    down = located({c: [_dual(c, v4=False, v6=False)] for c in ALL},
                   selection={"none_healthy": "servfail"})
    for qtype in ("A", "AAAA"):
        check(down.table, Case(WEB, qtype, rcode="SERVFAIL", aa=False), addr=(EAST_A, 1))


def test_headless_endpoints_answer_each_family_by_that_familys_readiness() -> None:
    # One pod, dual-stack, whose IPv6 endpoint is not ready (EndpointSlices are per
    # family): its per-endpoint name and the service name answer A only.
    svc = Service("data", "db", ServiceType.HEADLESS, ports=(Port("pg", 5432),), endpoints=(
        Endpoint("10.1.1.100", hostname="db-0", zone="eu-a"),
        Endpoint("fd00:1:1::100", hostname="db-0", zone="eu-a", ready=False, serving=False),
        Endpoint("10.1.1.101", hostname="db-1", zone="eu-a", ready=False, serving=False),
        Endpoint("fd00:1:1::101", hostname="db-1", zone="eu-a")))
    fed = located({"east": [svc]})
    assert addresses(fed, DB, "A", addr=EAST_A) == {"10.1.1.100"}
    assert addresses(fed, DB, "AAAA", addr=EAST_A) == {"fd00:1:1::101"}
    check(fed.table, Case(f"db-0.east.{DB}", "AAAA", authority=NEG), addr=(EAST_A, 1))
    check(fed.table, Case(f"db-1.east.{DB}", "A", authority=NEG), addr=(EAST_A, 1))
    check(fed.table, Case(f"db-1.east.{DB}", "AAAA",
                          answer=(f"db-1.east.{DB} 5 IN AAAA fd00:1:1::101",)), addr=(EAST_A, 1))


# --- tiers and spill-over: headless services rank each endpoint by its own zone ------------------

PODS = {
    "east": [("e-a", "10.1.1.100", "eu-a"), ("e-b", "10.1.2.100", "eu-b"),
             ("e-x", "10.1.0.100", None)],  # an endpoint without a zone
    "west": [("w-b", "10.2.2.100", "eu-b"), ("w-c", "10.2.3.100", "eu-c")],
    "south": [("s-d", "10.4.4.100", "eu-d")],
    "north": [("n-a", "10.3.1.100", "us-a")],
}
IP = {h: ip for pods in PODS.values() for h, ip, _ in pods}
DB = "db.data.svc.clusterset.local."


def db(cluster: str, down: Iterable[str] = ()) -> Service:
    down = set(down)
    return Service("data", "db", ServiceType.HEADLESS, ports=(Port("pg", 5432),),
                   endpoints=tuple(Endpoint(ip, hostname=h, zone=z, ready=h not in down,
                                            serving=h not in down)
                                   for h, ip, z in PODS[cluster]))


def dbs(down: Iterable[str] = ()) -> dict[str, list[Service]]:
    return {c: [db(c, down)] for c in ALL}


ENDPOINT_TIERS = [
    # (client, endpoints not ready, endpoints answered)
    pytest.param(EAST_A, (), {"e-a"}, id="tier 0: the endpoint in the client's zone"),
    pytest.param(EAST_B, (), {"e-b"}, id="tier 0 in the other zone"),
    pytest.param(EAST, (), {"e-a", "e-b", "e-x"},
                 id="zone unknown: every endpoint of the cluster is tier 1"),
    pytest.param(EAST_A, ("e-a",), {"e-b", "e-x"},
                 id="spill to tier 1: the cluster's other endpoints, also those without zone"),
    pytest.param(EAST_B, ("e-b",), {"e-a", "e-x", "w-b"},
                 id="tier 1 includes another cluster's endpoint in the same zone"),
    pytest.param(EAST_B, ("e-a", "e-b", "e-x"), {"w-b"},
                 id="by its own zone: west's eu-b endpoint, not its eu-c one"),
    pytest.param(EAST_A, ("e-a", "e-b", "e-x"), {"w-b", "w-c", "s-d"},
                 id="spill to tier 2: the region's endpoints"),
    pytest.param(WEST_C, ("w-c",), {"w-b"}, id="west/eu-c: its cluster's other endpoint"),
    pytest.param(WEST_B, ("w-b", "w-c"), {"e-b"}, id="west/eu-b: east's eu-b endpoint"),
    pytest.param(SOUTH, ("s-d",), {"e-a", "e-b", "e-x", "w-b", "w-c"},
                 id="south: the rest of the region"),
    pytest.param(EAST_A, ("e-a", "e-b", "e-x", "w-b", "w-c", "s-d"), {"n-a"},
                 id="spill to tier 3: another region"),
    pytest.param(OUTSIDE, ("e-x",), set(IP) - {"e-x"}, id="an unknown client: every endpoint"),
]


@pytest.mark.parametrize("full", [False, True], ids=["fast-path", "full-path"])
@pytest.mark.parametrize(("client", "down", "expected"), ENDPOINT_TIERS)
def test_headless_answers_rank_each_endpoint_by_its_own_zone(
        client: str, down: tuple[str, ...], expected: set[str], full: bool) -> None:
    fed = located(dbs(down))
    assert addresses(fed, DB, addr=client, full=full) == {IP[h] for h in expected}


SRV_TIERS = [
    # (client, endpoint -> SRV priority)
    pytest.param(EAST_A, {"e-a": 0, "e-b": 1, "e-x": 1, "w-b": 2, "w-c": 2, "s-d": 2, "n-a": 3},
                 id="east/eu-a"),
    pytest.param(EAST_B, {"e-a": 1, "e-b": 0, "e-x": 1, "w-b": 1, "w-c": 2, "s-d": 2, "n-a": 3},
                 id="east/eu-b"),
    pytest.param(NORTH, {"e-a": 3, "e-b": 3, "e-x": 3, "w-b": 3, "w-c": 3, "s-d": 3, "n-a": 1},
                 id="north, zone unknown"),
    pytest.param(OUTSIDE, dict.fromkeys(IP, 0), id="an unknown client: all priority 0"),
]


def _target(host: str) -> str:
    cluster = next(c for c, pods in PODS.items() if any(h == host for h, _, _ in pods))
    return f"{host}.{cluster}.{DB}"


@pytest.mark.parametrize(("client", "priorities"), SRV_TIERS)
def test_headless_srv_keeps_every_tier_with_the_tier_as_priority(
        client: str, priorities: dict[str, int]) -> None:
    fed = located(dbs())
    expected = tuple(f"{DB} 5 IN SRV {p} 100 5432 {_target(h)}" for h, p in priorities.items())
    for full in (False, True):
        check(fed.table, Case(DB, "SRV", answer=expected), full=full, addr=(client, 1))


def test_headless_srv_keeps_only_the_best_health_level() -> None:
    fed = located(dbs(["e-a"]))
    msg = query(fed.table, DB, "SRV", addr=(EAST_A, 1))
    targets = {r.split()[-1] for r in section(msg)}
    assert _target("e-a") not in targets
    assert len(targets) == len(IP) - 1


# --- weights and rotation ------------------------------------------------------------------------


def first_record_shares(table: AnswerTable, qname: str, qids: Iterable[int], *,
                        addr: str | None = None, full: bool = False) -> dict[str, float]:
    """The share of answers whose first A record is each address, over ``qids``."""
    counts: Counter[str] = Counter()
    n = 0
    for qid in qids:
        msg: dns.message.Message = query(table, qname, "A", qid=qid,
                                         addr=(addr, 1) if addr else None, full=full)
        counts[msg.answer[0][0].to_text()] += 1
        n += 1
    return {a: c / n for a, c in counts.items()}


def _by_cluster(shares: dict[str, float]) -> dict[str, float]:
    return {CLUSTER_OF.get(a, a): s for a, s in shares.items()}


def _close(shares: dict[str, float], weights: dict[str, float]) -> None:
    total = sum(weights.values())
    expected = {c: w / total for c, w in weights.items() if w > 0}
    assert set(shares) == set(expected), shares
    for c, share in expected.items():
        assert abs(shares[c] - share) <= 0.05, f"{c}: {shares[c]:.3f} vs {share:.3f}"


SEQUENTIAL = range(1000)
RANDOM = random.Random(8914).sample(range(65536), 1000)

WEIGHTS = [
    # (ready endpoints per cluster, services config, expected weights)
    pytest.param({"east": 3, "west": 1, "south": 0, "north": 0}, [],
                 {"east": 3, "west": 1}, id="default: proportional to ready endpoints"),
    pytest.param({"east": 1, "west": 1, "south": 1, "north": 1}, [],
                 {"east": 1, "west": 1, "south": 1, "north": 1}, id="default: equal counts"),
    pytest.param({"east": 5, "west": 2, "south": 1, "north": 0}, [],
                 {"east": 5, "west": 2, "south": 1}, id="default: three clusters"),
    pytest.param({"east": 3, "west": 1, "south": 1, "north": 1},
                 [{"namespace": "shop", "name": "web",
                   "weights": {"east": 1, "west": 4, "south": 0, "north": 0}}],
                 {"east": 1, "west": 4}, id="per-service override"),
    pytest.param({"east": 3, "west": 1, "south": 1, "north": 1},
                 [{"namespace": "shop", "weights": {"east": 2, "west": 1, "north": 1}}],
                 {"east": 2, "west": 1, "north": 1},
                 id="per-namespace override; unlisted clusters are drained"),
    pytest.param({"east": 3, "west": 1, "south": 1, "north": 1},
                 [{"namespace": "shop", "weights": {"east": 1, "west": 1}},
                  {"namespace": "shop", "name": "web", "weights": {"south": 1, "north": 9}}],
                 {"south": 1, "north": 9}, id="a service override beats the namespace one"),
    pytest.param({"east": 3, "west": 1, "south": 1, "north": 1},
                 [{"namespace": "other", "weights": {"east": 1}}],
                 {"east": 3, "west": 1, "south": 1, "north": 1},
                 id="another namespace's override does not apply"),
]


@pytest.mark.parametrize("qids", [SEQUENTIAL, RANDOM], ids=["qid 0-999", "random qids"])
@pytest.mark.parametrize(("ready", "services", "weights"), WEIGHTS)
def test_the_first_record_follows_the_weights_across_query_ids(
        ready: dict[str, int], services: list[dict[str, object]], weights: dict[str, float],
        qids: Iterable[int]) -> None:
    fed = located(webs(down=[c for c, n in ready.items() if n == 0],
                       **{c: n for c, n in ready.items() if n}), services=services)
    shares = _by_cluster(first_record_shares(fed.table, WEB, qids, addr=OUTSIDE))
    _close(shares, weights)
    # Every record of the tier is in every answer; only the order rotates.
    msg = query(fed.table, WEB, "A", addr=(OUTSIDE, 1))
    assert {CLUSTER_OF[r.split()[-1]] for r in section(msg)} == \
        {c for c, w in weights.items() if w > 0}


def test_both_paths_rotate_alike() -> None:
    fed = located(webs(east=3, west=1))
    assert first_record_shares(fed.table, WEB, range(64), addr=OUTSIDE) == \
        first_record_shares(fed.table, WEB, range(64), addr=OUTSIDE, full=True)


def test_headless_weights_default_to_one_per_ready_endpoint() -> None:
    pods = {"east": 3, "west": 1}
    data = {c: [Service("data", "db", ServiceType.HEADLESS,
                        endpoints=tuple(Endpoint(f"10.{i}.0.{n}") for n in range(1, k + 1)))]
            for i, (c, k) in enumerate(pods.items(), start=1)}
    fed = located(data)
    shares = first_record_shares(fed.table, DB, SEQUENTIAL)
    per_cluster: Counter[str] = Counter()
    for a, s in shares.items():
        per_cluster["east" if a.startswith("10.1.") else "west"] += s
    _close(dict(per_cluster), {"east": 3, "west": 1})


def test_a_headless_weight_override_splits_among_the_ready_endpoints_only() -> None:
    # East has one ready pod and three unready ones; its share is not diluted by them.
    east = Service("data", "db", ServiceType.HEADLESS, endpoints=(
        Endpoint("10.1.0.1"), *(Endpoint(f"10.1.0.{n}", ready=False, serving=False)
                                for n in (2, 3, 4))))
    west = Service("data", "db", ServiceType.HEADLESS,
                   endpoints=(Endpoint("10.2.0.1"), Endpoint("10.2.0.2")))
    fed = located({"east": [east], "west": [west]},
                  services=[{"namespace": "data", "name": "db",
                             "weights": {"east": 1, "west": 1}}])
    shares = first_record_shares(fed.table, DB, SEQUENTIAL)
    per_cluster: Counter[str] = Counter()
    for a, s in shares.items():
        per_cluster["east" if a.startswith("10.1.") else "west"] += s
    _close(dict(per_cluster), {"east": 1, "west": 1})


DRAINING = [
    # (client, clusters down, weights, clusters answered)
    pytest.param(EAST_A, (), {"east": 0, "west": 1, "south": 1, "north": 1}, {"west", "south"},
                 id="a drained cluster is skipped even in the client's tier 0"),
    pytest.param(EAST_A, ("west", "south"), {"east": 0, "west": 1, "south": 1, "north": 1},
                 {"north"}, id="any positive weight in a farther tier beats the drained one"),
    pytest.param(EAST_A, ("west", "south", "north"),
                 {"east": 0, "west": 1, "south": 1, "north": 1}, {"east"},
                 id="used when nothing else is healthy"),
    pytest.param(OUTSIDE, (), {"east": 0, "west": 0, "south": 0, "north": 0}, ALL,
                 id="all drained: all answered, as if equal"),
]


@pytest.mark.parametrize(("client", "down", "weights", "expected"), DRAINING)
def test_weight_zero_drains_a_cluster(client: str, down: tuple[str, ...],
                                      weights: dict[str, float], expected: set[str]) -> None:
    fed = located(webs(down), services=[{"namespace": "shop", "weights": weights}])
    for full in (False, True):
        assert clusters_answered(fed, addr=client, full=full) == frozenset(expected)


def test_equal_weights_lead_equally_often_when_the_cap_cuts_the_answer() -> None:
    names = [f"c{i}" for i in range(1, 6)]
    data = {c: [Service("shop", "web", cluster_ips=(f"10.96.0.{i}",),
                        endpoints=(Endpoint(f"10.0.0.{i}"),))]
            for i, c in enumerate(names, start=1)}
    fed = federation(data, settings=settings_for(names, dns={"max_records": 2}))
    seen: set[str] = set()
    for qid in range(100):
        recs = section(query(fed.table, WEB, "A", qid=qid))
        assert len(recs) == 2
        seen.update(r.split()[-1] for r in recs)
    assert seen == {f"10.96.0.{i}" for i in range(1, 6)}
    shares = first_record_shares(fed.table, WEB, SEQUENTIAL)
    _close(shares, {f"10.96.0.{i}": 1 for i in range(1, 6)})


def test_weighted_answers_are_capped_at_max_records_and_still_follow_the_weights() -> None:
    names = ["a", "b", "c", "d"]
    data = {c: [Service("shop", "web", cluster_ips=(f"10.96.0.{i}",),
                        endpoints=tuple(Endpoint(f"10.{i}.0.{n}") for n in range(i)))]
            for i, c in enumerate(names, start=1)}
    fed = federation(data, settings=settings_for(names, dns={"max_records": 3}))
    for qid in range(50):
        assert len(section(query(fed.table, WEB, "A", qid=qid))) == 3
    shares = first_record_shares(fed.table, WEB, RANDOM)
    _close(shares, {f"10.96.0.{i}": i for i in range(1, 5)})


def test_the_cap_bounds_every_answer_of_a_large_headless_service() -> None:
    pods = Service("data", "db", ServiceType.HEADLESS,
                   endpoints=tuple(Endpoint(f"10.0.{n // 250}.{n % 250 + 1}")
                                   for n in range(300)))
    fed = federation({"east": [pods]}, settings=settings_for(["east"], dns={"max_records": 8}))
    seen: set[str] = set()
    for qid in range(300):
        recs = section(query(fed.table, DB, "A", qid=qid))
        assert len(recs) == 8
        seen.update(r.split()[-1] for r in recs)
    assert len(seen) == 300  # every pod is answered by some rotation


SRV_WEIGHTS = [
    pytest.param({"east": 1, "west": 4, "south": 2},
                 {"e": (0, 25), "w": (2, 100), "s": (2, 50), "n": (3, 0)},
                 id="heaviest scaled to 100, unlisted (drained) 0"),
    pytest.param(None, {"e": (0, 100), "w": (2, 100), "s": (2, 100), "n": (3, 100)},
                 id="default: equal per endpoint"),
]


@pytest.mark.parametrize(("weights", "expected"), SRV_WEIGHTS)
def test_headless_srv_weight_follows_the_weight_and_priority_the_tier(
        weights: dict[str, float] | None, expected: dict[str, tuple[int, int]]) -> None:
    data = {c: [Service("data", "kv", ServiceType.HEADLESS, ports=(Port("kv", 11211),),
                        endpoints=(Endpoint(f"10.{i}.0.1", hostname=c[0],
                                            zone={"east": "eu-a", "west": "eu-c",
                                                  "south": "eu-d", "north": "us-a"}[c]),))]
            for i, c in enumerate(sorted(ALL), start=1)}
    services = [{"namespace": "data", "name": "kv", "weights": weights}] if weights else []
    fed = located(data, services=services)
    kv = "kv.data.svc.clusterset.local."
    cluster = {"e": "east", "w": "west", "s": "south", "n": "north"}
    answer = tuple(f"{kv} 5 IN SRV {p} {w} 11211 {h}.{cluster[h]}.{kv}"
                   for h, (p, w) in expected.items())
    check(fed.table, Case(kv, "SRV", answer=answer), addr=(EAST_A, 1))
    check(fed.table, Case(f"_kv._tcp.{kv}", "SRV",
                          answer=tuple(a.replace(f"{kv} 5", f"_kv._tcp.{kv} 5", 1)
                                       for a in answer)), full=True, addr=(EAST_A, 1))


def test_clusterip_srv_points_at_the_service_name_and_answers_only_the_chosen_tier() -> None:
    fed = located(webs())
    check(fed.table, Case(WEB, "SRV", answer=(f"{WEB} 5 IN SRV 0 100 80 {WEB}",),
                          additional=(f"{WEB} 5 IN A {CLUSTER_IP['east']}",)), addr=(EAST_A, 1))
    check(fed.table, Case(WEB, "SRV", answer=(f"{WEB} 5 IN SRV 0 100 80 {WEB}",),
                          additional=(f"{WEB} 5 IN A {CLUSTER_IP['north']}",)), addr=(NORTH, 1))


def test_a_missing_address_family_is_nodata_whatever_the_none_healthy_choice() -> None:
    # web is IPv4-only and healthy: AAAA is plain NODATA, not the SERVFAIL that the
    # servfail choice gives a name with nothing healthy.
    fed = located(webs(), selection={"none_healthy": "servfail"})
    for full in (False, True):
        check(fed.table, Case(WEB, "AAAA", authority=NEG), full=full, addr=(EAST_A, 1))
    down = located(webs(ALL), selection={"none_healthy": "servfail"})
    check(down.table, Case(WEB, "A", rcode="SERVFAIL", aa=False), addr=(EAST_A, 1))


def test_a_pinned_name_without_the_asked_family_is_nodata_too() -> None:
    # The service is dual-stack in west only; east's pinned name has IPv4 only.
    data = {c: [web(c)] for c in ALL}
    data["west"] = [Service("shop", "web", cluster_ips=("10.96.2.10", "fd96::2"),
                            endpoints=(Endpoint("10.200.0.2"), Endpoint("fd00:200::2")),
                            ports=(Port("http", 80),))]
    fed = located(data, selection={"none_healthy": "servfail"},
                  names={"cluster_pinned": True})
    for full in (False, True):
        check(fed.table, Case(f"east.{WEB}", "AAAA", authority=NEG), full=full,
              addr=(EAST_A, 1))
        check(fed.table, Case(f"west.{WEB}", "AAAA", answer=(f"west.{WEB} 5 IN AAAA fd96::2",)),
              full=full, addr=(EAST_A, 1))


# --- the pure policy functions -------------------------------------------------------------------


def _cand(cluster: str, region: str, zones: tuple[str, ...], *, endpoint: bool = False,
          weight: float = 1.0, level: Level = Level.READY) -> Candidate:
    return Candidate(cluster, region, zones, ("10.0.0.1",), level, weight, endpoint=endpoint)


TIER_TABLE = [
    # (candidate, place, tier)
    (_cand("east", "eu", ("eu-a", "eu-b")), Place("east", "eu", "eu-a"), 0),
    (_cand("east", "eu", ("eu-a", "eu-b")), Place("east", "eu", None), 1),
    (_cand("west", "eu", ("eu-b", "eu-c")), Place("east", "eu", "eu-b"), 1),
    (_cand("west", "eu", ("eu-b", "eu-c")), Place("east", "eu", "eu-a"), 2),
    (_cand("north", "us", ("us-a",)), Place("east", "eu", "eu-a"), 3),
    (_cand("north", "us", ("us-a",)), Place(), 0),
    (_cand("east", "eu", ("eu-a",), endpoint=True), Place("east", "eu", "eu-a"), 0),
    (_cand("east", "eu", ("eu-b",), endpoint=True), Place("east", "eu", "eu-a"), 1),
    (_cand("east", "eu", (), endpoint=True), Place("east", "eu", "eu-a"), 1),
    (_cand("east", "eu", ("eu-a",), endpoint=True), Place("east", "eu", None), 1),
    (_cand("west", "eu", ("eu-a",), endpoint=True), Place("east", "eu", "eu-a"), 1),
    (_cand("west", "eu", ("eu-c",), endpoint=True), Place("east", "eu", "eu-a"), 2),
    (_cand("west", "eu", ("eu-c",), endpoint=True), Place("east", None, None), 3),
]


@pytest.mark.parametrize(("candidate", "place", "expected"), TIER_TABLE)
def test_the_tier_of_a_candidate_for_a_place(candidate: Candidate, place: Place,
                                             expected: int) -> None:
    assert tier(candidate, place) == expected


def test_rotations_give_each_equal_candidate_the_lead_equally_often() -> None:
    pool = [_cand(f"c{i}", "r", ()) for i in range(7)]
    for cap in (1, 2, 3, 7, 16):
        variants = rotations(pool, cap=cap)
        leads = Counter(v[0].cluster for v in variants)
        assert set(leads.values()) == {len(variants) // 7}, (cap, leads)
        assert all(len(v) == min(cap, 7) for v in variants)


def test_choose_prefers_level_then_tier_then_weight() -> None:
    place = Place("east", "eu", "eu-a")
    near_stale = _cand("east", "eu", ("eu-a",), level=Level.STALE)
    far_fresh = _cand("north", "us", ("us-a",))
    sel = choose([near_stale, far_fresh], place, cap=16)
    assert [c.cluster for v in sel.variants for c in v] == ["north"]
    assert (sel.level, sel.tier) == (Level.READY, 3)


def test_srv_targets_scale_the_heaviest_to_100() -> None:
    place = Place("east", "eu", "eu-a")
    pool = [_cand("east", "eu", ("eu-a",), weight=3), _cand("west", "eu", ("eu-c",), weight=6),
            _cand("south", "eu", ("eu-d",), weight=0)]
    targets, level = srv_targets(pool, place, cap=16)
    assert [(c.cluster, p, w) for c, p, w in targets] == \
        [("east", 0, 50), ("west", 2, 100), ("south", 2, 0)]
    assert level is Level.READY
