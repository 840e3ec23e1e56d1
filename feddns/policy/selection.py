"""Which candidates a client gets: tiers by distance, weights, residency, fallbacks.

Why it exists: this is the decision at the heart of feddns, kept in one pure
module (no I/O, no clock) and shared by every name that answers addresses.

1. *Residency* first: a candidate outside a service's allowed regions is
   never answered, not even when failing over.
2. *Health level* next (see :mod:`feddns.policy.health`): the best level any
   allowed candidate has wins (fresh ready, then fresh serving-terminating,
   then stale ready, then stale serving-terminating). Weight 0 (a drained
   cluster) ranks below every positive weight of the same level.
3. *Tier* then: the nearest tier that has candidates at that level (same zone
   of the same cluster, then same cluster or same zone, then same region,
   then the rest). SRV keeps every tier, with the tier as priority. With
   capacity-aware locality, the place's allocation across tiers instead
   (:mod:`feddns.policy.spreading`).
4. *Shares*: clusters with a share lead that percent of every answer, any tier.
5. *Weights* last: within the tier the order of the records is rotated so the
   first record follows the weights (default: each cluster's ready-endpoint
   count, so spare capacity attracts traffic), and at most ``cap`` records go
   in one answer (``subset`` records in the answer mode that survives caches).

When nothing is answerable the service's ``none_healthy`` choice applies.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from feddns.policy.candidates import TIER_NAMES, Candidate, CandidateKey, tier
from feddns.policy.health import Level
from feddns.policy.locality import Place
from feddns.policy.spreading import with_shares

__all__ = ["MAX_VARIANTS", "TIER_NAMES", "Candidate", "NoneHealthy", "Selection", "Verdict",
           "choose", "rotations", "srv_targets", "tier"]

MAX_VARIANTS = 64
"""Most distinct record orders per answer (bounds memory; weight resolution 1/64)."""



class NoneHealthy(enum.StrEnum):
    """What a name answers when no candidate is healthy, fresh or stale."""

    FAIL_CLOSED = "fail-closed"
    """NODATA with the SOA: the default, as KEP-1645 answers only ready endpoints and
    kube-proxy would refuse connections to a service with none anyway."""
    FAIL_OPEN = "fail-open"
    """Answer the last known addresses anyway (like Envoy's panic mode)."""
    SERVFAIL = "servfail"
    """SERVFAIL: resolvers try elsewhere and do not cache a denial."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What happened to one candidate for one client (for the explain record)."""

    candidate: Candidate
    tier: int
    chosen: bool
    reason: str
    share: float | None = None
    """For a chosen candidate: the fraction of answers it leads for this client."""


@dataclass(frozen=True, slots=True)
class Selection:
    """The outcome for one client place."""

    variants: tuple[tuple[Candidate, ...], ...]
    """Record orders to rotate through (empty when nothing is answered)."""
    level: Level | None
    tier: int | None
    verdicts: tuple[Verdict, ...] = ()

    @property
    def stale(self) -> bool:
        """True when the answer comes from stale data (stale TTL, EDE 3).

        That includes data of clusters held by a self-isolation episode.
        """
        if self.level is not None and self.level in (Level.STALE, Level.STALE_LAST_RESORT):
            return True
        return any(c.held for variant in self.variants for c in variant)


def _rank(c: Candidate) -> tuple[int, int]:
    return (int(c.level), 0 if c.weight > 0 else 1)


def choose(
    candidates: Sequence[Candidate],
    place: Place,
    *,
    cap: int,
    regions: frozenset[str] | None = None,
    none_healthy: NoneHealthy = NoneHealthy.FAIL_CLOSED,
    shares: Sequence[tuple[str, float]] = (),
    spread: Mapping[CandidateKey, float] | None = None,
    subset: int | None = None,
) -> Selection:
    """Select the answer for a client at ``place`` (see the module docstring).

    ``spread`` is the place's capacity-aware allocation (each candidate's share of its
    demand, across tiers; :func:`~feddns.policy.spreading.allocate`), used instead of
    the nearest tier when it names a candidate at the answer's level; ``shares`` then
    give clusters their percent of the answers (:func:`~feddns.policy.spreading.
    with_shares`). ``subset`` cuts every answer to that many records (the answer mode
    that survives caches: each response a weighted subset, not an ordered full set).
    """
    verdicts: list[Verdict] = []
    allowed: list[Candidate] = []
    for c in candidates:
        if regions is not None and c.region not in regions:
            verdicts.append(Verdict(c, tier(c, place), False, "outside the allowed regions"))
        else:
            allowed.append(c)
    usable = [c for c in allowed if c.level is not Level.UNHEALTHY]
    if not usable and none_healthy is NoneHealthy.FAIL_OPEN:
        usable = allowed
    if not usable:
        for c in allowed:
            verdicts.append(Verdict(c, tier(c, place), False, "not healthy"))
        return Selection((), None, None, tuple(verdicts))
    best = min(_rank(c) for c in usable)
    level_pool = [c for c in usable if _rank(c) == best]
    nearest = min(tier(c, place) for c in level_pool)
    pool = [c for c in level_pool if tier(c, place) == nearest]
    weighted: list[tuple[Candidate, float]] | None = None
    if spread:
        allotted = [(c, spread.get(c.key, 0.0)) for c in level_pool]
        weighted = [(c, w) for c, w in allotted if w > 0] or None
    if shares:
        weighted = with_shares(weighted or [(c, c.weight) for c in pool], level_pool, shares)
    if weighted is not None:
        pool = [c for c, _ in weighted]
        nearest = min(tier(c, place) for c in pool)
    total = sum(w for _, w in weighted) if weighted is not None else \
        sum(c.weight for c in pool)
    lead = {id(c): w for c, w in weighted} if weighted is not None else \
        {id(c): c.weight for c in pool}
    for c in allowed:
        t = tier(c, place)
        if id(c) in lead:
            share = lead[id(c)] / total if total > 0 else 1 / len(pool)
            verdicts.append(Verdict(c, t, True, "chosen", share))
        elif c.level is Level.UNHEALTHY and c not in usable:
            verdicts.append(Verdict(c, t, False, "not healthy"))
        elif _rank(c) != best:
            why = "drained (weight 0)" if c.weight <= 0 and _rank(c)[0] == best[0] else \
                f"{c.level.name.lower().replace('_', ' ')}: a better level exists"
            verdicts.append(Verdict(c, t, False, why))
        elif spread and c.key in spread:
            verdicts.append(Verdict(c, t, False, "no share of this place's demand"))
        else:
            verdicts.append(Verdict(c, t, False, f"farther ({TIER_NAMES[t]})"))
    level = Level(best[0]) if none_healthy is not NoneHealthy.FAIL_OPEN or \
        any(c.level is not Level.UNHEALTHY for c in pool) else Level.UNHEALTHY
    ordered = pool if weighted is None else [replace(c, weight=w) for c, w in weighted]
    return Selection(rotations(ordered, cap=min(cap, subset) if subset else cap), level,
                     nearest, tuple(verdicts))


def srv_targets(
    candidates: Sequence[Candidate],
    place: Place,
    *,
    cap: int,
    regions: frozenset[str] | None = None,
    none_healthy: NoneHealthy = NoneHealthy.FAIL_CLOSED,
) -> tuple[list[tuple[Candidate, int, int]], Level | None]:
    """SRV targets across all tiers: ``(candidate, priority = tier, weight)``, capped.

    Only the best health level is kept (a stale target never sits beside a
    fresh one); SRV weights are the candidates' weights, the heaviest scaled to 100.
    """
    allowed = [c for c in candidates if regions is None or c.region in regions]
    usable = [c for c in allowed if c.level is not Level.UNHEALTHY]
    if not usable and none_healthy is NoneHealthy.FAIL_OPEN:
        usable = allowed
    if not usable:
        return [], None
    best = min(int(c.level) for c in usable)
    pool = [c for c in usable if int(c.level) == best]
    pool.sort(key=lambda c: (tier(c, place), c.weight <= 0, -c.weight))
    pool = pool[:cap]
    # Scaled so the heaviest target has 100 (equal weights read "0 100", as Lighthouse's
    # fixed 0/50 does not): only the ratios matter (RFC 2782).
    top = max((c.weight for c in pool), default=0.0)
    out = []
    for c in pool:
        weight = max(1, round(c.weight / top * 100)) if c.weight > 0 and top > 0 else 0
        out.append((c, tier(c, place), weight))
    return out, Level(best)


def _int_weights(weights: Sequence[float], total: int) -> list[int]:
    """Largest-remainder rounding of positive weights to integers summing to <= total."""
    s = sum(weights)
    raw = [w / s * total for w in weights]
    ints = [max(1, math.floor(r)) for r in raw]
    spare = total - sum(ints)
    order = sorted(range(len(raw)), key=lambda i: raw[i] - math.floor(raw[i]), reverse=True)
    for i in order[: max(spare, 0)]:
        ints[i] += 1
    g = 0
    for v in ints:
        g = math.gcd(g, v)
    return [v // g for v in ints] if g > 1 else ints


def swrr(weights: Sequence[int]) -> list[int]:
    """Smooth weighted round robin (nginx): the pick sequence over one full period."""
    current = [0] * len(weights)
    total = sum(weights)
    seq = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        seq.append(best)
    return seq


def rotations(pool: Sequence[Candidate], *, cap: int) -> tuple[tuple[Candidate, ...], ...]:
    """Record orders whose first element follows the weights; each at most ``cap`` long.

    Equal weights give plain round robin; more candidates than ``cap`` give
    windows, so every candidate is answered by some variant (up to the
    variant bound).
    """
    if not pool:
        return ()
    items = list(pool)
    positive = [c for c in items if c.weight > 0]
    drained = [c for c in items if c.weight <= 0]
    base = positive or drained
    rest = drained if positive else []
    n = len(base)
    if n == 1:
        return (tuple([*base, *rest][:cap]),)
    equal = len({c.weight for c in base}) == 1
    if equal:
        # Every candidate leads equally often (its share of first records is its
        # weight), spread evenly when there are more candidates than variants; the
        # windows of ``cap`` then cover every candidate while n <= cap * MAX_VARIANTS.
        k = min(n, MAX_VARIANTS)
        starts = [i * n // k for i in range(k)]
    else:
        starts = swrr(_int_weights([c.weight for c in base], MAX_VARIANTS))
    variants = []
    for start in starts:
        order = base[start:] + base[:start]
        variants.append(tuple((order + rest)[:cap]))
    return tuple(variants)
