"""The chaos harness's verifier judges synthetic answers as its definition says (issue #12).

The harness (``bench/chaos.py``) can only find wrong answers if its verifier flags
them; these cases feed it hand-made timelines and answers, wrong ones among them,
so a verifier that accepts everything fails here rather than passing a run.
"""

from __future__ import annotations

import pytest

from bench.chaos_verifier import (
    Knowledge,
    Observation,
    ServiceSpec,
    Timeline,
    Timers,
    Truth,
    Verifier,
    World,
)

CLUSTERS = ("east", "west", "north")
WEB = {c: f"10.96.{i}.1" for i, c in enumerate(CLUSTERS, start=1)}
SOLO = "10.96.3.4"


def steady(direct: dict[str, tuple[str, ...]] | None = None) -> Verifier:
    """Every API server, both brokers and both instances up from time 0.

    ``web`` is in every cluster and ``solo`` in ``north``, each with a ready endpoint.
    """
    world = World(Timers(), clusters=CLUSTERS, brokers=("b1", "b2"),
                  direct=direct or {"A": CLUSTERS, "B": ("north",)})
    for b in ("b1", "b2"):
        world.set_broker(b, "up", 0.0)
    for i in world.instances:
        world.set_proc(i, "running", 0.0)
    truth = Truth()
    for n, c in enumerate(CLUSTERS, start=1):
        truth.update(c, "web", ServiceSpec(False, {4: WEB[c]}, {f"10.{n}.1.1": True}), 0.0)
    truth.update("north", "solo", ServiceSpec(False, {4: SOLO}, {"10.3.4.1": True}), 0.0)
    verifier = Verifier(world, truth, Knowledge(world, truth))
    for t in range(0, 200, 1):
        verifier.knowledge.tick(float(t))
    return verifier


def ask(v: Verifier, t: float, rcode: str, *records: tuple[str, int], service: str = "web",
        target: str = "A", ede: frozenset[int] = frozenset()) -> list[str]:
    for x in range(int(t) - 5, int(t) + 1):
        v.knowledge.tick(float(x))
    obs = Observation(t, t + 0.01, target, "udp", f"{service}.shop.svc.clusterset.local.",
                      service, "A", rcode, tuple(records), ede)
    return [w.rule for w in v.check(obs)]


def fresh_answer() -> list[tuple[str, int]]:
    return [(WEB[c], 5) for c in CLUSTERS]


def test_the_whole_fresh_answer_is_right() -> None:
    assert ask(steady(), 150.0, "NOERROR", *fresh_answer()) == []


def test_nxdomain_for_a_name_that_exists_is_wrong() -> None:
    assert ask(steady(), 150.0, "NXDOMAIN") == ["nxdomain-known-name"]


def test_servfail_for_a_known_name_is_wrong_even_for_a_name_one_cluster_has() -> None:
    assert "servfail-known-name" in ask(steady(), 150.0, "SERVFAIL", service="solo")


def test_an_address_of_no_such_service_is_wrong() -> None:
    assert ask(steady(), 150.0, "NOERROR", *fresh_answer(), (SOLO, 5)) == ["bogus-address"]


def test_a_missing_fresh_cluster_is_wrong() -> None:
    rules = ask(steady(), 150.0, "NOERROR", (WEB["east"], 5), (WEB["west"], 5))
    assert rules == ["missing-fresh-address"]


def test_a_dead_clusters_address_while_others_are_fresh_is_wrong() -> None:
    v = steady()
    v.world.set_api("east", "refused", 200.0)
    assert ask(v, 220.0, "NOERROR", *fresh_answer()) == ["dead-cluster-address"]
    # Within detection + hold-down + margin it may still be answered.
    v2 = steady()
    v2.world.set_api("east", "refused", 200.0)
    assert ask(v2, 205.0, "NOERROR", *fresh_answer()) == []


def test_a_possible_self_isolation_suspends_the_failover_rules_but_not_the_others() -> None:
    v = steady()
    v.world.set_api("east", "partitioned", 200.0)
    v.world.set_api("west", "partitioned", 203.0)
    assert ask(v, 230.0, "NOERROR", (WEB["east"], 30), (WEB["west"], 30), (WEB["north"], 5),
               ede=frozenset({3})) == []
    assert ask(v, 231.0, "NXDOMAIN") == ["nxdomain-known-name"]
    # Lost far apart, they are two failovers, not an isolation.
    v2 = steady()
    v2.world.set_api("east", "partitioned", 200.0)
    v2.world.set_api("west", "refused", 215.0)
    assert ask(v2, 232.0, "NOERROR", (WEB["east"], 30), (WEB["west"], 30), (WEB["north"], 5),
               ede=frozenset({3})) == ["dead-cluster-address", "dead-cluster-address",
                                       "stale-while-fresh"]


def test_a_stale_answer_is_right_when_nothing_fresh_can_answer_and_must_be_signalled() -> None:
    v = steady()
    v.world.set_api("north", "refused", 200.0)
    assert ask(v, 220.0, "NOERROR", (SOLO, 30), service="solo", ede=frozenset({3})) == []
    assert ask(v, 221.0, "NOERROR", (SOLO, 30), service="solo") == ["unsignalled-stale"]


def test_expired_data_never_answers_and_its_name_may_then_servfail() -> None:
    v = steady()
    v.world.set_api("north", "refused", 200.0)
    assert ask(v, 250.0, "NOERROR", (SOLO, 30), service="solo",
               ede=frozenset({3})) == ["expired-answer"]
    assert ask(v, 251.0, "SERVFAIL", service="solo") == []


def test_an_address_that_left_a_current_cluster_is_obsolete() -> None:
    v = steady()
    v.truth.update("east", "web", ServiceSpec(False, {4: WEB["east"]}, {"10.1.1.1": False}),
                   200.0)
    assert ask(v, 203.0, "NOERROR", *fresh_answer()) == []  # within the sync budget
    assert ask(v, 220.0, "NOERROR", *fresh_answer()) == ["obsolete-address"]


def test_a_name_created_while_its_cluster_was_down_may_be_nxdomain() -> None:
    v = steady()
    v.world.set_api("north", "refused", 200.0)
    v.truth.update("north", "late", ServiceSpec(False, {4: "10.97.0.1"}, {"10.98.0.1": True}),
                   210.0)
    assert ask(v, 230.0, "NXDOMAIN", service="late") == []


def test_a_sigkill_forgets_what_the_last_snapshot_cannot_hold() -> None:
    v = steady()
    v.truth.update("east", "new", ServiceSpec(False, {4: "10.97.0.2"}, {"10.98.0.2": True}),
                   200.0)
    for t in range(200, 211):
        v.knowledge.tick(float(t))
    v.knowledge.stopped("A", 211.0)
    assert not v.knowledge.known_at("A", "new", 212.0, 212.0)
    assert v.knowledge.known_at("A", "web", 212.0, 212.0)


@pytest.mark.parametrize(("since", "wrong"), [(150.0, True), (298.0, False)])
def test_through_a_resolver_nxdomain_is_wrong_only_past_the_negative_ttl(
        since: float, wrong: bool) -> None:
    v = steady()
    v.knowledge.since["B"]["web"] = since
    rules = ask(v, 300.0, "NXDOMAIN", target="resolver:B")
    assert ("resolver-nxdomain-known-name" in rules) is wrong


def test_a_timeline_tells_values_and_since_when() -> None:
    line = Timeline("up")
    line.set(10.0, "down")
    line.set(20.0, "up")
    assert line.at(15.0) == "down"
    assert line.since(25.0) == ("up", 20.0)
    assert line.last_with("down", 25.0) == 20.0
    assert [v for _, _, v in line.segments(5.0, 12.0)] == ["up", "down"]
