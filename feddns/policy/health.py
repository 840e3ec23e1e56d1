"""Health of candidates: readiness levels, freshness, and flap damping of clusters.

Why it exists: which addresses may be answered depends on two signals that
fail differently, endpoint readiness (Kubernetes' own verdict) and cluster
freshness (whether feddns still hears from that cluster). Both are folded into
one ordered :class:`Level`, and cluster freshness is damped so that a blip in
a watch does not fail traffic over (k8gb fails over prematurely) and a
flapping cluster is not readmitted at once.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

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


def endpoint_level(*, ready: bool, serving: bool, terminating: bool, fresh: bool) -> Level:
    """The level of one endpoint of a cluster whose freshness is ``fresh``."""
    if ready:
        return Level.READY if fresh else Level.STALE
    if serving and terminating:
        return Level.LAST_RESORT if fresh else Level.STALE_LAST_RESORT
    return Level.UNHEALTHY
