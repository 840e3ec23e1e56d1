"""The event-loop side of one cluster's Kubernetes source.

Why it exists: watch threads must never touch the registry (only the event
loop mutates it), so they hand converted events through a bounded queue and
this class applies them on the loop: a complete (re-)list of every watched
kind becomes one ``Registry.replace`` (one swap, deletions included); single
events update one service. A lost source makes the cluster stale, never
empty; 403 is reported loudly and the last data stays. Besides the watches,
a liveness probe (:mod:`.probing`) watches the API server itself: the
cluster is fresh only while every watch is established and the probe
answers, and every sign of life (a bookmark, a probe) moves the cluster's
``last_fresh`` forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from feddns.model.registry import ClusterState, Registry
from feddns.model.services import ClusterSnapshot, Service, ServiceKey
from feddns.sources.kubernetes.client import ClusterClient, Resource
from feddns.sources.kubernetes.converting import ServiceInfo, SliceInfo, build_service
from feddns.sources.kubernetes.probing import PROBE, Prober
from feddns.sources.kubernetes.watching import (
    Alive,
    Changed,
    Deleted,
    Event,
    Healthy,
    Lost,
    Relisted,
    ResourceWatcher,
)

log = logging.getLogger(__name__)

BATCH = 256
"""Events applied per turn of the loop before yielding to queries."""
@dataclass(frozen=True, slots=True)
class WatchSettings:
    """How one cluster is reached and watched."""

    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: bool = False
    namespaces: tuple[str, ...] = ()
    exported_only: bool = False
    watch_timeout: float = 300.0
    read_timeout: float = 60.0
    connect_timeout: float = 10.0
    backoff_max: float = 30.0
    probe_interval: float = 2.0
    probe_timeout: float = 2.0
    fast_retry_window: float = 3.0
    """Retry every quarter second for this long after a loss (the selection's hold-down)."""
    queue_size: int = 4096


class KubernetesSource:
    """Feeds one cluster's Services and EndpointSlices into the registry."""

    @property
    def label(self) -> str:
        """How logs name this source."""
        return f"kubernetes source {self.cluster}"

    def __init__(self, cluster: str, settings: WatchSettings, registry: Registry, *,
                 clock: Callable[[], float]) -> None:
        self.cluster = cluster
        self.settings = settings
        self.registry = registry
        self.clock = clock
        self.client = ClusterClient(kubeconfig=settings.kubeconfig, context=settings.context,
                                    in_cluster=settings.in_cluster)
        self.queue: queue.Queue[Event] = queue.Queue(maxsize=settings.queue_size)
        self.services: dict[ServiceKey, ServiceInfo] = {}
        self.slices: dict[tuple[str, str], SliceInfo] = {}
        self.by_service: dict[ServiceKey, set[tuple[str, str]]] = {}
        self.exports: set[ServiceKey] = set()
        self._built: dict[ServiceKey, tuple[ServiceInfo, tuple[SliceInfo, ...], Service]] = {}
        """The last Service built per key, with its inputs (see :meth:`service`)."""
        self.synced: set[tuple[str, str | None]] = set()
        self.lost: dict[str, str] = {}
        self.relists = 0
        self.events = 0
        self.watchers: list[ResourceWatcher] = []
        self.prober: Prober | None = None
        self.on_bulk_load: Callable[[], None] | None = None
        """Called after a whole (re-)list was applied (process-wide tuning, by the app)."""
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- threads -> loop -------------------------------------------------------

    @property
    def expected(self) -> set[tuple[str, str | None]]:
        """Every (resource, namespace) list that must arrive before the cluster is synced."""
        resources = [Resource.SERVICES, Resource.ENDPOINTSLICES]
        if self.settings.exported_only:
            resources.append(Resource.SERVICEEXPORTS)
        namespaces: Iterable[str | None] = self.settings.namespaces or [None]
        return {(r, ns) for r in resources for ns in namespaces}

    def _emit(self, event: Event) -> None:
        """Called from watch threads: enqueue (blocking when full), then wake the loop."""
        watcher_stopping = all(w.stopping.is_set() for w in self.watchers) or (
            self.prober is not None and self.prober.stopping.is_set())
        while True:
            try:
                self.queue.put(event, timeout=0.5)
                break
            except queue.Full:
                if watcher_stopping:
                    return
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(wake.set)

    async def run(self) -> None:
        """Start the watch threads and apply their events until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        s = self.settings
        for resource, namespace in sorted(self.expected, key=str):
            watcher = ResourceWatcher(
                self.client, resource, self._emit, namespace=namespace,
                watch_timeout=s.watch_timeout, read_timeout=s.read_timeout,
                connect_timeout=s.connect_timeout, backoff_max=s.backoff_max,
                fast_window=s.fast_retry_window, cluster=self.cluster,
            )
            self.watchers.append(watcher)
            watcher.start()
        if s.probe_interval > 0:
            self.prober = Prober(self.client, self._emit, interval=s.probe_interval,
                                 timeout=s.probe_timeout, cluster=self.cluster,
                                 on_failure=self._restart_watches,
                                 on_recovery=self._restart_stuck_watches)
            self.prober.start()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                more = self.drain(limit=BATCH)
                while more:
                    await asyncio.sleep(0)  # yield to queries between batches
                    more = self.drain(limit=BATCH)
        finally:
            for watcher in self.watchers:
                watcher.stop()
            if self.prober is not None:
                self.prober.stop()

    def _restart_watches(self) -> None:
        """The probe failed (prober thread): restart every watch, they may hang silently."""
        for watcher in self.watchers:
            watcher.kick()

    def _restart_stuck_watches(self) -> None:
        """The probe answers again (prober thread): restart watches still not established."""
        for watcher in self.watchers:
            if not watcher.established:
                watcher.kick()

    def drain(self, *, limit: int) -> bool:
        """Apply up to ``limit`` queued events; True when more may be waiting."""
        for _ in range(limit):
            try:
                event = self.queue.get_nowait()
            except queue.Empty:
                return False
            self.apply(event)
        return True

    # --- applying events (on the loop) ---------------------------------------

    def apply(self, event: Event) -> None:
        """Apply one event from a watch thread."""
        now = self.clock()
        if isinstance(event, Relisted):
            self._relisted(event, now)
        elif isinstance(event, Changed):
            self.events += 1
            keys = self._changed(event)
            if self.expected <= self.synced:
                for key in keys:
                    self.registry.put_service(self.cluster, key, self.service(key), now=now)
        elif isinstance(event, Lost):
            self._lost(event, now)
        elif isinstance(event, Healthy):
            self._healthy(event.resource, now)
        elif isinstance(event, Alive) and not self.lost:
            self.registry.confirm(self.cluster, now=now)

    def _relisted(self, event: Relisted, now: float) -> None:
        if event.resource == Resource.SERVICES:
            for key in [k for k in self.services if event.namespace in (None, k[0])]:
                del self.services[key]
            for info in event.items:
                self.services[info.key] = info
        elif event.resource == Resource.ENDPOINTSLICES:
            for key in [k for k in self.slices if event.namespace in (None, k[0])]:
                self._drop_slice(key)
            for info in event.items:
                self._put_slice(info)
        else:
            self.exports = {k for k in self.exports if event.namespace not in (None, k[0])}
            self.exports.update(event.items)
        self.synced.add((event.resource, event.namespace))
        self.relists += 1
        self._healthy(event.resource, now, quiet=True)
        if self.expected <= self.synced:
            # One swap for the whole cluster: services gone from the list vanish now.
            self.registry.replace(self.snapshot(), now=now)
            if self.on_bulk_load is not None:
                self.on_bulk_load()  # the app keeps the new objects out of full GC passes

    def _changed(self, event: Changed) -> list[ServiceKey]:
        item = event.item
        if event.resource == Resource.SERVICES:
            if isinstance(item, Deleted):
                self.services.pop(item.key, None)
                return [item.key]
            self.services[item.key] = item
            return [item.key]
        if event.resource == Resource.ENDPOINTSLICES:
            if isinstance(item, Deleted):
                old = self.slices.get(item.key)
                self._drop_slice(item.key)
                return [old.service_key] if old is not None else []
            old = self.slices.get(item.key)
            self._put_slice(item)
            keys = [item.service_key]
            if old is not None and old.service_key != item.service_key:
                keys.append(old.service_key)
            return keys
        key = item.key if isinstance(item, Deleted) else item
        if isinstance(item, Deleted):
            self.exports.discard(key)
        else:
            self.exports.add(key)
        return [key]

    def _put_slice(self, info: SliceInfo) -> None:
        self._drop_slice(info.key)
        self.slices[info.key] = info
        self.by_service.setdefault(info.service_key, set()).add(info.key)

    def _drop_slice(self, key: tuple[str, str]) -> None:
        old = self.slices.pop(key, None)
        if old is not None:
            members = self.by_service.get(old.service_key)
            if members is not None:
                members.discard(key)
                if not members:
                    del self.by_service[old.service_key]

    def _lost(self, event: Lost, now: float) -> None:
        first = event.resource not in self.lost or self.lost[event.resource] != event.error
        self.lost[event.resource] = event.error
        entry = self.registry.clusters.get(self.cluster)
        if entry is None:
            return
        if first:
            if event.forbidden:
                log.error("cluster %s: %s forbidden (403): RBAC changed? keeping the last data",
                          self.cluster, event.resource)
            elif event.unauthorized:
                log.error("cluster %s: %s unauthorized (401): re-reading credentials; keeping"
                          " the last data", self.cluster, event.resource)
            elif event.resource != PROBE:  # the prober logs its own failures
                log.warning("cluster %s: lost %s watch: %s", self.cluster, event.resource,
                            event.error)
        if entry.snapshot is not None and entry.state is ClusterState.FRESH:
            self.registry.set_state(self.cluster, ClusterState.STALE, now=now,
                                    error=f"{event.resource}: {event.error}")
        else:
            # The first failure is the cause; the watches it restarts only echo it.
            self.registry.note_error(self.cluster, f"{event.resource}: {event.error}",
                                     keep_first=len(self.lost) > 1)

    def _healthy(self, resource: str, now: float, *, quiet: bool = False) -> None:
        if self.lost.pop(resource, None) is not None and not quiet:
            log.info("cluster %s: %s watch re-established", self.cluster, resource)
        entry = self.registry.clusters.get(self.cluster)
        if (not self.lost and entry is not None and entry.snapshot is not None
                and entry.state is not ClusterState.FRESH and self.expected <= self.synced):
            log.info("cluster %s: fresh again", self.cluster)
            self.registry.set_state(self.cluster, ClusterState.FRESH, now=now)

    # --- building model objects ----------------------------------------------

    def _included(self, key: ServiceKey) -> bool:
        return not self.settings.exported_only or key in self.exports

    def service(self, key: ServiceKey) -> Service | None:
        """The model Service for ``key`` as this cluster currently has it (None: absent).

        The last one built is kept with what it was built from: a re-list (every 410,
        every reconnect after an outage) converts every object again, mostly into
        equal ones, and comparing them is cheaper than building the service again;
        the registry then finds the very same object and compares nothing more. That
        keeps the re-list's work on the event loop short (bench/RESULTS.md).
        """
        info = self.services.get(key)
        if info is None or not self._included(key):
            self._built.pop(key, None)
            return None
        slices = tuple(self.slices[k] for k in self.by_service.get(key, ()))
        built = self._built.get(key)
        if built is not None and built[0] == info and built[1] == slices:
            return built[2]
        service = build_service(info, slices)
        self._built[key] = (info, slices, service)
        return service

    def snapshot(self) -> ClusterSnapshot:
        """The cluster's full snapshot."""
        services = {}
        for key in self.services:
            svc = self.service(key)
            if svc is not None:
                services[key] = svc
        for gone in self._built.keys() - services.keys():
            del self._built[gone]
        return ClusterSnapshot(self.cluster, services)
