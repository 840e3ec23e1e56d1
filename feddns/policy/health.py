"""Health of candidates: readiness levels, freshness, and flap damping of clusters.

Why it exists: which addresses may be answered depends on two signals that
fail differently, endpoint readiness (Kubernetes' own verdict) and cluster
freshness (whether feddns still hears from that cluster). Both are folded into
one ordered :class:`Level`, and cluster freshness is damped so that a blip in
a watch does not fail traffic over (k8gb fails over prematurely) and a
flapping cluster is not readmitted at once.

Self-isolation is not failover. When most clusters are lost within a short
window, the likelier story is that this instance lost its own connectivity
(its node's network, its egress), not that most of the federation died at
once; Kubernetes' node lifecycle controller reasons the same way and stops
evicting in a full disruption. Failing over in the order the losses were
noticed would narrow every answer to whichever cluster was lost last, for
the gap between the hold-downs' ends, with a fresh TTL that resolvers cache.
So while such an episode lasts (:func:`isolation_episode`), its clusters keep
counting as fresh: the answers stay as they were, signalled stale (stale TTL,
EDE 3) once a cluster's own hold-down is over (:func:`cluster_freshness`).
The episode ends when every one of them counts as fresh again, or after
``max_hold`` seconds, when ordinary failover resumes (a partial disruption
that lasts is taken to be real).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from feddns.model.registry import ClusterEntry, ClusterState


class Level(enum.IntEnum):
    """How good a candidate is; the answer uses the best level that has any."""

    READY = 0
    """Fresh data, endpoint ready."""
    LAST_RESORT = 1
    """Fresh data, nothing ready in that cluster but endpoints serving while terminating
    (KEP-1669: kube-proxy falls back to them too)."""
    STALE = 2
    """The cluster's source is lost; its last ready data (RFC 8767 stale answer)."""
    STALE_LAST_RESORT = 3
    """Stale data and only serving-terminating endpoints."""
    UNHEALTHY = 4
    """Nothing serving: answered only by the fail-open choice."""


@dataclass(frozen=True, slots=True)
class Damping:
    """Flap damping of cluster freshness."""

    hold_down: float = 3.0
    """A cluster lost for less than this still counts as fresh (absorbs watch blips)."""
    readmit_after: float = 10.0
    """A cluster that was lost must be fresh this long before it counts as fresh again."""


@dataclass(frozen=True, slots=True)
class Isolation:
    """When losses look like this instance's own isolation (see the module docstring)."""

    window: float = 5.0
    """Losses at most this many seconds apart count as one disruption."""
    fraction: float = 0.5
    """An episode starts when more than this fraction of the clusters counted fresh just
    before the window (and at least two) are lost within it. 1 turns it off."""
    max_hold: float = 120.0
    """Seconds after its start that an episode ends whatever happens."""


@dataclass(frozen=True, slots=True)
class Episode:
    """A suspected self-isolation: when it started and which clusters it holds."""

    start: float
    members: frozenset[str]


class Freshness(NamedTuple):
    """How one cluster counts at a moment."""

    fresh: bool
    """Counts as fresh for selection (damped; or held by a self-isolation episode)."""
    held: bool = False
    """Counts as fresh only because of a self-isolation episode: answered as before, but
    signalled stale (stale TTL, EDE 3)."""


Transition = tuple[float, ClusterState]


def _transitions(entry: ClusterEntry) -> list[Transition]:
    """The entry's recent fresh/stale transitions (rebuilt from its timestamps if absent)."""
    if entry.transitions:
        return list(entry.transitions)
    out: list[Transition] = []
    if entry.fresh_since is not None and entry.lost_since is not None:
        if entry.state is ClusterState.FRESH and entry.fresh_since >= entry.lost_since:
            # Fresh before the loss too (only the last loss and recovery are known).
            out = [(-math.inf, ClusterState.FRESH), (entry.lost_since, ClusterState.STALE),
                   (entry.fresh_since, ClusterState.FRESH)]
        else:
            out = [(entry.fresh_since, ClusterState.FRESH), (entry.lost_since, ClusterState.STALE)]
    elif entry.fresh_since is not None:
        out = [(entry.fresh_since, ClusterState.FRESH)]
    if entry.state in (ClusterState.SYNCING, ClusterState.EXPIRED):
        return []
    return out


def counted_steps(entry: ClusterEntry, damping: Damping) -> list[tuple[float, bool]]:
    """When the cluster starts or stops counting as fresh: ``(time, counts)`` steps.

    Replays the transitions: the first sync counts at once; a loss of a counted
    cluster stops it counting after the hold-down; a loss of a cluster that did
    not count (still waiting for readmission) stops it at once; a recovery within
    the hold-down of a counted loss was a blip (it never stopped counting); any
    other recovery counts after ``readmit_after``. A new transition cancels the
    steps the previous one had scheduled for later.
    """
    steps: list[tuple[float, bool]] = []

    def counts_at(t: float) -> bool:
        value = False
        for at, counted in steps:
            if at <= t:
                value = counted
        return value

    last_loss: float | None = None
    loss_counted = False
    for t, state in _transitions(entry):
        steps = [step for step in steps if step[0] <= t]
        if state is ClusterState.FRESH:
            if last_loss is None:
                steps.append((t, True))
            elif loss_counted and t - last_loss < damping.hold_down:
                pass  # a blip: it never stopped counting
            else:
                steps.append((t + damping.readmit_after, True))
        else:
            loss_counted = counts_at(t)
            steps.append((t + damping.hold_down, False) if loss_counted else (t, False))
            last_loss = t
    return steps


def is_fresh(entry: ClusterEntry, *, now: float, damping: Damping) -> bool:
    """Whether a cluster's data counts as fresh at ``now``, after damping."""
    if entry.state not in (ClusterState.FRESH, ClusterState.STALE):
        return False
    value = False
    for at, counted in counted_steps(entry, damping):
        if at <= now:
            value = counted
    return value


def next_change(entry: ClusterEntry, *, now: float, damping: Damping) -> float | None:
    """When :func:`is_fresh` will next flip for this entry by time alone (None: never)."""
    if entry.state not in (ClusterState.FRESH, ClusterState.STALE):
        return None
    current = is_fresh(entry, now=now, damping=damping)
    for at, counted in counted_steps(entry, damping):
        if at > now and counted != current:
            return at
    return None


def isolation_episode(entries: Iterable[ClusterEntry], *, now: float, damping: Damping,
                      isolation: Isolation) -> Episode | None:
    """The self-isolation episode in effect at ``now``, if any (pure; replays transitions).

    Walks every cluster's fresh/stale transitions in time order. At a loss at
    ``t``, with no episode active: the clusters lost within ``[t - window, t]``
    and still lost are counted against the population (clusters counted fresh
    at ``t - window``, or fresh at ``t``); more than ``fraction`` of it, and at
    least two, starts an episode at the earliest of those losses. A loss while
    an episode is active joins it. An episode ends at the first moment every
    member counts as fresh again (after readmission), or ``max_hold`` after its
    start.
    """
    by_name = {e.name: e for e in entries}
    events = sorted((t, name, state) for name, e in by_name.items()
                    for t, state in _transitions(e) if t <= now and t > -math.inf)
    lost: dict[str, float] = {}
    fresh: set[str] = set()
    episode: Episode | None = None

    def over(ep: Episode, at: float) -> bool:
        # Every member back (its latest transition at ``at`` is a recovery) and readmitted;
        # a member still within its hold-down counts as fresh but is not back.
        return at - ep.start > isolation.max_hold or all(
            m not in lost and is_fresh(by_name[m], now=at, damping=damping)
            for m in ep.members)

    for t, name, state in events:
        if episode is not None and over(episode, t - 1e-9):
            episode = None
        if state is not ClusterState.STALE:
            lost.pop(name, None)
            fresh.add(name)
            continue
        lost[name] = t
        fresh.discard(name)
        if episode is not None:
            episode = Episode(episode.start, episode.members | {name})
            continue
        recent = {n for n, at in lost.items() if at >= t - isolation.window}
        before = t - isolation.window
        population = recent | fresh | {
            n for n in lost if is_fresh(by_name[n], now=before, damping=damping)}
        if len(recent) >= 2 and len(recent) > isolation.fraction * len(population):
            episode = Episode(min(lost[n] for n in recent), frozenset(recent))
    if episode is not None and over(episode, now):
        return None
    return episode


def cluster_freshness(entries: Iterable[ClusterEntry], *, now: float, damping: Damping,
                      isolation: Isolation | None = None) -> dict[str, Freshness]:
    """How every cluster counts at ``now``: damped freshness, and self-isolation's hold."""
    entries = list(entries)
    out = {e.name: Freshness(is_fresh(e, now=now, damping=damping)) for e in entries}
    if isolation is None:
        return out
    episode = isolation_episode(entries, now=now, damping=damping, isolation=isolation)
    if episode is not None:
        for name in episode.members:
            if not out[name].fresh:
                out[name] = Freshness(True, held=True)
    return out


def level_of(*, ready: bool, last_resort: bool, fresh: bool) -> Level:
    """The level of an endpoint, or of a cluster's service as a whole.

    Ready beats serving while terminating (the last resort), in a cluster whose
    freshness is ``fresh``.
    """
    if ready:
        return Level.READY if fresh else Level.STALE
    if last_resort:
        return Level.LAST_RESORT if fresh else Level.STALE_LAST_RESORT
    return Level.UNHEALTHY


def endpoint_level(*, ready: bool, serving: bool, terminating: bool, fresh: bool) -> Level:
    """The level of one endpoint of a cluster whose freshness is ``fresh``."""
    return level_of(ready=ready, last_resort=serving and terminating, fresh=fresh)
