"""Health: readiness levels, freshness with flap damping, none-healthy choices, stale serving.

Ready endpoints count; a cluster with none ready but some serving while
terminating is a last resort. A cluster's data counts only while fresh:
stale data answers only when no fresh candidate exists, with the stale TTL
and Extended DNS Error 3 (RFC 8914) for EDNS clients. Freshness is damped:
a cluster lost less than ``hold_down`` ago still counts, and one that came
back counts only after ``readmit_after``. When nothing is answerable the
``none_healthy`` choice applies. After ``max_stale`` a name with nothing
left answers SERVFAIL, never NXDOMAIN. Time is always explicit: ``now`` is
passed to the registry and to ``sync_table``.
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.edns
import pytest

from feddns.model.registry import ClusterEntry, ClusterState
from feddns.model.services import Endpoint, Port, Service, ServiceType
from feddns.policy.health import (
    Damping,
    Isolation,
    cluster_freshness,
    is_fresh,
    isolation_episode,
    next_change,
)
from tests.unit.dnscase import Case, Federation, check, query, section
from tests.unit.test_policy import (
    ALL,
    CLUSTER_IP,
    EAST_A,
    NEG,
    NORTH,
    OUTSIDE,
    WEB,
    addresses,
    clusters_answered,
    located,
    web,
    webs,
)

DB = "db.data.svc.clusterset.local."

# --- readiness levels ----------------------------------------------------------------------------

LEVELS = [
    # (east's web: ready, unready, terminating; west healthy?; clusters answered)
    pytest.param((2, 1, 0), True, {"east"}, id="ready endpoints count"),
    pytest.param((0, 1, 1), True, {"west"},
                 id="serving-terminating only: a last resort, not used while others are ready"),
    pytest.param((0, 1, 1), False, {"east"},
                 id="serving-terminating only: used when nothing anywhere is ready"),
    pytest.param((0, 2, 0), False, "NODATA",
                 id="unready, not serving: never answered (fail-closed)"),
]


@pytest.mark.parametrize(("east", "west_ok", "expected"), LEVELS)
def test_readiness_levels_decide_which_clusters_answer(
        east: tuple[int, int, int], west_ok: bool, expected: set[str] | str) -> None:
    ready, unready, terminating = east
    data = {"east": [web("east", ready=ready, unready=unready, terminating=terminating)],
            "west": [web("west", ready=1 if west_ok else 0, unready=0 if west_ok else 1)]}
    fed = located(data)
    for full in (False, True):
        if expected == "NODATA":
            check(fed.table, Case(WEB, "A", authority=NEG), full=full, addr=(EAST_A, 1))
        else:
            assert clusters_answered(fed, addr=EAST_A, full=full) == frozenset(expected)


def test_headless_last_resort_endpoints_are_the_serving_terminating_ones() -> None:
    db = Service("data", "db", ServiceType.HEADLESS, endpoints=(
        Endpoint("10.1.0.1", ready=False, serving=True, terminating=True),
        Endpoint("10.1.0.2", ready=False, serving=False, terminating=True),
        Endpoint("10.1.0.3", ready=False, serving=False),
    ))
    fed = located({"east": [db]})
    assert addresses(fed, DB, addr=EAST_A) == {"10.1.0.1"}
    ready = Service("data", "db", ServiceType.HEADLESS, endpoints=(
        *db.endpoints, Endpoint("10.1.0.4")))
    assert addresses(located({"east": [ready]}), DB, addr=EAST_A) == {"10.1.0.4"}


def test_a_fresh_last_resort_beats_stale_ready_data() -> None:
    fed = located({"east": [web("east", ready=1)],
                   "west": [web("west", ready=0, terminating=1)]})
    fed.registry.set_state("east", ClusterState.STALE, now=5.0)
    fed.sync()
    assert clusters_answered(fed, addr=EAST_A) == {"west"}


# --- freshness and stale serving -----------------------------------------------------------------


def lose(fed: Federation, *clusters: str, at: float = 5.0) -> None:
    for c in clusters:
        fed.registry.set_state(c, ClusterState.STALE, now=at)
    fed.sync()  # long after every transition: no damping


STALE = [
    # (clusters stale, client, clusters answered, stale?)
    pytest.param(("east",), EAST_A, {"west", "south"}, False,
                 id="a stale cluster yields to fresh ones, even in a farther tier"),
    pytest.param(("east", "west", "south"), EAST_A, {"north"}, False,
                 id="fresh data in another region beats stale data next door"),
    pytest.param(tuple(ALL), EAST_A, {"east"}, True,
                 id="no fresh candidate: stale data answers, nearest tier first"),
    pytest.param(tuple(ALL), OUTSIDE, ALL, True, id="no fresh candidate: all stale, unknown"),
    pytest.param(("east", "west", "south"), NORTH, {"north"}, False,
                 id="a fresh client cluster is unaffected"),
]


@pytest.mark.parametrize(("stale", "client", "expected", "is_stale"), STALE)
def test_stale_clusters_answer_only_when_no_fresh_candidate_exists(
        stale: tuple[str, ...], client: str, expected: set[str], is_stale: bool) -> None:
    fed = located(webs())
    lose(fed, *stale)
    for full in (False, True):
        msg = query(fed.table, WEB, "A", addr=(client, 1), full=full)
        records = section(msg)
        assert {r.split()[-1] for r in records} == {CLUSTER_IP[c] for c in expected}
        assert {int(r.split()[1]) for r in records} == {30 if is_stale else 5}
        assert any(o.otype == dns.edns.OptionType.EDE for o in msg.options) is is_stale


def _ede(msg: dns.message.Message) -> list[int]:
    return [o.code for o in msg.options if isinstance(o, dns.edns.EDEOption)]


@pytest.mark.parametrize("full", [False, True], ids=["fast-path", "full-path"])
def test_a_stale_answer_has_the_stale_ttl_and_ede_3_for_edns_clients_only(full: bool) -> None:
    fed = located(webs(clusters=["east"]), selection={"stale_ttl": 7})
    lose(fed, "east")
    with_edns = query(fed.table, WEB, "A", addr=(EAST_A, 1), full=full)
    assert section(with_edns) == [f"{WEB} 7 IN A {CLUSTER_IP['east']}"]
    assert _ede(with_edns) == [3]  # RFC 8914 §4.4 Stale Answer, option code 15
    plain = query(fed.table, WEB, "A", addr=(EAST_A, 1), full=full, edns=False)
    assert section(plain) == [f"{WEB} 7 IN A {CLUSTER_IP['east']}"]
    assert plain.opt is None


def test_the_stale_ttl_defaults_to_30_and_fresh_answers_carry_no_ede() -> None:
    fed = located(webs(clusters=["east", "west"]))
    fresh = query(fed.table, WEB, "A", addr=(EAST_A, 1))
    assert section(fresh) == [f"{WEB} 5 IN A {CLUSTER_IP['east']}"]
    assert _ede(fresh) == []
    lose(fed, "east", "west")
    assert section(query(fed.table, WEB, "A", addr=(EAST_A, 1))) == \
        [f"{WEB} 30 IN A {CLUSTER_IP['east']}"]


def test_stale_srv_and_endpoint_names_are_stale_too() -> None:
    db = Service("data", "db", ServiceType.HEADLESS, ports=(Port("pg", 5432),),
                 endpoints=(Endpoint("10.1.0.1", hostname="db-0"),))
    fed = located({"east": [db, web("east")]})
    lose(fed, "east")
    srv = query(fed.table, DB, "SRV", addr=(EAST_A, 1))  # a zone-less endpoint: tier 1
    assert section(srv) == [f"{DB} 30 IN SRV 1 100 5432 db-0.east.{DB}"]
    assert section(srv, "additional") == [f"db-0.east.{DB} 30 IN A 10.1.0.1"]
    assert _ede(srv) == [3]
    name = query(fed.table, f"db-0.east.{DB}", "A")
    assert section(name) == [f"db-0.east.{DB} 30 IN A 10.1.0.1"]
    assert _ede(name) == [3]
    web_srv = query(fed.table, WEB, "SRV", addr=(EAST_A, 1))
    assert section(web_srv) == [f"{WEB} 30 IN SRV 0 100 80 {WEB}"]
    assert _ede(web_srv) == [3]


# --- flap damping --------------------------------------------------------------------------------

DAMPING = [
    # (state changes of east as (time, state), checks as (time, counts as fresh?))
    pytest.param([(100.0, "stale")], [(100.0, True), (102.9, True), (103.0, False)],
                 id="hold_down: a lost cluster counts for 3 s, then not"),
    pytest.param([(100.0, "stale"), (101.0, "fresh")],
                 [(101.0, True), (105.0, True), (111.0, True), (500.0, True)],
                 id="a blip inside hold_down never stops counting: nothing to readmit"),
    pytest.param([(100.0, "stale"), (110.0, "fresh")],
                 [(110.0, False), (115.0, False), (119.9, False), (120.0, True)],
                 id="readmit_after: back after the hold-down, counted 10 s later"),
    pytest.param([(100.0, "stale"), (103.0, "fresh")], [(103.0, False), (113.0, True)],
                 id="back exactly when the hold-down ends: readmitted"),
    pytest.param([(100.0, "stale"), (110.0, "fresh"), (130.0, "stale")],
                 [(131.0, True), (133.0, False)],
                 id="lost again once readmitted: a fresh hold-down"),
    pytest.param([(100.0, "stale"), (100.0 + 86400.0, "fresh")],
                 [(100.0 + 86405.0, False), (100.0 + 86410.0, True)],
                 id="back after a long outage: readmitted like any other"),
]


def _damped(changes: Sequence[tuple[float, str]], checks: Sequence[tuple[float, bool]],
            **selection: float) -> list[tuple[float, bool]]:
    """Whether east counts as fresh at each check, its state changes applied in time order.

    Counting as fresh shows as east being the only cluster answered to a client in east.
    """
    fed = located(webs(clusters=["east", "west"]), selection=selection)
    pending = sorted(changes)
    out = []
    for at, _ in sorted(checks):
        while pending and pending[0][0] <= at:
            when, state = pending.pop(0)
            fed.registry.set_state("east", ClusterState(state), now=when)
        fed.registry.touch("east")  # what the app's damping timer does
        fed.sync(now=at)
        out.append((at, clusters_answered(fed, addr=EAST_A) == {"east"}))
    return out


@pytest.mark.parametrize(("changes", "checks"), DAMPING)
def test_flap_damping_of_a_clusters_freshness(
        changes: list[tuple[float, str]], checks: list[tuple[float, bool]]) -> None:
    assert _damped(changes, checks) == checks


DAMPING_SETTINGS = [
    pytest.param({"hold_down": 0.0}, [(100.0, "stale")], [(100.0, False)],
                 id="hold_down 0: a lost cluster stops counting at once"),
    pytest.param({"hold_down": 30.0}, [(100.0, "stale")], [(129.0, True), (130.0, False)],
                 id="hold_down 30"),
    pytest.param({"readmit_after": 0.0}, [(100.0, "stale"), (110.0, "fresh")],
                 [(110.0, True)], id="readmit_after 0: a recovered cluster counts at once"),
    pytest.param({"readmit_after": 60.0}, [(100.0, "stale"), (110.0, "fresh")],
                 [(169.0, False), (170.0, True)], id="readmit_after 60"),
]


@pytest.mark.parametrize(("selection", "changes", "checks"), DAMPING_SETTINGS)
def test_flap_damping_follows_the_selection_settings(
        selection: dict[str, float], changes: list[tuple[float, str]],
        checks: list[tuple[float, bool]]) -> None:
    assert _damped(changes, checks, **selection) == checks


def test_a_cluster_lost_again_while_readmitting_does_not_count() -> None:
    checks = [(112.5, False), (113.5, False), (122.0, False), (124.0, True)]
    changes = [(100.0, "stale"), (110.0, "fresh"), (112.0, "stale"), (113.0, "fresh")]
    assert _damped(changes, checks) == checks


def test_next_change_says_when_damping_flips_by_time_alone() -> None:
    damping = Damping(hold_down=3.0, readmit_after=10.0)
    lost = ClusterEntry("east", ClusterState.STALE, fresh_since=1.0, lost_since=100.0)
    assert next_change(lost, now=101.0, damping=damping) == 103.0
    assert next_change(lost, now=104.0, damping=damping) is None
    back = ClusterEntry("east", ClusterState.FRESH, fresh_since=110.0, lost_since=100.0)
    assert next_change(back, now=111.0, damping=damping) == 120.0
    blip = ClusterEntry("east", ClusterState.FRESH, fresh_since=101.0, lost_since=100.0)
    assert next_change(blip, now=101.0, damping=damping) is None
    assert is_fresh(blip, now=101.0, damping=damping)
    never = ClusterEntry("east", ClusterState.FRESH, fresh_since=1.0)
    assert is_fresh(never, now=1.0, damping=damping)
    assert next_change(never, now=1.0, damping=damping) is None
    warm = ClusterEntry("east", ClusterState.STALE)  # stale since start: never fresh
    assert not is_fresh(warm, now=0.0, damping=damping)


# --- self-isolation is not failover ---------------------------------------------------------


def _history(changes: dict[str, list[tuple[float, str]]]) -> list[ClusterEntry]:
    """Entries that became fresh at 1 s, then went through ``changes`` (time, state)."""
    out = []
    for name in ("a", "b", "c", "d"):
        entry = ClusterEntry(name, ClusterState.FRESH, fresh_since=1.0,
                             transitions=[(1.0, ClusterState.FRESH)])
        for at, state in changes.get(name, []):
            entry.transitions.append((at, ClusterState(state)))
            entry.state = ClusterState(state)
        out.append(entry)
    return out


DAMP = Damping(hold_down=3.0, readmit_after=10.0)
ISO = Isolation(window=5.0, fraction=0.5, max_hold=120.0)

ISOLATION = [
    # (losses and recoveries per cluster, check time, expected episode members or None)
    pytest.param({"a": [(10.0, "stale")]}, 20.0, None, id="one loss is ordinary failover"),
    pytest.param({"a": [(10.0, "stale")], "b": [(10.1, "stale")]}, 10.05, None,
                 id="before the second loss nothing is suspected"),
    pytest.param({"a": [(10.0, "stale")], "b": [(10.1, "stale")]}, 10.1, None,
                 id="two of four lost is not more than half"),
    pytest.param({"a": [(10.0, "stale")], "b": [(10.1, "stale")], "c": [(10.4, "stale")]},
                 20.0, {"a", "b", "c"}, id="three of four lost within the window"),
    pytest.param({"a": [(10.0, "stale")], "b": [(10.1, "stale")], "c": [(10.4, "stale")]},
                 10.4, {"a", "b", "c"}, id="suspected at once, while every loss is in hold-down"),
    pytest.param({"a": [(10.0, "stale")], "b": [(16.0, "stale")], "c": [(22.0, "stale")]},
                 30.0, None, id="losses further apart than the window are separate failures"),
    pytest.param({"a": [(10.0, "stale")], "b": [(10.1, "stale")], "c": [(10.2, "stale")]},
                 10.0 + 120.5, None, id="max_hold ends it"),
    pytest.param({"a": [(10.0, "stale")], "b": [(10.1, "stale")], "c": [(10.2, "stale")],
                  "d": [(40.0, "stale")]}, 50.0, {"a", "b", "c", "d"},
                 id="a loss during an episode joins it"),
    pytest.param({"a": [(10.0, "stale"), (30.0, "fresh")], "b": [(10.1, "stale"), (31.0, "fresh")],
                  "c": [(10.2, "stale"), (32.0, "fresh")]}, 41.0, {"a", "b", "c"},
                 id="it lasts while a member is still being readmitted"),
    pytest.param({"a": [(10.0, "stale"), (30.0, "fresh")], "b": [(10.1, "stale"), (31.0, "fresh")],
                  "c": [(10.2, "stale"), (32.0, "fresh")]}, 42.0, None,
                 id="it ends when every member counts as fresh again"),
    pytest.param({"d": [(2.0, "stale")], "a": [(10.0, "stale")], "b": [(10.1, "stale")]}, 20.0,
                 {"a", "b"}, id="a cluster lost long before is not part of the population"),
]


@pytest.mark.parametrize(("changes", "at", "expected"), ISOLATION)
def test_self_isolation_episodes(changes: dict[str, list[tuple[float, str]]], at: float,
                                 expected: set[str] | None) -> None:
    episode = isolation_episode(_history(changes), now=at, damping=DAMP, isolation=ISO)
    assert (set(episode.members) if episode is not None else None) == expected


def test_a_held_cluster_counts_as_fresh_but_is_marked_held_after_its_hold_down() -> None:
    entries = _history({"a": [(10.0, "stale")], "b": [(10.1, "stale")],
                        "c": [(10.2, "stale")]})
    during = cluster_freshness(entries, now=12.0, damping=DAMP, isolation=ISO)
    assert {n: tuple(f) for n, f in during.items()} == {
        "a": (True, False), "b": (True, False), "c": (True, False), "d": (True, False)}
    after = cluster_freshness(entries, now=14.0, damping=DAMP, isolation=ISO)
    assert {n: tuple(f) for n, f in after.items()} == {
        "a": (True, True), "b": (True, True), "c": (True, True), "d": (True, False)}
    off = cluster_freshness(entries, now=14.0, damping=DAMP,
                            isolation=Isolation(fraction=1.0))
    assert [n for n, f in off.items() if f.fresh] == ["d"]


def test_losing_every_cluster_within_the_window_never_narrows_the_answer() -> None:
    """Losses 0.4 s apart used to leave only the last-lost cluster answered, TTL 5."""
    fed = located(webs(clusters=["east", "west", "north"]))
    losses = {"east": 100.0, "west": 100.4, "north": 100.8}
    seen = set()
    at = 99.0
    while at < 120.0:
        for cluster, lost_at in losses.items():
            entry = fed.registry.clusters[cluster]
            if lost_at <= at and entry.state is ClusterState.FRESH:
                fed.registry.set_state(cluster, ClusterState.STALE, now=lost_at)
        for cluster in losses:
            fed.registry.touch(cluster)  # what the app's timers and isolation check do
        fed.sync(now=at)
        msg = query(fed.table, WEB, "A")
        seen.add((frozenset(r.split()[-1] for r in section(msg)),
                  frozenset(int(r.split()[1]) for r in section(msg))))
        at += 0.1
    assert {addrs for addrs, _ in seen} == {frozenset(CLUSTER_IP[c] for c in losses)}
    assert {ttls for _, ttls in seen} == {frozenset({5}), frozenset({30})}


# --- none healthy --------------------------------------------------------------------------------

NONE_HEALTHY = [
    # (selection.none_healthy, per-service override, expected for A)
    pytest.param(None, None, Case(WEB, "A", authority=NEG), id="default: fail-closed NODATA+SOA"),
    pytest.param("fail-closed", None, Case(WEB, "A", authority=NEG), id="fail-closed"),
    pytest.param("servfail", None, Case(WEB, "A", rcode="SERVFAIL", aa=False), id="servfail"),
    pytest.param("fail-open", None, Case(WEB, "A", answer=(f"{WEB} 5 IN A 10.96.1.10",)),
                 id="fail-open: the last known addresses, nearest tier"),
    pytest.param("fail-closed", "servfail", Case(WEB, "A", rcode="SERVFAIL", aa=False),
                 id="a per-service override beats the global choice"),
    pytest.param("servfail", "fail-open", Case(WEB, "A", answer=(f"{WEB} 5 IN A 10.96.1.10",)),
                 id="per-service fail-open"),
]


@pytest.mark.parametrize(("choice", "override", "case"), NONE_HEALTHY)
def test_the_none_healthy_choice_applies_when_nothing_is_answerable(
        choice: str | None, override: str | None, case: Case) -> None:
    overrides: dict[str, object] = {}
    if choice:
        overrides["selection"] = {"none_healthy": choice}
    if override:
        overrides["services"] = [{"namespace": "shop", "name": "web", "none_healthy": override}]
    fed = located(webs(ALL), **overrides)
    for full in (False, True):
        check(fed.table, case, full=full, addr=(EAST_A, 1))


def test_fail_open_answers_every_last_known_address_for_an_unknown_client() -> None:
    fed = located(webs(ALL), selection={"none_healthy": "fail-open"})
    assert clusters_answered(fed, addr=OUTSIDE) == ALL
    db = Service("data", "db", ServiceType.HEADLESS, endpoints=(
        Endpoint("10.1.0.1", ready=False, serving=False),))
    assert addresses(located({"east": [db]}, selection={"none_healthy": "fail-open"}), DB) == \
        {"10.1.0.1"}


def test_none_healthy_applies_to_srv_as_well() -> None:
    closed = located(webs(ALL))
    check(closed.table, Case(WEB, "SRV", authority=NEG), addr=(EAST_A, 1))
    failing = located(webs(ALL), selection={"none_healthy": "servfail"})
    check(failing.table, Case(WEB, "SRV", rcode="SERVFAIL", aa=False), addr=(EAST_A, 1))


# --- expiry --------------------------------------------------------------------------------------


def expired(**kw: object) -> Federation:
    db = Service("data", "db", ServiceType.HEADLESS, ports=(Port("pg", 5432),),
                 endpoints=(Endpoint("10.1.0.1", hostname="db-0"),))
    fed = located({"east": [web("east"), db], "west": [web("west")]}, **kw)
    # Both sources were last known fresh at 10 s (a probe, a bookmark), then lost.
    fed.registry.confirm("east", now=10.0)
    fed.registry.confirm("west", now=10.0)
    fed.registry.set_state("east", ClusterState.STALE, now=10.0)
    fed.registry.set_state("west", ClusterState.STALE, now=10.0)
    fed.sync(now=20.0)
    return fed


def test_stale_data_answers_until_max_stale_then_a_name_with_nothing_left_is_servfail() -> None:
    fed = expired(freshness={"max_stale": 600})
    assert fed.registry.expire(now=610.0, max_stale=600) == []  # not more than max_stale
    fed.sync(now=610.0)
    assert section(query(fed.table, DB, "A")) == [f"{DB} 30 IN A 10.1.0.1"]
    assert fed.registry.expire(now=610.5, max_stale=600) == ["east", "west"]
    fed.sync(now=610.5)
    for qname, qtype in ((WEB, "A"), (WEB, "AAAA"), (WEB, "SRV"), (DB, "A"), (DB, "SRV"),
                         (f"_explain.{WEB}", "TXT")):
        for full in (False, True):
            check(fed.table, Case(qname, qtype, rcode="SERVFAIL", aa=False), full=full)


def test_after_one_cluster_expires_the_others_still_answer() -> None:
    fed = located(webs(clusters=["east", "west"]))
    fed.registry.set_state("east", ClusterState.STALE, now=10.0)
    fed.registry.expire(now=10.0 + 86401.0, max_stale=86400.0)
    fed.sync(now=10.0 + 86401.0)
    assert clusters_answered(fed, addr=EAST_A) == {"west"}
    lines = [b"".join(rd.strings).decode() for rrset in
             query(fed.table, f"_explain.{WEB}", "TXT").answer for rd in rrset]
    assert not any(line.startswith("east ") for line in lines)


@pytest.mark.parametrize(("qname", "qtype"), [(f"_http._tcp.{WEB}", "SRV"),
                                              (f"_pg._tcp.{DB}", "SRV"),
                                              (f"db-0.east.{DB}", "A")])
def test_expired_port_and_endpoint_names_are_servfail_never_nxdomain(qname: str,
                                                                      qtype: str) -> None:
    fed = expired()
    fed.registry.expire(now=10.0 + 86401.0, max_stale=86400.0)
    fed.sync(now=10.0 + 86401.0)
    check(fed.table, Case(qname, qtype, rcode="SERVFAIL", aa=False))
