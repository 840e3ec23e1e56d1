"""The composition root: builds every part of a running instance from ``Settings``.

Why it exists: wiring lives in one place, so every other module can be built
and tested alone. This module only creates the parts and connects them; what
each one does lives with it:

* the registry (``model``) and the compiler that keeps the answer table in
  step with it and with time (``table``);
* the handler, its front memo and its limits, shared with the UDP/TCP
  transports (``dns``);
* the sources, supervised and reconciled on reload (``runtime.supervisor``),
  the federation bus, the warm-start store (``runtime.warmstart``), the
  reloader (``runtime.reloader``);
* the observability endpoints (``observe``), which read the instance through a
  narrow protocol.

The server starts listening before any source has delivered data (unknown
names answer SERVFAIL until the sync gate opens, never NXDOMAIN), so a slow or
dead source never delays DNS. Background tasks run guarded: a failure is
logged and the task restarted with backoff instead of taking DNS down.
Process-wide interpreter tuning is decided here, once (``runtime.tuning``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feddns import __version__
from feddns.config import BusSourceConfig, Settings, parse_host_port
from feddns.dns.front import FrontMemo
from feddns.dns.handling import Handler
from feddns.dns.limiting import Limits
from feddns.dns.server import DnsServer
from feddns.dns.slots import new_counts
from feddns.model.registry import Registry
from feddns.observe.counting import AppStats
from feddns.observe.monitoring import watch_loop
from feddns.observe.timeline import Timeline
from feddns.runtime import tuning
from feddns.runtime.demand import DemandMeter
from feddns.runtime.observing import start_observe
from feddns.runtime.options import locator_from, table_options
from feddns.runtime.reloader import Parts, Reloader, front_for, handler_for, reload_bus_keys
from feddns.runtime.scheduling import LoopScheduler
from feddns.runtime.statelog import ClusterStateLog
from feddns.runtime.supervisor import SourceSupervisor, expire_forever, guarded
from feddns.runtime.warmstart import WarmStart
from feddns.sources.hostnames import HostnameResolver
from feddns.table.compiler import Compiler
from feddns.table.table import AnswerTable

if TYPE_CHECKING:
    from feddns.observe.http import ObserveServer
    from feddns.observe.instance import BusStatsLike
    from feddns.sources.mqtt import FederationBus

log = logging.getLogger(__name__)


class App:
    """One running feddns instance (what ``feddns serve`` runs)."""

    def __init__(
        self,
        settings: Settings,
        *,
        listen: list[str] | None = None,
        config_path: Path | None = None,
        observe_listen: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        started: float | None = None,
    ) -> None:
        self.config_path = config_path
        """The file a reload reads (None: reload only with explicit settings)."""
        self.clock = clock
        self.wall = wall
        self.started = clock() if started is None else started
        """When this instance started (the CLI passes the process's start): the sync
        gate's ``sync_timeout`` counts from it."""
        self.observe_listen = observe_listen or settings.observe.listen
        """Where the HTTP endpoint listens (``--observe-listen`` wins over the config)."""
        self.stats = AppStats()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.http: ObserveServer | None = None
        self.registry = Registry.for_clusters(c.name for c in settings.clusters)
        self.compiler = Compiler(
            self.registry,
            AnswerTable(table_options(settings), serial=int(wall()),
                        locator=locator_from(settings)),
            scheduler=LoopScheduler(), clock=clock, wall=wall)
        self.limits = Limits(settings.dns)
        self.front = FrontMemo(new_counts())
        self.front.enabled = not self.limits.active and not settings.observe.query_log
        self.handler = Handler(self.compiler.table, front=self.front, limits=self.limits,
                               udp_payload_size=settings.dns.udp_payload_size)
        self.server = DnsServer(
            handler_for(settings, self.handler),
            [parse_host_port(a) for a in (listen or settings.dns.listen)],
            limits=self.limits, front=front_for(settings, self.front),
            tcp_idle_timeout=settings.dns.tcp_idle_timeout,
            tcp_io_timeout=settings.dns.tcp_io_timeout,
            udp_receive_buffer=settings.dns.udp_receive_buffer)
        self.supervisor = SourceSupervisor(self.registry, clock=clock,
                                           on_bulk_load=tuning.after_bulk_load)
        self.warm = (WarmStart(settings.snapshot.path, self.registry,
                               federation=settings.federation, clock=clock, wall=wall)
                     if settings.snapshot.path is not None else None)
        self.bus: FederationBus | None = None
        self.bus_stats: Callable[[], BusStatsLike | None] | None = None
        """The bus's counters for metrics and status (None without a bus)."""
        if settings.bus is not None:
            # Imported only when used (aiomqtt and paho load in a tenth of a second).
            from feddns.sources.mqtt import FederationBus

            own = {c.name for c in settings.clusters
                   if not isinstance(c.source, BusSourceConfig)}
            self.bus = FederationBus(settings.bus, federation=settings.federation,
                                     registry=self.registry, own_clusters=own, clock=clock,
                                     wall=wall)
            self.bus_stats = self.bus.stats
            self.compiler.after_compile.append(self.bus.notify)  # publish own changes
        self.hostnames = HostnameResolver(self.registry, settings.hostnames, clock=clock)
        """Resolves load-balancer ingress hostnames into the registry."""
        self.compiler.after_compile.append(self.hostnames.notify)
        self.demand = DemandMeter(self.front, self.compiler.set_demand,
                                  locator=lambda: self.compiler.table.locator,
                                  window=lambda: self.settings.selection.demand_window)
        """Where the queries come from, for capacity-aware locality."""
        self.state_log = ClusterStateLog(self.registry)
        self.compiler.after_compile.append(self.state_log.note)
        self.timeline = Timeline(self, wall=wall)
        """State changes and counter samples of the last minutes (the federation page)."""
        self.compiler.on_loaded.append(self._loaded)
        self.loaded = asyncio.Event()
        self.reloader = Reloader(
            Parts(self.registry, self.compiler, self.handler, self.limits, self.front,
                  self.server, self.supervisor, self.stats),
            settings, config_path=config_path, wall=wall, listen_fixed=listen is not None,
            observe_fixed=observe_listen is not None, on_applied=self._reloaded)
        self._tasks: list[asyncio.Task[object]] = []

    # --- what observe reads (feddns.observe.instance.Instance) ---------------------------

    @property
    def settings(self) -> Settings:
        """The settings in force (a reload replaces them)."""
        return self.reloader.settings

    @property
    def table(self) -> AnswerTable:
        """The answer table in service."""
        return self.compiler.table

    @property
    def warm_started(self) -> bool:
        """True when the warm-start snapshot restored some cluster."""
        return self.warm is not None and self.warm.warm_started

    @property
    def is_ready(self) -> bool:
        """True once the sync gate opened (latched, like CoreDNS's ``ready``).

        That is: every cluster delivered data (live or from the warm-start
        snapshot) or ``freshness.sync_timeout`` passed without it. A cluster lost
        (or added by a reload) later does not make a serving instance unready.
        """
        return self.loaded.is_set() or (self.warm_started and self.registry.is_loaded)

    def source_kinds(self) -> dict[str, str]:
        """Cluster -> the kind of its configured source (clusters only on the bus: none)."""
        return {c.name: c.source.type for c in self.settings.clusters}

    def kubernetes_counts(self) -> dict[str, tuple[int, int]]:
        """Cluster -> (re-lists, watch events) of each Kubernetes source."""
        return self.supervisor.kubernetes_counts()

    def hostname_status(self) -> list[dict[str, Any]]:
        """Every load-balancer hostname in use: its addresses, TTL, failures (``/debug``)."""
        return self.hostnames.status()

    # --- life -------------------------------------------------------------------------

    def _loaded(self) -> None:
        unsynced = self.registry.unsynced()
        if unsynced:
            log.warning("ready: answering NXDOMAIN for unknown names from now; %d of %d"
                        " cluster(s) unsynced past sync_timeout: %s", len(unsynced),
                        len(self.registry.clusters), ", ".join(unsynced))
        else:
            log.info("all %d cluster(s) loaded; answering NXDOMAIN for unknown names from"
                     " now", len(self.registry.clusters))
        self.loaded.set()

    def _tick(self) -> None:
        """The monitor's periodic checks: log state changes, keep the page's timeline."""
        self.state_log.note()
        self.timeline.note()

    def _reloaded(self, settings: Settings, added: list[str]) -> None:
        self.compiler.start_gate(added, timeout=settings.freshness.sync_timeout)
        self.hostnames.configure(settings.hostnames)
        if self.supervisor.watches_threads:
            tuning.for_watch_threads()
        if self.bus is not None and settings.bus is not None:
            reload_bus_keys(self.bus, settings.bus)

    def compile_now(self, *, limit: int | None = None) -> int:
        """Apply pending registry changes to the answer table (tests call it directly)."""
        return self.compiler.compile_now(limit=limit)

    async def start(self) -> list[tuple[str, int]]:
        """Load the warm-start snapshot, listen, then start the sources.

        Returns the bound addresses. Nothing here waits for a source: a dead API
        server or broker never delays DNS.
        """
        self.loop = asyncio.get_running_loop()
        settings = self.settings
        if self.warm is not None:
            await self.warm.load(known={c.name for c in settings.clusters},
                                 max_stale=settings.freshness.max_stale)
        if not self.registry.clusters:
            self.compile_now()
        addresses = await self.server.start()
        for host, port in addresses:
            log.info("feddns %s serving %s on %s port %d (udp+tcp)", __version__,
                     ", ".join(o.name for o in settings.origins), host, port)
        self.supervisor.start(settings)
        if self.supervisor.watches_threads:
            tuning.for_watch_threads()
        self.compiler.start_gate(list(self.registry.clusters),
                                 timeout=settings.freshness.sync_timeout, since=self.started)
        self.background("expiry", lambda: expire_forever(
            self.registry, lambda: self.settings.freshness.max_stale, clock=self.clock))
        self.background("hostnames", self.hostnames.run)
        self.background("demand", self.demand.run)
        self.background("monitor", lambda: watch_loop(self.stats, on_tick=self._tick))
        if self.warm is not None:
            warm = self.warm
            self.background("snapshot",
                            lambda: warm.save_forever(lambda: self.settings.snapshot.interval))
        if self.bus is not None:
            # Nothing waits for the broker: DNS is already answering.
            self.background("federation bus", self.bus.run)
        # Serve /metrics, the probes, /debug and /ui; a failure never stops DNS.
        self.http = await start_observe(self, self.observe_listen)
        return addresses

    def background(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run`` as a guarded task (restarted with backoff on failure) until stop."""
        self._tasks.append(asyncio.create_task(guarded(name, run), name=name))

    async def stop(self) -> None:
        """Stop sources, background tasks and the servers."""
        self.compiler.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.supervisor.stop()
        if self.http is not None:
            await self.http.stop()
            self.http = None
        await self.server.stop()

    def request_reload(self) -> None:
        """Reload soon, from the loop (what SIGHUP calls); reloads run one at a time."""
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._tasks.append(task)

    async def reload(self, settings: Settings | None = None) -> bool:
        """Re-read the config (or apply ``settings``); True when the new one was applied."""
        return await self.reloader.reload(settings)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set."""
        await self.start()
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            await self.stop()
