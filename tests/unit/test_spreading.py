"""Answers beyond the nearest tier: shares, the subset answer mode, capacity-aware locality.

Case tables and share tests through the real answer table and handler, without
sockets or clocks; query IDs come from a seeded generator (answers rotate by the
ID's low byte). The federation is the one of ``test_policy``: east (eu-a, eu-b),
west (eu-b, eu-c) and south (eu-d) in region eu, north (us-a) in region us.

* **shares** ("10 % of every client's answers from west"): that cluster leads that
  share of every client's answers, whatever its tier; the rest follow locality;
* **subset** answer mode: each answer holds ``subset_size`` records picked by the
  weights (caches in front keep whole RRsets, so only subsets survive them);
* **capacity-aware** locality: a tier keeps a place's clients only while it has the
  ready endpoints for them; the rest spill to the next tier by capacity
  (:func:`~feddns.policy.spreading.allocate`), with ``trafficDistribution:
  PreferClose`` keeping the nearest tier.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import dns.message
import pytest

from feddns.dns.front import FrontMemo
from feddns.dns.slots import new_counts
from feddns.model.services import Endpoint, Port, Service, ServicePolicy
from feddns.policy.candidates import ClusterTraits
from feddns.policy.health import Level
from feddns.policy.locality import Locator, Place
from feddns.policy.selection import Candidate
from feddns.policy.spreading import Demand, allocate, load_ratios, with_shares
from feddns.runtime.demand import DemandMeter
from feddns.runtime.options import locator_from
from tests.unit.dnscase import Federation, handle, make_handler, query
from tests.unit.test_policy import (
    ALL,
    CLUSTER_IP,
    CLUSTER_OF,
    EAST,
    EAST_A,
    EXPLAIN,
    NORTH,
    OUTSIDE,
    SOUTH,
    WEB,
    WEST_C,
    explain_line,
    located,
    topology,
    txt_lines,
    web,
)

_RNG = random.Random(13)
QIDS = [_RNG.randrange(65536) for _ in range(4000)]
"""Seeded query IDs: a share test's sample."""


def lead_shares(fed: Federation, addr: str | None, qname: str = WEB) -> dict[str, float]:
    """Each cluster's share of the first A record over :data:`QIDS` (one handler, UDP)."""
    handler = make_handler(fed.table)
    data = bytearray(dns.message.make_query(qname, "A").to_wire())
    counts: Counter[str] = Counter()
    first: dict[bytes, str] = {}  # a reply's first record, by the reply after its ID
    for qid in QIDS:
        data[0:2] = qid.to_bytes(2, "big")
        reply = handle(handler, bytes(data), False, (addr or "198.51.100.9", 1))
        assert reply is not None
        if reply[2:] not in first:
            first[reply[2:]] = dns.message.from_wire(reply).answer[0][0].to_text()
        counts[CLUSTER_OF[first[reply[2:]]]] += 1
    return {c: n / len(QIDS) for c, n in counts.items()}


def assert_shares(got: dict[str, float], want: dict[str, float], *, within: float) -> None:
    """Every cluster's share within ``within`` (absolute: 0.05 is five percentage points)."""
    for cluster in set(got) | set(want):
        assert abs(got.get(cluster, 0.0) - want.get(cluster, 0.0)) <= within, (got, want)


def webs_with(**ready: int) -> dict[str, list[Service]]:
    return {c: [web(c, ready=ready.get(c, 1))] for c in sorted(ALL)}


def policy(**kw: Any) -> dict[str, Any]:
    return {"services": [{"namespace": "shop", "name": "web", **kw}]}


# --- shares: a share of every client's answers, whatever the tier --------------------------------

SHARE_CASES = [
    # (client, shares, expected share of first records per cluster)
    pytest.param(EAST_A, {"west": 10}, {"east": 0.9, "west": 0.1},
                 id="east client: 10 % from west (its region), 90 % its own tier"),
    pytest.param(EAST_A, {"north": 10}, {"east": 0.9, "north": 0.1},
                 id="east client: 10 % from another region"),
    pytest.param(NORTH, {"north": 10}, {"north": 1.0},
                 id="north's own: its share adds to its own tier, which it is anyway"),
    pytest.param(NORTH, {"west": 25, "south": 25}, {"north": 0.5, "west": 0.25, "south": 0.25},
                 id="two shares at once"),
    pytest.param(OUTSIDE, {"west": 40}, {"west": 0.55, "east": 0.15, "south": 0.15,
                                         "north": 0.15},
                 id="an unknown client: 40 % west, then everyone equally"),
    pytest.param(EAST_A, {"west": 100}, {"west": 1.0}, id="100 %: a complete move"),
]


@pytest.mark.parametrize(("client", "shares", "expected"), SHARE_CASES)
def test_shares_give_a_cluster_its_percent_of_every_clients_answers(
        client: str, shares: dict[str, float], expected: dict[str, float]) -> None:
    fed = located(webs_with(), **policy(shares=shares))
    assert_shares(lead_shares(fed, client), expected, within=0.05)


def test_the_shared_cluster_is_in_every_answer_of_the_ordered_mode() -> None:
    fed = located(webs_with(), **policy(shares={"west": 10}))
    msg = query(fed.table, WEB, "A", addr=(EAST_A, 1))
    assert {rd.to_text() for rd in msg.answer[0]} == {CLUSTER_IP["east"], CLUSTER_IP["west"]}


def test_a_share_of_an_unhealthy_or_drained_cluster_goes_back_to_locality() -> None:
    data = webs_with()
    data["west"] = [web("west", ready=0, unready=1)]
    fed = located(data, **policy(shares={"west": 30}))
    assert lead_shares(fed, EAST_A) == {"east": 1.0}
    fed = located(webs_with(), **policy(shares={"west": 30}, weights={"east": 1, "south": 1,
                                                                       "north": 1}))
    assert lead_shares(fed, EAST_A) == {"east": 1.0}  # west drained (weight 0)


def test_shares_come_from_the_annotation_and_the_config_wins_key_by_key() -> None:
    annotated = {c: [web(c, policy=ServicePolicy(shares=(("north", 20.0),)))]
                 for c in sorted(ALL)}
    fed = located(annotated)
    assert_shares(lead_shares(fed, EAST_A), {"east": 0.8, "north": 0.2}, within=0.05)
    # A config override of another key keeps the annotation's shares.
    fed = located(annotated, **policy(regions=["eu", "us"]))
    assert_shares(lead_shares(fed, EAST_A), {"east": 0.8, "north": 0.2}, within=0.05)
    fed = located(annotated, **policy(shares={"west": 50}))
    assert_shares(lead_shares(fed, EAST_A), {"east": 0.5, "west": 0.5}, within=0.05)


def test_the_explain_record_shows_the_shares_and_each_clusters_part() -> None:
    fed = located(webs_with(), **policy(shares={"west": 10}))
    lines = txt_lines(fed, EXPLAIN, addr=EAST_A)
    assert "shares west=10%" in lines[0]
    assert "chosen tier 0" in explain_line(lines, "east")
    assert "share 90%" in explain_line(lines, "east")
    assert "chosen tier 2" in explain_line(lines, "west")
    assert "share 10%" in explain_line(lines, "west")


def test_pinned_names_ignore_the_shares() -> None:
    fed = located(webs_with(), **policy(shares={"west": 50}), names={"cluster_pinned": True})
    for qid in QIDS[:64]:
        msg = query(fed.table, f"east.{WEB}", "A", qid=qid, addr=(EAST_A, 1))
        assert [rd.to_text() for rd in msg.answer[0]] == [CLUSTER_IP["east"]]


# --- the share test of every weighting mode ------------------------------------------------------

MODES = [
    pytest.param({}, webs_with(east=2, west=1, south=1, north=4), OUTSIDE,
                 {"east": 0.25, "west": 0.125, "south": 0.125, "north": 0.5},
                 id="ordered, default weights (ready endpoints)"),
    pytest.param(policy(weights={"east": 2, "west": 1, "south": 1}), webs_with(), OUTSIDE,
                 {"east": 0.5, "west": 0.25, "south": 0.25}, id="ordered, configured weights"),
    pytest.param(policy(shares={"north": 10}), webs_with(), EAST,
                 {"east": 0.9, "north": 0.1}, id="ordered, shares across tiers"),
    pytest.param({**policy(weights={"east": 2, "west": 1, "south": 1}),
                  "selection": {"answer_mode": "subset"}}, webs_with(), OUTSIDE,
                 {"east": 0.5, "west": 0.25, "south": 0.25}, id="subset, configured weights"),
    pytest.param(policy(answer_mode="subset", shares={"north": 30}), webs_with(), EAST_A,
                 {"east": 0.7, "north": 0.3}, id="subset, shares across tiers"),
]


@pytest.mark.parametrize(("settings", "data", "client", "expected"), MODES)
def test_over_many_queries_each_weighting_mode_follows_its_shares(
        settings: dict[str, Any], data: dict[str, list[Service]], client: str,
        expected: dict[str, float]) -> None:
    fed = located(data, **settings)
    assert_shares(lead_shares(fed, client), expected, within=0.05)


# --- the subset answer mode ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2])
def test_the_subset_mode_answers_subset_size_records_picked_by_the_weights(size: int) -> None:
    fed = located(webs_with(), selection={"answer_mode": "subset", "subset_size": size},
                  **policy(weights={"east": 3, "west": 1}))
    sets: Counter[frozenset[str]] = Counter()
    for qid in QIDS[:1000]:
        msg = query(fed.table, WEB, "A", qid=qid, addr=(OUTSIDE, 1))
        got = frozenset(CLUSTER_OF[rd.to_text()] for rd in msg.answer[0])
        assert len(got) == size
        sets[got] += 1
    if size == 1:
        assert_shares({next(iter(s)): n / 1000 for s, n in sets.items()},
                      {"east": 0.75, "west": 0.25}, within=0.05)
    else:
        assert set(sets) == {frozenset({"east", "west"})}


def test_the_subset_mode_is_per_service_and_by_annotation_too() -> None:
    data = {c: [web(c, policy=ServicePolicy(answer_mode="subset"))] for c in sorted(ALL)}
    fed = located(data)
    msg = query(fed.table, WEB, "A", addr=(OUTSIDE, 1))
    assert len(msg.answer[0]) == 1
    fed = located(webs_with(), **policy(answer_mode="subset"))
    assert len(query(fed.table, WEB, "A", addr=(OUTSIDE, 1)).answer[0]) == 1
    fed = located(webs_with())  # the default: every record, ordered
    assert len(query(fed.table, WEB, "A", addr=(OUTSIDE, 1)).answer[0]) == 4


def test_a_subset_never_holds_a_farther_tier_nor_an_unhealthy_cluster() -> None:
    data = webs_with()
    data["west"] = [web("west", ready=0, unready=1)]
    fed = located(data, selection={"answer_mode": "subset"})
    for qid in QIDS[:256]:
        got = {CLUSTER_OF[rd.to_text()] for rd in query(
            fed.table, WEB, "A", qid=qid, addr=(EAST_A, 1)).answer[0]}
        assert got == {"east"}


# --- capacity-aware locality: the allocation -----------------------------------------------------


def _cand(cluster: str, region: str, zone: str, capacity: float) -> Candidate:
    return Candidate(cluster, region, (zone,), ("10.0.0.1",), Level.READY, capacity,
                     traits=ClusterTraits(capacity=capacity))


ZONES3 = [_cand("a", "r", "z-a", 10), _cand("b", "r", "z-b", 45), _cand("c", "r", "z-c", 45)]
PLACE = {z: Place(c, "r", z) for c, z in (("a", "z-a"), ("b", "z-b"), ("c", "z-c"))}


def test_a_zone_with_a_tenth_of_the_capacity_and_a_third_of_the_demand_spills_the_rest() -> None:
    demand = Demand(tuple((PLACE[z], 1 / 3) for z in ("z-a", "z-b", "z-c")))
    alloc = allocate(ZONES3, demand, overload=0.1)
    ratios = load_ratios(ZONES3, demand, alloc)
    assert max(ratios.values()) <= 1.1 + 1e-6
    keep = dict(alloc[PLACE["z-a"]])[("a", None)]
    # a keeps 10 % x 1.1 of all demand: 0.11 / (1/3) = 33 % of its own clients.
    assert keep == pytest.approx(0.33, abs=0.01)
    assert sum(dict(alloc[PLACE["z-a"]]).values()) == pytest.approx(1.0)
    # b and c keep all their own clients (they have room), and take a's rest evenly.
    assert dict(alloc[PLACE["z-b"]]) == {("b", None): pytest.approx(1.0)}


def test_with_room_everywhere_every_place_stays_in_its_own_tier() -> None:
    demand = Demand(tuple((PLACE[z], d) for z, d in (("z-a", 0.1), ("z-b", 0.45),
                                                       ("z-c", 0.45))))
    alloc = allocate(ZONES3, demand, overload=0.1)
    for z in ("z-a", "z-b", "z-c"):
        assert dict(alloc[PLACE[z]]) == {(PLACE[z].cluster, None): pytest.approx(1.0)}


def test_nearer_tiers_fill_first_for_every_place() -> None:
    # Region r2 has spare capacity, but a's overflow goes to b and c (same region) first.
    cands = [*ZONES3, _cand("far", "r2", "z-far", 10)]
    demand = Demand(tuple((PLACE[z], 1 / 3) for z in ("z-a", "z-b", "z-c")))
    alloc = allocate(cands, demand, overload=0.1)
    assert ("far", None) not in dict(alloc[PLACE["z-a"]])


def test_when_everything_is_overloaded_the_rest_is_spread_by_capacity() -> None:
    cands = [_cand("a", "r", "z-a", 1), _cand("b", "r2", "z-b", 1)]
    demand = Demand(((Place("a", "r", "z-a"), 1.0),))
    alloc = dict(allocate(cands, demand, overload=0.0)[Place("a", "r", "z-a")])
    assert alloc == {("a", None): pytest.approx(0.5), ("b", None): pytest.approx(0.5)}


def test_with_shares_keeps_the_pool_first_and_sums_to_one() -> None:
    east, west = _cand("east", "eu", "eu-a", 1), _cand("west", "eu", "eu-b", 1)
    out = with_shares([(east, 1.0)], [east, west], [("west", 10.0), ("gone", 50.0)])
    assert [(c.cluster, round(w, 6)) for c, w in out] == [("east", 0.9), ("west", 0.1)]


# --- capacity-aware locality: answers ------------------------------------------------------------

CAPACITY = webs_with(east=2, west=10, south=10, north=10)
"""east has 2 ready endpoints, its region's other clusters 10 each."""


def with_demand(fed: Federation, places: dict[str, float]) -> Federation:
    locator = fed.table.locator
    demand = Demand(tuple((locator.place(locator.class_of_source(a)), d)
                          for a, d in places.items()))
    keys = list(fed.table.plans)
    fed.table.demand = demand
    fed.registry.touch_services(keys)
    fed.sync()
    return fed


def test_an_overloaded_tier_keeps_what_it_can_hold_and_spills_the_rest_by_capacity() -> None:
    fed = with_demand(located(CAPACITY, selection={"capacity_aware": True}),
                      {EAST: 0.5, WEST_C: 0.1, SOUTH: 0.1, NORTH: 0.3})
    shares = lead_shares(fed, EAST)
    # east holds 2/32 of the capacity: with 10 % overload, 6.9 % of all demand, 13.75 %
    # of its own clients' (half of all). The rest goes to west and south (its region,
    # with room to spare after their own clients) by capacity.
    assert_shares(shares, {"east": 0.1375, "west": 0.43125, "south": 0.43125}, within=0.05)
    assert "north" not in shares  # another region: not needed
    assert lead_shares(fed, WEST_C) == {"west": 1.0}
    lines = txt_lines(fed, EXPLAIN, addr=EAST)
    assert "capacity-aware, spread by demand" in lines[0]
    assert "capacity 2" in explain_line(lines, "east")


def test_without_capacity_awareness_the_nearest_tier_takes_everything() -> None:
    fed = with_demand(located(CAPACITY), {EAST: 0.5, WEST_C: 0.1, SOUTH: 0.1, NORTH: 0.3})
    assert lead_shares(fed, EAST) == {"east": 1.0}


def test_when_the_region_is_full_too_the_rest_spills_to_another_region() -> None:
    fed = with_demand(located(CAPACITY, selection={"capacity_aware": True}),
                      {EAST: 0.5, WEST_C: 0.25, SOUTH: 0.25})
    # west and south keep their own clients (0.25 each of 0.34 they may hold), take
    # what is left of their room (0.09 each) and north, in the other region, the rest.
    assert_shares(lead_shares(fed, EAST), {"east": 0.1375, "west": 0.1875, "south": 0.1875,
                                           "north": 0.4875}, within=0.05)


def test_a_place_without_measured_demand_follows_plain_locality() -> None:
    fed = with_demand(located(CAPACITY, selection={"capacity_aware": True}), {WEST_C: 1.0})
    assert lead_shares(fed, EAST) == {"east": 1.0}


@pytest.mark.parametrize(("traffic", "annotation", "spills"), [
    pytest.param(None, None, True, id="unset: the global choice (on)"),
    pytest.param("PreferClose", None, False, id="PreferClose: the nearest tier"),
    pytest.param("PreferSameZone", None, False, id="PreferSameZone: the nearest tier"),
    pytest.param("PreferSameNode", None, False, id="PreferSameNode: the nearest tier"),
    pytest.param("SomethingNew", None, True, id="an unknown value: the global choice"),
    pytest.param("PreferClose", True, True, id="an explicit capacity annotation wins"),
])
def test_traffic_distribution_maps_onto_capacity_awareness(
        traffic: str | None, annotation: bool | None, spills: bool) -> None:
    pol = ServicePolicy(capacity_aware=annotation) if annotation is not None else None
    data = {c: [web(c, ready=n, traffic_distribution=traffic, policy=pol)]
            for c, n in (("east", 2), ("west", 10), ("south", 10), ("north", 10))}
    fed = with_demand(located(data, selection={"capacity_aware": True}),
                      {EAST: 0.5, WEST_C: 0.1, SOUTH: 0.1, NORTH: 0.3})
    assert (lead_shares(fed, EAST) != {"east": 1.0}) is spills


def test_a_demand_change_recompiles_only_capacity_aware_services() -> None:
    fed = located({c: [web(c), Service("shop", "cart", cluster_ips=(f"10.97.0.{i}",),
                                       endpoints=(Endpoint("10.200.1.1"),),
                                       ports=(Port("http", 80),))]
                   for i, c in enumerate(sorted(ALL), start=1)},
                  **policy(capacity_aware=True))
    from feddns.table.compiler import Compiler

    class Loop:
        def call_soon(self, *_: Any) -> None:
            pass

        def call_later(self, *_: Any) -> Any:
            return None

    compiler = Compiler(fed.registry, fed.table, scheduler=Loop(), clock=lambda: 0.0,
                        wall=lambda: 3000.0)
    locator = fed.table.locator
    assert compiler.set_demand(Demand(((locator.place(locator.class_of_source(EAST)), 1.0),))) == 1
    assert sorted(fed.registry.dirty) == [("shop", "web")]
    assert compiler.set_demand(fed.table.demand) == 0  # unchanged: nothing to do


# --- the demand: this instance's answers per client place ----------------------------------------


def test_every_answer_is_counted_for_its_client_class_on_every_path() -> None:
    fed = located(webs_with())
    handler = make_handler(fed.table)
    locator = fed.table.locator
    for addr in (EAST_A, EAST_A, EAST_A, WEST_C, OUTSIDE):
        wire = dns.message.make_query(WEB, "A").to_wire()
        handle(handler, wire, False, (addr, 53))  # miss, then front memo hits
    handler.handle_full(dns.message.make_query(WEB, "A").to_wire(), tcp=True,
                        addr=(WEST_C, 53))
    totals = handler.front.class_totals()
    by_place = {locator.place(c): n for c, n in totals.items() if n}
    assert by_place == {Place("east", "eu", "eu-a"): 3, Place("west", "eu", "eu-c"): 2,
                        Place(): 1}
    # The metrics fold the classes back together.
    assert sum(handler.front.folded()) == 6


def test_the_meter_turns_counts_into_rounded_shares_and_hands_over_changes_only() -> None:
    settings = topology()
    locator = locator_from(settings)
    front = FrontMemo(new_counts())
    given: list[Demand | None] = []
    meter = DemandMeter(front, lambda d: given.append(d) or 0, locator=lambda: locator,
                        window=lambda: 60.0)

    def count(addr: str, n: int) -> None:
        front.counts[front.slot_of(7, locator.class_of_source(addr))] += n

    count(EAST_A, 300)
    count(NORTH, 100)
    demand = meter.tick()
    assert demand == Demand(((Place("east", "eu", "eu-a"), 0.75), (Place("north", "us"), 0.25)))
    assert given == [demand]
    assert meter.tick() == demand and len(given) == 1  # nothing new: nothing handed over
    count(NORTH, 400)  # all of the new answers from north: the average moves part of the way
    moved = meter.tick()
    assert moved is not None and len(given) == 2
    north = dict(moved.places)[Place("north", "us")]
    assert 0.25 < north < 0.5


def test_a_client_class_the_locator_no_longer_has_is_not_counted() -> None:
    front = FrontMemo(new_counts())
    meter = DemandMeter(front, lambda _: 0, locator=lambda: Locator([]), window=lambda: 60.0)
    front.counts[front.slot_of(7, 5)] += 10
    assert meter.tick() is None
