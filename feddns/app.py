"""The composition root: builds registry, answer table, sources and server from Settings.

Why it exists: wiring lives in one place, so every other module can be built
and tested alone. The server starts listening before any source has
delivered data (names answer SERVFAIL until then, never NXDOMAIN), so a slow
or dead source never delays DNS. Background tasks run under a guard that logs
a failure and restarts the task with backoff instead of taking DNS down.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Union

from feddns import __version__
from feddns.config import KubernetesSourceConfig, Settings, StaticSourceConfig, parse_host_port
from feddns.dns.answer import AnswerTable, compile_one, service_key_of, sync_table
from feddns.dns.compiling import OriginZone
from feddns.dns.handling import Handler
from feddns.dns.server import DnsServer
from feddns.model.registry import ClusterState, Registry
from feddns.model.services import ClusterSnapshot
from feddns.policy.health import Damping, next_change
from feddns.policy.locality import Locator, Place, rules_from
from feddns.sources import snapshot
from feddns.sources.static import StaticSource

COMPILE_BATCH = 200
"""Services compiled per turn of the event loop (keeps query latency flat during re-lists)."""

if TYPE_CHECKING:
    from feddns.sources.kubernetes.source import KubernetesSource, WatchSettings

Source = Union[StaticSource, "KubernetesSource"]

log = logging.getLogger(__name__)


class App:
    """One running feddns instance."""

    def __init__(
        self,
        settings: Settings,
        *,
        listen: list[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.wall = wall
        self.registry = Registry.for_clusters(c.name for c in settings.clusters)
        self.table = AnswerTable(settings, serial=int(wall()), locator=locator_from(settings),
                                 clock=clock)
        self.handler = Handler(self.table, udp_payload_size=settings.dns.udp_payload_size)
        addresses = [parse_host_port(a) for a in (listen or settings.dns.listen)]
        self.server = DnsServer(
            self.handler.handle,
            addresses,
            tcp_idle_timeout=settings.dns.tcp_idle_timeout,
            tcp_io_timeout=settings.dns.tcp_io_timeout,
            udp_receive_buffer=settings.dns.udp_receive_buffer,
        )
        self.loaded = asyncio.Event()
        self.sources = self._build_sources()
        self._tasks: list[asyncio.Task[None]] = []
        self._compile_pending = False
        self._damping_timers: dict[str, float] = {}
        self.registry.on_change = self._schedule_compile
        self.table.on_miss = self._compile_on_demand

    def _build_sources(self) -> list[Source]:
        sources: list[Source] = []
        by_file: dict[Path, tuple[list[str], float]] = {}
        for cluster in self.settings.clusters:
            src = cluster.source
            if isinstance(src, StaticSourceConfig):
                names, interval = by_file.get(src.file, ([], src.poll_interval))
                names.append(cluster.name)
                by_file[src.file] = (names, min(interval, src.poll_interval))
            elif isinstance(src, KubernetesSourceConfig):
                # Imported only when used: the client costs a quarter of a second at start.
                from feddns.sources.kubernetes.source import KubernetesSource

                sources.append(KubernetesSource(cluster.name, watch_settings(src), self.registry,
                                                clock=self.clock))
        sources.extend(
            StaticSource(path, names, self.registry, poll_interval=interval, clock=self.clock)
            for path, (names, interval) in by_file.items()
        )
        return sources

    def _compile_on_demand(self, name: bytes, origin: OriginZone) -> bool:
        """A query for a name of a service still waiting to be compiled: compile it now.

        After a warm start or a large re-list, services compile in batches; a query
        must not wait for its turn (nor see SERVFAIL meanwhile).
        """
        if not self.registry.dirty:
            return False
        key = service_key_of(name, origin)
        if key is None:
            return False
        return compile_one(self.table, self.registry, key, wall_now=self.wall(),
                           now=self.clock())

    def _schedule_compile(self) -> None:
        if not self._compile_pending:
            self._compile_pending = True
            asyncio.get_running_loop().call_soon(self._compile_batches)

    def _compile_batches(self) -> None:
        """Compile one batch; if more is dirty, continue on a later turn of the loop."""
        self.compile_now(limit=COMPILE_BATCH)
        if self.registry.dirty:
            self._compile_pending = True
            asyncio.get_running_loop().call_soon(self._compile_batches)

    def compile_now(self, *, limit: int | None = None) -> int:
        """Apply pending registry changes to the answer table (``limit`` services at most)."""
        self._compile_pending = False
        started = time.perf_counter()
        changed = sync_table(self.table, self.registry, wall_now=self.wall(), now=self.clock(),
                             limit=limit)
        self._schedule_damping()
        if changed:
            log.info(
                "compiled %d changed service(s) in %.1f ms; serial %d",
                changed, (time.perf_counter() - started) * 1000, self.table.serial,
            )
        if self.table.loaded and not self.loaded.is_set():
            log.info("all %d cluster(s) loaded; answering NXDOMAIN for unknown names from now",
                     len(self.registry.clusters))
            self.loaded.set()
        return changed

    def _schedule_damping(self) -> None:
        """Recompile a cluster's services when its hold-down or readmission delay ends."""
        now = self.clock()
        damping = Damping(self.settings.selection.hold_down,
                          self.settings.selection.readmit_after)
        for entry in self.registry.clusters.values():
            at = next_change(entry, now=now, damping=damping)
            if at is None or self._damping_timers.get(entry.name) == at:
                continue
            self._damping_timers[entry.name] = at
            asyncio.get_running_loop().call_later(at - now + 0.001, self._damping_due,
                                                  entry.name, at)

    def _damping_due(self, cluster: str, at: float) -> None:
        if self._damping_timers.get(cluster) == at:
            del self._damping_timers[cluster]
            log.info("cluster %s: damping period over; re-evaluating its answers", cluster)
            self.registry.touch(cluster)

    async def start(self) -> list[tuple[str, int]]:
        """Load the warm-start snapshot, listen, then start the sources.

        Returns the bound addresses. Nothing here waits for a source: a dead API
        server or broker never delays DNS.
        """
        await self._warm_start()
        if not self.registry.clusters:
            self.compile_now()
        addresses = await self.server.start()
        for host, port in addresses:
            log.info("feddns %s serving %s on %s port %d (udp+tcp)", __version__,
                     ", ".join(o.name for o in self.settings.origins), host, port)
        for source in self.sources:
            name = (f"static source {source.path}" if isinstance(source, StaticSource)
                    else f"kubernetes source {source.cluster}")
            self._tasks.append(asyncio.create_task(_guard(name, source.run), name=name))
        self._tasks.append(asyncio.create_task(_guard("expiry", self._expire), name="expiry"))
        if self.settings.snapshot.path is not None:
            self._tasks.append(asyncio.create_task(_guard("snapshot", self._save_snapshots),
                                                   name="snapshot"))
        return addresses

    async def _warm_start(self) -> None:
        path = self.settings.snapshot.path
        if path is None:
            return
        started = time.perf_counter()
        saved = await asyncio.to_thread(
            snapshot.load, path, federation=self.settings.federation, wall_now=self.wall(),
            max_stale=self.settings.freshness.max_stale)
        now, wall = self.clock(), self.wall()
        known = {c.name for c in self.settings.clusters}
        for name, item in saved.items():
            if name in known:
                self.registry.restore(item.snapshot, now=now, age=max(0.0, wall - item.synced_wall))
        if saved:
            # Compiled in batches once serving (and any service a query asks for, at once).
            log.info("warm start: answering from the snapshot after %.0f ms",
                     (time.perf_counter() - started) * 1000)

    async def _save_snapshots(self) -> None:
        """Save the registry every ``snapshot.interval`` s when it changed."""
        path = self.settings.snapshot.path
        assert path is not None
        saved_generation = -1
        failing = False
        while True:
            await asyncio.sleep(self.settings.snapshot.interval)
            if self.registry.generation == saved_generation:
                continue
            if not any(e.snapshot is not None for e in self.registry.clusters.values()):
                continue  # nothing known yet: never replace a good snapshot with an empty one
            generation = self.registry.generation
            now, wall = self.clock(), self.wall()
            clusters = {
                # Copied here, on the loop: the registry changes its dicts in place.
                e.name: snapshot.SavedCluster(ClusterSnapshot(e.name, dict(e.snapshot.services)),
                                              wall - (now - e.last_sync))
                for e in self.registry.clusters.values()
                if e.snapshot is not None and e.last_sync is not None
                and e.state is not ClusterState.EXPIRED
            }
            data = await asyncio.to_thread(snapshot.encode, clusters,
                                           federation=self.settings.federation, wall=wall)
            try:
                await asyncio.to_thread(snapshot.write_atomically, path, data)
            except OSError as exc:
                if not failing:
                    log.error("cannot save the snapshot to %s: %s (still serving from memory;"
                              " the previous snapshot is kept)", path, exc)
                failing = True
                continue
            if failing:
                log.info("snapshot saved to %s again", path)
            failing = False
            saved_generation = generation

    async def _expire(self) -> None:
        """Expire clusters whose data has been stale for longer than max_stale."""
        max_stale = self.settings.freshness.max_stale
        while True:
            await asyncio.sleep(min(5.0, max_stale / 10))
            for name in self.registry.expire(now=self.clock(), max_stale=max_stale):
                log.error("cluster %s: data stale for more than %.0f s: expired, no longer"
                          " answered", name, max_stale)

    async def stop(self) -> None:
        """Stop sources and the server."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.server.stop()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set."""
        await self.start()
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            await self.stop()


async def _guard(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run a background task; on an unexpected error log it and restart with backoff."""
    delay = 0.8
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; restarting in %.1f s", name, delay)
        if time.monotonic() - started > 120:
            delay = 0.8
        await asyncio.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 30.0)


def watch_settings(src: KubernetesSourceConfig) -> WatchSettings:
    """The Kubernetes source's settings from its config section."""
    from feddns.sources.kubernetes.source import WatchSettings

    return WatchSettings(
        kubeconfig=src.kubeconfig,
        context=src.context,
        in_cluster=src.in_cluster,
        namespaces=tuple(src.namespaces),
        exported_only=src.exported_only,
        watch_timeout=src.watch_timeout,
        read_timeout=src.read_timeout,
        connect_timeout=src.connect_timeout,
        backoff_max=src.backoff_max,
    )


def locator_from(settings: Settings) -> Locator:
    """The client locator from the clusters' networks and the locality section."""
    regions = {c.name: c.region for c in settings.clusters}
    rules = rules_from([
        (c.name, c.region, [(n.cidr, n.zone) for n in c.networks]) for c in settings.clusters
    ])
    local_name = settings.locality.local_cluster
    local = Place(local_name, regions.get(local_name)) if local_name else None
    trusted = [ipaddress.ip_network(n) for n in settings.locality.trusted_forwarders]
    return Locator(rules, local=local, trusted_forwarders=trusted)
