"""What the bus knows about each peer cluster: its shadow of services, manifest and sessions.

Why it exists: the merger (:mod:`.merging`) decides what reaches the registry from
the bus; these are the records it keeps per cluster to decide it: the services and
manifest heard (with generations), the publishing sessions heard online (replicas,
restarts), the services received and refused, and whether the registry currently
holds the bus's copy of an own cluster's data. Plain data, no I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from feddns.model.registry import ClusterEntry, ClusterState
from feddns.model.services import ClusterSnapshot, Service, ServiceKey
from feddns.sources.mqtt.codec import Reason

MAX_SESSIONS = 64
"""Bound on the publishing sessions remembered per cluster (replicas, restarts)."""
MAX_UNKNOWN_CLUSTERS = 256
"""Bound on clusters accepted with ``accept_unknown_clusters`` (memory, not policy)."""
MAX_LOGGED = 1024
"""Bound on the remembered (reason, origin) pairs already logged."""
ENDED_SESSIONS = 32


@dataclass(slots=True)
class LiveSession:
    """One session publishing a cluster: an instance between its connect and its end."""

    instance: str
    gen: int
    """Generation of its last accepted status."""
    last_heartbeat: float
    """Local monotonic time of its last "online" status."""
    reported: ClusterState
    """Its own source's state, as it reported it."""


@dataclass(frozen=True, slots=True)
class ServiceRejection:
    """The last message for one service key that was received and refused."""

    reason: Reason
    detail: str
    gen: int | None
    """Its generation when the MAC was verified; None when it could not be trusted."""
    at: float
    """Local monotonic time it was refused."""


@dataclass(slots=True)
class PeerCluster:
    """Everything heard on the bus about one cluster."""

    name: str
    services: dict[ServiceKey, tuple[int, Service]] = field(default_factory=dict)
    manifest: frozenset[ServiceKey] | None = None
    manifest_gen: int = -1
    status_gen: int = -1
    online: bool | None = None
    """True while some session publishing it is live; None before any status."""
    sessions: dict[int, LiveSession] = field(default_factory=dict)
    """Sessions heard "online" and not ended (pruned once silent for long)."""
    session: int | None = None
    """Session of the last accepted "online" status."""
    ended: deque[int] = field(default_factory=lambda: deque(maxlen=ENDED_SESSIONS))
    reported: ClusterState | None = None
    """The publisher's view of its own source (fresh, stale, ...)."""
    instance: str | None = None
    """The instance that sent the last accepted status."""
    last_heartbeat: float | None = None
    """Local monotonic time of the last accepted "online" status."""
    signed_with: str | None = None
    """How its last accepted message was sealed: ``ed25519 <key id>`` or ``hmac <key id>``
    (during a migration from HMAC, which peers still use it)."""
    last_change: float | None = None
    """Local monotonic time the shadow data last changed."""
    loaded: bool = False
    """A complete view has been written to the registry."""
    relayed: tuple[ClusterSnapshot, float | None] | None = None
    """Own clusters only: the registry's snapshot object and ``last_sync`` right after the
    bus's own last write; any write by the direct source changes one or the other
    (``put_service`` edits in place but stamps ``last_sync``)."""
    dirty: set[ServiceKey] = field(default_factory=set)
    missing: set[ServiceKey] = field(default_factory=set)
    """Keys the manifest lists that no service message has brought yet."""
    rejected: dict[ServiceKey, ServiceRejection] = field(default_factory=dict)
    """Keys whose latest message was received and refused (see the module docstring):
    not missing; the accepted version in ``services``, if any, still applies."""

    @property
    def complete(self) -> bool:
        """True when a manifest arrived and data for every key it lists."""
        return self.manifest is not None and not self.missing

    def wanted(self, key: ServiceKey) -> Service | None:
        """What the registry should hold for ``key`` according to the bus."""
        item = self.services.get(key)
        return None if item is None else item[1]

    def view(self) -> ClusterSnapshot:
        """The cluster as the bus knows it."""
        return ClusterSnapshot(self.name, {k: s for k, (_, s) in self.services.items()})

    def target_state(self, now: float, *, peer_timeout: float
                     ) -> tuple[ClusterState, str | None]:
        """What the bus says about the cluster's freshness, and why when not fresh.

        The best of its live publishing sessions decides: fresh if any reports its
        source fresh, expired only if every one reports expired.
        """
        if self.online is False:
            return ClusterState.STALE, "bus: its publisher is offline"
        if self.last_heartbeat is None:
            return ClusterState.STALE, "bus: no heartbeat received yet"
        live = [s.reported for s in self.sessions.values()
                if now - s.last_heartbeat <= peer_timeout]
        if not live:
            silent = now - self.last_heartbeat
            return ClusterState.STALE, f"bus: no heartbeat for {silent:.0f} s"
        if ClusterState.FRESH in live:
            return ClusterState.FRESH, None
        if all(r is ClusterState.EXPIRED for r in live):
            return ClusterState.EXPIRED, "bus: expired at its publisher"
        reported = next(r for r in live if r is not ClusterState.EXPIRED)
        return ClusterState.STALE, f"bus: {reported} at its publisher"


def is_relayed(peer: PeerCluster, entry: ClusterEntry) -> bool:
    """True when nothing but the bus wrote ``entry`` since the bus's last write."""
    return (peer.relayed is not None and entry.snapshot is peer.relayed[0]
            and entry.last_sync == peer.relayed[1])
