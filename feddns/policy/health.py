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


def is_fresh(entry: ClusterEntry, *, now: float, damping: Damping) -> bool:
    """Whether a cluster's data counts as fresh at ``now``, after damping."""
    if entry.state is ClusterState.FRESH:
        if entry.lost_since is None or entry.fresh_since is None:
            return True
        return now - entry.fresh_since >= damping.readmit_after
    if entry.state is ClusterState.STALE:
        if entry.lost_since is None or entry.fresh_since is None:
            return False  # stale since start (loaded from a snapshot): never was fresh
        return now - entry.lost_since < damping.hold_down
    return False


def next_change(entry: ClusterEntry, *, now: float, damping: Damping) -> float | None:
    """When :func:`is_fresh` will next flip for this entry by time alone (None: never)."""
    if entry.state is ClusterState.FRESH and entry.lost_since is not None \
            and entry.fresh_since is not None:
        at = entry.fresh_since + damping.readmit_after
        return at if at > now else None
    if entry.state is ClusterState.STALE and entry.lost_since is not None \
            and entry.fresh_since is not None:
        at = entry.lost_since + damping.hold_down
        return at if at > now else None
    return None


def endpoint_level(*, ready: bool, serving: bool, terminating: bool, fresh: bool) -> Level:
    """The level of one endpoint of a cluster whose freshness is ``fresh``."""
    if ready:
        return Level.READY if fresh else Level.STALE
    if serving and terminating:
        return Level.LAST_RESORT if fresh else Level.STALE_LAST_RESORT
    return Level.UNHEALTHY
