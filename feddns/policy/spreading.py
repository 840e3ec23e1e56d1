"""Answers that reach beyond the nearest tier: shares, and capacity-aware locality.

Why it exists: the nearest tier takes everything by default, which is what most
services want, but two moves platform teams make cross tiers (issue #13):

* **shares**, a migration as operators say it: "10 % of every client's answers
  from west.prod", whatever tier west.prod is for that client
  (:func:`with_shares`). The rest keep following locality and weights.
* **capacity-aware locality** (:func:`allocate`): a tier keeps its clients only
  while it has the capacity for them. Capacity is ready endpoints; demand is
  each client place's share of the queries feddns answered (measured by the
  runtime, handed in as :class:`Demand`). Tiers are filled nearest first, for
  every place at once, each candidate up to its capacity's share of the
  federation's demand plus ``overload``; what a tier cannot hold spills to the
  next tier in proportion to capacity. Kubernetes' topology-aware routing
  allocates the same way within one cluster (KEP-2433: proportional to zone
  capacity, with an overload threshold).

Both produce, for one client place, how often each candidate should lead an
answer; :mod:`.selection` turns that into record orders. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from feddns.policy.candidates import Candidate, CandidateKey, tier
from feddns.policy.locality import Place

MAX_ROUNDS = 8
"""Rounds of filling per tier: a round re-offers capacity a place's cut-short request
left elsewhere in the tier (bounded; a few rounds settle it)."""
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Demand:
    """Where the queries come from: each client place's share of them (summing to 1).

    Quantized by whoever builds it (the runtime rounds to whole percents), so a
    recompile with an unchanged demand gives equal plans and keeps the SOA serial.
    """

    places: tuple[tuple[Place, float], ...] = ()


Allocation = tuple[tuple[CandidateKey, float], ...]
"""For one client place: each candidate's share of the place's demand (summing to 1)."""


def with_shares(pool: Sequence[tuple[Candidate, float]], best: Sequence[Candidate],
                shares: Sequence[tuple[str, float]]) -> list[tuple[Candidate, float]]:
    """``pool`` (candidates and their share of first records) with ``shares`` given away.

    ``shares`` are (cluster, percent) pairs: that cluster leads that percent of the
    answers, drawn from ``best`` (the candidates at the answer's health level, any
    tier; a drained one, weight 0, gets nothing). A cluster with no such candidate
    gives its share back to ``pool``. The result keeps ``pool``'s order, then the
    shared clusters' candidates; the shares sum to 1.
    """
    total = sum(w for _, w in pool)
    order = {c.key: c for c, _ in pool}
    weights: dict[CandidateKey, float] = {}
    given = 0.0
    for cluster, percent in shares:
        members = [c for c in best if c.cluster == cluster and c.weight > 0]
        part = min(max(percent, 0.0) / 100, 1.0 - given)
        if not members or part <= 0:
            continue
        given += part
        weight = sum(c.weight for c in members)
        for c in members:
            order.setdefault(c.key, c)
            weights[c.key] = weights.get(c.key, 0.0) + part * c.weight / weight
    rest = 1.0 - given
    for c, w in pool:
        weights[c.key] = weights.get(c.key, 0.0) + rest * (
            w / total if total > 0 else 1 / len(pool))
    return [(c, weights[k]) for k, c in order.items() if weights.get(k, 0.0) > EPSILON]


def allocate(candidates: Sequence[Candidate], demand: Demand, *,
             overload: float) -> dict[Place, Allocation]:
    """Each client place's demand spread over ``candidates``, nearest tier first.

    A candidate takes at most ``capacity / total capacity * (1 + overload)`` of
    all the demand. Tiers are filled in order (0 to 3) for every place at once,
    so one place's farther tier never takes capacity another place's nearer tier
    needs; within a tier a place asks each candidate in proportion to its
    capacity. Demand no tier can hold (everything over the limit) is spread over
    every candidate in proportion to capacity. Places without demand are left
    out: they follow plain locality.
    """
    caps = [max(c.capacity, 0.0) for c in candidates]
    total_capacity = sum(caps)
    total_demand = sum(max(d, 0.0) for _, d in demand.places)
    if total_capacity <= 0 or total_demand <= 0:
        return {}
    share = {p: d / total_demand for p, d in demand.places if d > 0}
    budget = [cap / total_capacity * (1 + overload) for cap in caps]
    remaining = dict(share)
    granted: dict[Place, list[float]] = {p: [0.0] * len(caps) for p in share}
    tiers = {p: [tier(c, p) for c in candidates] for p in share}
    for t in range(4):
        for _ in range(MAX_ROUNDS):
            asks: dict[Place, dict[int, float]] = {}
            wanted = [0.0] * len(caps)
            for p, left in remaining.items():
                if left <= EPSILON:
                    continue
                near = [i for i, ti in enumerate(tiers[p])
                        if ti == t and budget[i] > EPSILON and caps[i] > 0]
                room = sum(caps[i] for i in near)
                if not near or room <= 0:
                    continue
                asks[p] = {i: left * caps[i] / room for i in near}
                for i, amount in asks[p].items():
                    wanted[i] += amount
            if not asks:
                break
            ratio = [min(1.0, budget[i] / wanted[i]) if wanted[i] > 0 else 0.0
                     for i in range(len(caps))]
            for p, ask in asks.items():
                for i, amount in ask.items():
                    got = amount * ratio[i]
                    granted[p][i] += got
                    remaining[p] -= got
                    budget[i] -= got
    out: dict[Place, Allocation] = {}
    for p, s in share.items():
        left = max(remaining[p], 0.0)
        shares = [(g + left * caps[i] / total_capacity) / s for i, g in enumerate(granted[p])]
        out[p] = tuple((candidates[i].key, round(v, 6)) for i, v in enumerate(shares)
                       if v > EPSILON)
    return out


def load_ratios(candidates: Sequence[Candidate], demand: Demand,
                allocation: Mapping[Place, Allocation]) -> dict[CandidateKey, float]:
    """Each candidate's demand over capacity, relative to the federation's (1: even).

    What the allocation would give with every place's answers following it: the
    figure ``bench.capacity_spill`` reports, and a check of :func:`allocate`.
    """
    caps = {c.key: max(c.capacity, 0.0) for c in candidates}
    total_capacity = sum(caps.values())
    total_demand = sum(d for _, d in demand.places)
    load = dict.fromkeys(caps, 0.0)
    for p, d in demand.places:
        for key, fraction in allocation.get(p, ()):
            load[key] += d / total_demand * fraction
    return {k: (load[k] / (caps[k] / total_capacity)) if caps[k] > 0 else 0.0 for k in caps}
