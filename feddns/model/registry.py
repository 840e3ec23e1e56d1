"""The registry: the latest snapshot of every member cluster, and what changed.

Why it exists: sources write per-cluster data here and the DNS compiler reads
it; keeping the two apart means a source never touches answers and the
compiler recompiles only the services a change touched (``dirty``). Only the
event loop mutates the registry (sources in threads hand their results over),
and nothing here reads the clock: every method that needs time takes ``now``
(monotonic seconds).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from feddns.model.services import ClusterSnapshot, Service, ServiceKey


class ClusterState(enum.StrEnum):
    """Freshness of one cluster's data (fresh -> stale -> expired; never silently absent)."""

    SYNCING = "syncing"
    """No data has been received yet: its services are unknown, not absent."""
    FRESH = "fresh"
    """The source is connected and its data is current."""
    STALE = "stale"
    """The source was lost; the last data is kept and served as a last resort."""
    EXPIRED = "expired"
    """Lost for longer than the maximum staleness; its data no longer answers."""


@dataclass(slots=True)
class ClusterEntry:
    """One cluster's data and freshness."""

    name: str
    state: ClusterState = ClusterState.SYNCING
    snapshot: ClusterSnapshot | None = None
    last_sync: float | None = None
    """Monotonic time of the last successful sync (None before the first)."""
    state_since: float = 0.0
    fresh_since: float | None = None
    """When the cluster last became fresh (monotonic)."""
    lost_since: float | None = None
    """When the cluster last went from fresh to stale (None: never lost since start)."""
    error: str | None = None
    """Why the source is not fresh, for status and logs."""
    transitions: list[tuple[float, ClusterState]] = field(default_factory=list)
    """The last fresh/stale transitions, oldest first (flap damping replays them)."""
    synced_once: bool = False
    """True once a live source delivered data (a warm-start snapshot does not count)."""


@dataclass(slots=True)
class Registry:
    """Per-cluster snapshots plus the set of service keys changed since the last compile."""

    clusters: dict[str, ClusterEntry] = field(default_factory=dict)
    dirty: set[ServiceKey] = field(default_factory=set)
    generation: int = 0
    """Counts changes, so a writer can tell whether anything changed since it last looked."""
    on_change: Callable[[], None] | None = None
    """Called (synchronously, on the event loop) after any change, to schedule a compile."""

    @classmethod
    def for_clusters(cls, names: Iterable[str]) -> Registry:
        """A registry expecting data from each named cluster."""
        return cls(clusters={n: ClusterEntry(n) for n in names})

    # --- reads ---------------------------------------------------------------

    @property
    def is_loaded(self) -> bool:
        """True once every configured cluster has delivered data at least once.

        Before that, a name that is not found may still exist in a cluster not
        yet heard from, so it answers SERVFAIL, never NXDOMAIN.
        """
        return all(c.synced_once for c in self.clusters.values())

    def service_keys(self) -> set[ServiceKey]:
        """Every service known from any cluster that still answers."""
        keys: set[ServiceKey] = set()
        for entry in self.clusters.values():
            if entry.snapshot is not None and entry.state is not ClusterState.EXPIRED:
                keys.update(entry.snapshot.services)
        return keys

    def views(self, key: ServiceKey, *, expired: bool = False
              ) -> list[tuple[ClusterEntry, Service]]:
        """Each answering cluster's view of one service, in configured cluster order.

        With ``expired``, the views of the clusters whose data expired instead.
        """
        out = []
        for entry in self.clusters.values():
            if entry.snapshot is None or (entry.state is ClusterState.EXPIRED) is not expired:
                continue
            svc = entry.snapshot.services.get(key)
            if svc is not None:
                out.append((entry, svc))
        return out

    def known_expired(self, key: ServiceKey) -> bool:
        """True when an expired cluster's last data has ``key`` (it answers SERVFAIL)."""
        return any(
            e.state is ClusterState.EXPIRED and e.snapshot is not None
            and key in e.snapshot.services
            for e in self.clusters.values()
        )

    # --- writes --------------------------------------------------------------

    def _changed(self, keys: Iterable[ServiceKey]) -> None:
        self.generation += 1
        before = len(self.dirty)
        self.dirty.update(keys)
        if len(self.dirty) != before and self.on_change is not None:
            self.on_change()

    def replace(self, snapshot: ClusterSnapshot, *, now: float) -> None:
        """Replace a cluster's whole data atomically (initial sync, re-list, reload).

        Services missing from the new snapshot disappear: this is how deletions
        missed during a watch gap are applied (a 410 re-list replaces, never merges).
        """
        entry = self.clusters.setdefault(snapshot.cluster, ClusterEntry(snapshot.cluster))
        old = entry.snapshot.services if entry.snapshot is not None else {}
        new = snapshot.services
        changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
        was_loaded = entry.snapshot is not None
        became_fresh = entry.state is not ClusterState.FRESH
        entry.snapshot = ClusterSnapshot(snapshot.cluster, dict(new))
        entry.last_sync = now
        entry.error = None
        entry.synced_once = True
        if became_fresh:
            entry.state = ClusterState.FRESH
            entry.state_since = now
            entry.fresh_since = now
            _note(entry, now, ClusterState.FRESH)
            # A state change alters which clusters answer for every service they hold.
            changed |= set(new)
        self._changed(changed)
        if not was_loaded and self.on_change is not None:
            # Loading can turn SERVFAIL into NXDOMAIN: the table must hear of it.
            self.on_change()

    def restore(self, snapshot: ClusterSnapshot, *, now: float, age: float) -> None:
        """Load a cluster's data from a warm-start snapshot, as stale data ``age`` s old.

        A cluster that already has live data keeps it. Restored data does not
        make the registry *loaded*: names not found still answer SERVFAIL until
        a live source has synced (the snapshot may predate a new service).
        """
        entry = self.clusters.setdefault(snapshot.cluster, ClusterEntry(snapshot.cluster))
        if entry.snapshot is not None:
            return
        entry.snapshot = ClusterSnapshot(snapshot.cluster, dict(snapshot.services))
        entry.state = ClusterState.STALE
        entry.state_since = now - age
        entry.last_sync = now - age
        entry.error = "restored from the warm-start snapshot; source not synced yet"
        self._changed(snapshot.services)

    def put_service(self, cluster: str, key: ServiceKey, service: Service | None, *,
                    now: float) -> None:
        """Set (or with ``None`` delete) one service of a cluster that has synced."""
        entry = self.clusters[cluster]
        if entry.snapshot is None:
            entry.snapshot = ClusterSnapshot(cluster, {})
        # The registry owns this dict (replace() copied it in): one event changes one
        # entry in place instead of copying a cluster's every service (20,000 services:
        # 384 us per event). Readers on other threads must copy it on the loop first.
        services = entry.snapshot.services
        assert isinstance(services, dict)
        if services.get(key) == service:
            entry.last_sync = now
            return
        if service is None:
            services.pop(key, None)
        else:
            services[key] = service
        entry.last_sync = now
        self._changed([key])

    def set_state(self, cluster: str, state: ClusterState, *, now: float,
                  error: str | None = None) -> None:
        """Move a cluster to ``state`` (e.g. stale when its source is lost)."""
        entry = self.clusters[cluster]
        entry.error = error
        if entry.state is state:
            return
        if state is ClusterState.FRESH:
            entry.fresh_since = now
            _note(entry, now, state)
        elif state is ClusterState.STALE and entry.state is ClusterState.FRESH:
            entry.lost_since = now
            _note(entry, now, state)
        entry.state = state
        entry.state_since = now
        if entry.snapshot is not None:
            self._changed(entry.snapshot.services)

    def touch(self, cluster: str) -> None:
        """Recompile every service of ``cluster`` (its damped freshness changed by time)."""
        entry = self.clusters.get(cluster)
        if entry is not None and entry.snapshot is not None:
            self._changed(entry.snapshot.services)

    def remove_cluster(self, cluster: str) -> None:
        """Forget a cluster removed from the config; only its contribution changes."""
        entry = self.clusters.pop(cluster, None)
        if entry is not None and entry.snapshot is not None:
            self._changed(entry.snapshot.services)
        elif self.on_change is not None:
            self.on_change()

    def take_dirty(self, limit: int | None = None) -> list[ServiceKey]:
        """Remove and return (sorted) up to ``limit`` services to recompile (all if None)."""
        if limit is None or limit >= len(self.dirty):
            dirty, self.dirty = self.dirty, set()
            return sorted(dirty)
        batch = [self.dirty.pop() for _ in range(limit)]
        return sorted(batch)

    def expire(self, *, now: float, max_stale: float) -> list[str]:
        """Expire clusters stale for longer than ``max_stale``; return their names."""
        expired = []
        for entry in self.clusters.values():
            if entry.state is ClusterState.STALE and now - entry.state_since > max_stale:
                self.set_state(entry.name, ClusterState.EXPIRED, now=now, error=entry.error)
                expired.append(entry.name)
        return expired


MAX_TRANSITIONS = 16


def _note(entry: ClusterEntry, now: float, state: ClusterState) -> None:
    entry.transitions.append((now, state))
    del entry.transitions[:-MAX_TRANSITIONS]
