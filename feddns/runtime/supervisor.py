"""The sources: built from the config, run as guarded tasks, reconciled on reload.

Why it exists: a source that crashes must never take DNS down, and a reload
must restart exactly the sources whose settings changed (a Kubernetes watch
restarted for nothing re-lists its cluster). Each source runs under
:func:`guarded`, which logs a failure and restarts it with the shared
back-off; sources are keyed by what they were built from, so a reload keeps
the ones whose key is unchanged. The rest of feddns sees sources only through
the :class:`~feddns.sources.Source` protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from feddns.backoff import Backoff
from feddns.config import KubernetesSourceConfig, Settings, StaticSourceConfig
from feddns.model.registry import Registry
from feddns.sources import CountedSource, Source
from feddns.sources.static import StaticSource

log = logging.getLogger("feddns.app")

HEALTHY_RUN = 120.0
"""A task that ran this long before failing restarts after the shortest pause again."""


async def guarded(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run a background task; on an unexpected error log it and restart with backoff."""
    backoff = Backoff(initial=0.8, maximum=30.0)
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; restarting", name)
        if time.monotonic() - started > HEALTHY_RUN:
            backoff.reset()
        await asyncio.sleep(backoff.next_delay())


class SourceSupervisor:
    """Builds, runs and reconciles the sources of one instance."""

    def __init__(self, registry: Registry, *, clock: Callable[[], float],
                 on_bulk_load: Callable[[], None] | None = None) -> None:
        self.registry = registry
        self.clock = clock
        self.on_bulk_load = on_bulk_load
        """Given to sources that load whole clusters at once (process-wide tuning)."""
        self.sources: dict[str, Source] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def build(self, settings: Settings) -> dict[str, Source]:
        """The sources ``settings`` asks for, by a key that changes when their settings do.

        A source whose key is already running is reused, not rebuilt.
        """
        sources: dict[str, Source] = {}
        by_file: dict[Path, tuple[list[str], float]] = {}
        for cluster in settings.clusters:
            src = cluster.source
            if isinstance(src, StaticSourceConfig):
                names, interval = by_file.get(src.file, ([], src.poll_interval))
                names.append(cluster.name)
                by_file[src.file] = (names, min(interval, src.poll_interval))
            elif isinstance(src, KubernetesSourceConfig):
                key = f"kubernetes {cluster.name} {src.model_dump_json()}"
                existing = self.sources.get(key)
                sources[key] = existing if existing is not None else self._kubernetes(
                    cluster.name, src, hold_down=settings.selection.hold_down)
        for path, (names, interval) in by_file.items():
            key = f"static {path} {interval} {','.join(names)}"
            existing = self.sources.get(key)
            sources[key] = existing if existing is not None else StaticSource(
                path, names, self.registry, poll_interval=interval, clock=self.clock)
        return sources

    def _kubernetes(self, cluster: str, src: KubernetesSourceConfig, *,
                    hold_down: float) -> Source:
        # Imported only when used: the client costs a quarter of a second at start.
        from feddns.sources.kubernetes.source import (  # noqa: PLC0415
            KubernetesSource,
            WatchSettings,
        )

        settings = WatchSettings(
            kubeconfig=src.kubeconfig, context=src.context, in_cluster=src.in_cluster,
            namespaces=tuple(src.namespaces), exported_only=src.exported_only,
            watch_timeout=src.watch_timeout, read_timeout=src.read_timeout,
            connect_timeout=src.connect_timeout, backoff_max=src.backoff_max,
            probe_interval=src.probe_interval, probe_timeout=src.probe_timeout,
            fast_retry_window=hold_down,
        )
        source = KubernetesSource(cluster, settings, self.registry, clock=self.clock)
        source.on_bulk_load = self.on_bulk_load
        return source

    def start(self, settings: Settings) -> None:
        """Build and start every source of ``settings``."""
        self.sources = self.build(settings)
        for key in self.sources:
            self._start(key)

    async def reconcile(self, settings: Settings) -> None:
        """Stop the sources ``settings`` no longer has (or has changed); start new ones."""
        wanted = self.build(settings)
        for key in [k for k in self.sources if k not in wanted]:
            await self._stop(key)
        self.sources = wanted
        for key in wanted:
            if key not in self._tasks:
                self._start(key)

    def _start(self, key: str) -> None:
        source = self.sources[key]
        self._tasks[key] = asyncio.create_task(guarded(source.label, source.run),
                                               name=source.label)

    async def _stop(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        """Stop every source."""
        for key in list(self._tasks):
            await self._stop(key)

    @property
    def watches_threads(self) -> bool:
        """True when some source runs worker threads (Kubernetes watches)."""
        return any(isinstance(s, CountedSource) for s in self.sources.values())

    def kubernetes_counts(self) -> dict[str, tuple[int, int]]:
        """Cluster -> (re-lists, watch events) of each Kubernetes source."""
        return {s.cluster: (s.relists, s.events) for s in self.sources.values()
                if isinstance(s, CountedSource)}


async def expire_forever(registry: Registry, max_stale: Callable[[], float], *,
                         clock: Callable[[], float]) -> None:
    """Expire clusters whose source was last known fresh longer than ``max_stale()`` ago."""
    while True:
        limit = max_stale()  # a reload may change it
        await asyncio.sleep(min(5.0, limit / 10))
        for name in registry.expire(now=clock(), max_stale=limit):
            log.error("cluster %s: data stale for more than %.0f s: expired, no longer"
                      " answered", name, limit)
