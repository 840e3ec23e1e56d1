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
    restored: bool = False
    """True when its data came from the warm-start snapshot (it counts as synced for the
    sync gate: the names it had are known, and an unknown name is NXDOMAIN)."""
    waited_out: bool = False
    """True once ``freshness.sync_timeout`` passed without any data from it: it no longer
    holds back negative answers for the rest of the federation (it is *unsynced*)."""
    endpoints: int = 0
    """Endpoints across its services, kept as they change (``/metrics`` reads it at every
    scrape: summing a million endpoints there held the event loop)."""
    last_fresh: float | None = None
    """Monotonic time its source was last known fresh: a sync, a change, or any other
    sign of a healthy source (a watch bookmark, a liveness probe, a file poll, a
    heartbeat). This, not the last data change, is what the warm-start snapshot saves
    and what ``freshness.max_stale`` counts from: a quiet cluster is not an old one."""

    @property
    def gate_open(self) -> bool:
        """True when this cluster no longer holds back NXDOMAIN for unknown names."""
        return self.synced_once or self.restored or self.waited_out

    @property
    def unsynced(self) -> bool:
        """Never delivered data, and ``sync_timeout`` is over (shown as "unsynced")."""
        return self.snapshot is None and self.waited_out

    @property
    def display_state(self) -> str:
        """The state as status pages show it.

        ``unsynced`` for a syncing cluster past the sync gate, else the
        :class:`ClusterState` value.
        """
        return "unsynced" if self.unsynced else self.state.value


@dataclass(slots=True)
class Registry:
    """Per-cluster snapshots plus the set of service keys changed since the last compile."""

    clusters: dict[str, ClusterEntry] = field(default_factory=dict)
    dirty: set[ServiceKey] = field(default_factory=set)
    generation: int = 0
    """Counts changes, so a writer can tell whether anything changed since it last looked."""
    on_change: Callable[[], None] | None = None
    """Called (synchronously, on the event loop) after any change, to schedule a compile."""
    _configured_names: set[str] | None = None
    """The configured clusters (None: every cluster known); others came from the bus."""
    resolved: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Load-balancer ingress hostname -> the addresses answered for it (written by the
    hostname resolver, ``sources.hostnames``; absent: none yet, or none any more)."""
    hostname_generation: int = 0
    """Moves whenever the set of hostnames some service uses changes."""
    _hostname_users: dict[str, set[tuple[str, ServiceKey]]] = field(default_factory=dict)
    """Hostname -> the (cluster, service) pairs whose load balancer it is."""

    @classmethod
    def for_clusters(cls, names: Iterable[str]) -> Registry:
        """A registry expecting data from each named cluster."""
        names = list(names)
        return cls(clusters={n: ClusterEntry(n) for n in names}, _configured_names=set(names))

    # --- reads ---------------------------------------------------------------

    @property
    def is_loaded(self) -> bool:
        """True once no cluster holds back negative answers (the sync gate is open).

        A cluster holds them back until it has delivered data (live, or from the
        warm-start snapshot) or ``sync_timeout`` has passed without any
        (:meth:`stop_waiting`): before that, a name that is not found may exist in
        a cluster not yet heard from, so it answers SERVFAIL, never NXDOMAIN. The
        bound matters: one member down while feddns starts must not keep the rest
        of the federation's negative answers SERVFAIL (musl's ``getaddrinfo``
        fails a whole lookup on a SERVFAIL for either of A and AAAA).
        """
        return all(c.gate_open for c in self.clusters.values())

    def unsynced(self) -> list[str]:
        """Clusters past the sync gate that never delivered data, in configured order."""
        return [c.name for c in self.clusters.values() if c.unsynced]

    def awaited(self) -> list[str]:
        """Clusters still holding back negative answers (within ``sync_timeout``)."""
        return [c.name for c in self.clusters.values() if not c.gate_open]

    def service_keys(self) -> set[ServiceKey]:
        """Every service known from any cluster that still answers."""
        keys: set[ServiceKey] = set()
        for entry in self.clusters.values():
            if entry.snapshot is not None and entry.state is not ClusterState.EXPIRED:
                keys.update(entry.snapshot.services)
        return keys

    def hostnames(self) -> list[str]:
        """Every load-balancer hostname some service uses now (sorted)."""
        return sorted(self._hostname_users)

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

    # --- writes --------------------------------------------------------------

    def _changed(self, keys: Iterable[ServiceKey]) -> None:
        self.generation += 1
        before = len(self.dirty)
        self.dirty.update(keys)
        if len(self.dirty) != before and self.on_change is not None:
            self.on_change()

    def _index(self, cluster: str, old: Service | None, new: Service | None) -> None:
        """Keep the hostname index in step with one service of one cluster."""
        before = old.load_balancer_hostnames if old is not None else ()
        after = new.load_balancer_hostnames if new is not None else ()
        if before == after:
            return
        svc = new if new is not None else old
        assert svc is not None
        user = (cluster, svc.key)
        for name in before:
            users = self._hostname_users.get(name)
            if users is not None and name not in after:
                users.discard(user)
                if not users:
                    del self._hostname_users[name]
                    self.hostname_generation += 1
        for name in after:
            if name not in self._hostname_users:
                self.hostname_generation += 1
            self._hostname_users.setdefault(name, set()).add(user)

    def set_resolved(self, hostname: str, addresses: tuple[str, ...]) -> None:
        """Answer ``addresses`` for ``hostname`` (empty: none); recompile its services."""
        if self.resolved.get(hostname, ()) == addresses:
            return
        if addresses:
            self.resolved[hostname] = addresses
        else:
            self.resolved.pop(hostname, None)
        self._changed(key for _, key in self._hostname_users.get(hostname, ()))

    def replace(self, snapshot: ClusterSnapshot, *, now: float, fresh: bool = True) -> None:
        """Replace a cluster's whole data atomically (initial sync, re-list, reload).

        Services missing from the new snapshot disappear: this is how deletions
        missed during a watch gap are applied (a 410 re-list replaces, never merges).
        ``fresh=False`` loads data whose source is not fresh (a peer's cluster that its
        publisher reports stale, data relayed for an own cluster): the cluster's state is
        left to the caller, so no instant of freshness is noted that flap damping and
        self-isolation would replay as the loss of a fresh cluster (issue #12).
        """
        entry = self.clusters.setdefault(snapshot.cluster, ClusterEntry(snapshot.cluster))
        old = entry.snapshot.services if entry.snapshot is not None else {}
        new = snapshot.services
        # A source that rebuilt nothing hands the very same objects back: no comparing.
        changed = {k for k in old.keys() | new.keys()
                   if (was := old.get(k)) is not (now_is := new.get(k)) and was != now_is}
        for k in changed:
            self._index(snapshot.cluster, old.get(k), new.get(k))
        was_loaded = entry.snapshot is not None
        became_fresh = fresh and entry.state is not ClusterState.FRESH
        entry.snapshot = ClusterSnapshot(snapshot.cluster, dict(new))
        entry.endpoints = _endpoints(new.values())
        entry.last_sync = now
        if fresh or entry.last_fresh is None:
            # Data from a source that is not fresh does not postpone expiry: that counts
            # from when the cluster was last known fresh.
            entry.last_fresh = now
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

        ``age`` counts from when its source was last known fresh. A cluster that
        already has live data keeps it. Restored data counts as synced for the
        sync gate: a restart during an outage of this cluster's source must not
        turn every unknown name into SERVFAIL (a service created while feddns
        was down is NXDOMAIN until the source syncs, for at most the negative TTL).
        The app then stops waiting for the clusters the snapshot did not have.
        """
        entry = self.clusters.setdefault(snapshot.cluster, ClusterEntry(snapshot.cluster))
        if entry.snapshot is not None:
            return
        gate_was_open = self.is_loaded
        entry.snapshot = ClusterSnapshot(snapshot.cluster, dict(snapshot.services))
        entry.endpoints = _endpoints(snapshot.services.values())
        entry.state = ClusterState.STALE
        entry.state_since = now - age
        entry.last_sync = now - age
        entry.last_fresh = now - age
        entry.restored = True
        entry.error = "restored from the warm-start snapshot; source not synced yet"
        for svc in snapshot.services.values():
            self._index(snapshot.cluster, None, svc)
        self._changed(snapshot.services)
        if self.is_loaded != gate_was_open and self.on_change is not None:
            self.on_change()

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
        if entry.state is ClusterState.FRESH:
            entry.last_fresh = now
        old = services.get(key)
        if old == service:
            entry.last_sync = now
            return
        if old is not None:
            entry.endpoints -= len(old.endpoints)
        self._index(cluster, old, service)
        if service is None:
            services.pop(key, None)
        else:
            services[key] = service
            entry.endpoints += len(service.endpoints)
        entry.last_sync = now
        self._changed([key])

    def confirm(self, cluster: str, *, now: float) -> None:
        """Note a sign that ``cluster``'s source is healthy (no data change, no compile).

        A watch bookmark, a liveness probe, a poll of an unchanged file or a peer's
        heartbeat: while the cluster is fresh, its ``last_fresh`` moves to ``now``.
        """
        entry = self.clusters.get(cluster)
        if entry is not None and entry.state is ClusterState.FRESH:
            entry.last_fresh = now

    def stop_waiting(self, cluster: str) -> bool:
        """``sync_timeout`` is over for ``cluster``: it stops holding back negative answers.

        Returns True when the cluster was still awaited (it is *unsynced* from now
        on, until its source delivers data).
        """
        entry = self.clusters.get(cluster)
        if entry is None or entry.gate_open:
            return False
        entry.waited_out = True
        self.generation += 1
        if self.on_change is not None:
            self.on_change()  # SERVFAIL may turn into NXDOMAIN now
        return True

    def set_state(self, cluster: str, state: ClusterState, *, now: float,
                  error: str | None = None) -> None:
        """Move a cluster to ``state`` (e.g. stale when its source is lost)."""
        entry = self.clusters[cluster]
        entry.error = error
        if entry.state is state:
            return
        if state is ClusterState.FRESH:
            entry.fresh_since = now
            entry.last_fresh = now
            _note(entry, now, state)
        elif state is ClusterState.STALE and entry.state is ClusterState.FRESH:
            entry.lost_since = now
            _note(entry, now, state)
        entry.state = state
        entry.state_since = now
        if entry.snapshot is not None:
            self._changed(entry.snapshot.services)

    def touch_services(self, keys: Iterable[ServiceKey]) -> None:
        """Recompile these services (an input of their answers besides data changed)."""
        self._changed(keys)

    def touch(self, cluster: str) -> None:
        """Recompile every service of ``cluster`` (its damped freshness changed by time)."""
        entry = self.clusters.get(cluster)
        if entry is not None and entry.snapshot is not None:
            self._changed(entry.snapshot.services)

    def reconfigure(self, names: Iterable[str]) -> None:
        """Expect exactly the configured ``names``, in that order (a reload).

        Clusters no longer configured are forgotten (only their contribution
        changes); new ones start *syncing*; clusters known only from the bus
        (``accept_unknown_clusters``) stay, after the configured ones.
        """
        wanted = list(names)
        previous = set(self.clusters)
        for name in [n for n in self.clusters if n not in wanted and self._configured(n)]:
            self.remove_cluster(name)
        ordered = {n: self.clusters.get(n) or ClusterEntry(n) for n in wanted}
        ordered.update((n, e) for n, e in self.clusters.items() if n not in ordered)
        self.clusters = ordered
        self._configured_names = set(wanted)
        if set(self.clusters) != previous and self.on_change is not None:
            self.on_change()  # a new cluster closes the sync gate again; a removed one may open it

    def _configured(self, name: str) -> bool:
        return self._configured_names is None or name in self._configured_names

    def note_error(self, cluster: str, error: str, *, keep_first: bool = False) -> None:
        """Say why ``cluster``'s source is not delivering (status pages, logs), no state change.

        With ``keep_first``, an error already recorded stays: the first failure is the
        cause, and the ones it causes only echo it.
        """
        entry = self.clusters.get(cluster)
        if entry is not None and not (keep_first and entry.error is not None):
            entry.error = error

    def remove_cluster(self, cluster: str) -> None:
        """Forget a cluster removed from the config; only its contribution changes."""
        entry = self.clusters.pop(cluster, None)
        if entry is not None and entry.snapshot is not None:
            for svc in entry.snapshot.services.values():
                self._index(cluster, svc, None)
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
        """Expire clusters whose source was last known fresh more than ``max_stale`` ago.

        Counted from ``last_fresh`` (the loss), never from the last data change: a
        cluster that was quiet for a day before it was lost has a day left.
        """
        expired = []
        for entry in self.clusters.values():
            since = entry.last_fresh if entry.last_fresh is not None else entry.state_since
            if entry.state is ClusterState.STALE and now - since > max_stale:
                self.set_state(entry.name, ClusterState.EXPIRED, now=now, error=entry.error)
                expired.append(entry.name)
        return expired


MAX_TRANSITIONS = 16


def _note(entry: ClusterEntry, now: float, state: ClusterState) -> None:
    entry.transitions.append((now, state))
    del entry.transitions[:-MAX_TRANSITIONS]


def _endpoints(services: Iterable[Service]) -> int:
    return sum(len(s.endpoints) for s in services)
