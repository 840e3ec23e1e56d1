"""The composition root: builds registry, answer table, sources and server from Settings.

Why it exists: wiring lives in one place, so every other module can be built
and tested alone. The server starts listening before any source has
delivered data (names answer SERVFAIL until then, never NXDOMAIN), so a slow
or dead source never delays DNS. Background tasks run under a guard that logs
a failure and restarts the task with backoff instead of taking DNS down.

A reload (SIGHUP, :meth:`App.reload`) validates the new file first and keeps
the running config when it is invalid; a valid one is applied without
dropping a query: a new answer table is compiled from the new settings and
the same registry (in batches, while the old table keeps answering), then
swapped in by one assignment; sources of removed clusters stop and those of
added clusters start. Listen addresses, the federation name, the snapshot
path and the bus section take a restart (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Union

from feddns import __version__
from feddns.checking import load_checked
from feddns.config import (
    BusSourceConfig,
    KubernetesSourceConfig,
    Settings,
    StaticSourceConfig,
    parse_host_port,
)
from feddns.dns.answer import AnswerTable, compile_one, next_serial, service_key_of, sync_table
from feddns.dns.compiling import OriginZone
from feddns.dns.handling import Handler, UdpFront
from feddns.dns.server import DnsServer, HandleFn
from feddns.errors import ConfigError
from feddns.model.registry import ClusterEntry, ClusterState, Registry
from feddns.model.services import ClusterSnapshot
from feddns.observe import logs
from feddns.observe.counting import AppStats
from feddns.observe.monitoring import watch_loop
from feddns.policy.health import Damping, Episode, Isolation, isolation_episode, next_change
from feddns.policy.locality import Locator, Place, rules_from
from feddns.sources import snapshot
from feddns.sources.static import StaticSource

COMPILE_BATCH = 200
"""Services compiled per turn of the event loop (keeps query latency flat during re-lists)."""

if TYPE_CHECKING:
    from feddns.model.services import ServiceKey
    from feddns.observe.http import ObserveServer
    from feddns.observe.metrics import BusStatsLike
    from feddns.sources.kubernetes.source import KubernetesSource, WatchSettings
    from feddns.sources.mqtt import FederationBus

Source = Union[StaticSource, "KubernetesSource"]

log = logging.getLogger(__name__)

RESTART_KEYS = ("federation", "snapshot.path", "observe.listen", "dns.udp_receive_buffer",
                "bus")
"""Settings a reload cannot apply to a running instance (besides the listen addresses)."""


class App:
    """One running feddns instance.

    Extension points: a background service (the federation bus) is built in
    ``__init__`` from ``self.settings`` and started in :meth:`start` with
    :meth:`background`; it reports its counters through :attr:`bus_stats`
    (``/metrics``, ``/debug``, ``feddns status``) and hears of reloads in
    :meth:`_apply_reload`.
    """

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
        self.settings = settings
        self.started = clock() if started is None else started
        """When this instance started (the CLI passes the process's start): the sync
        gate's ``sync_timeout`` counts from it."""
        self.config_path = config_path
        """The file :meth:`reload` reads (None: reload only with explicit settings)."""
        self.clock = clock
        self.wall = wall
        self.listen_override = listen
        self.observe_listen = observe_listen or settings.observe.listen
        """Where the HTTP endpoint listens (``--observe-listen`` wins over the config)."""
        self._observe_fixed = observe_listen is not None
        self.stats = AppStats()
        self.registry = Registry.for_clusters(c.name for c in settings.clusters)
        self.table = AnswerTable(settings, serial=int(wall()), locator=locator_from(settings),
                                 clock=clock)
        self.handler = Handler(self.table, udp_payload_size=settings.dns.udp_payload_size)
        addresses = [parse_host_port(a) for a in (listen or settings.dns.listen)]
        self.server = DnsServer(
            self._dns_handle(settings),
            addresses,
            tcp_idle_timeout=settings.dns.tcp_idle_timeout,
            tcp_io_timeout=settings.dns.tcp_io_timeout,
            udp_receive_buffer=settings.dns.udp_receive_buffer,
            front=self._udp_front(settings),
        )
        self.loaded = asyncio.Event()
        self.warm_started = False
        """True once a warm-start snapshot restored at least one cluster."""
        self.bus_stats: Callable[[], BusStatsLike | None] | None = None
        """The bus's counters for metrics and status (set by whoever starts the bus)."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.http: ObserveServer | None = None
        self._sources: dict[str, Source] = {}
        self._sources = self._build_sources(settings)
        self.bus: FederationBus | None = None
        if settings.bus is not None:
            # Imported only when used (aiomqtt and paho load in a tenth of a second).
            from feddns.sources.mqtt import FederationBus

            own = {c.name for c in settings.clusters
                   if not isinstance(c.source, BusSourceConfig)}
            self.bus = FederationBus(settings.bus, federation=settings.federation,
                                     registry=self.registry, own_clusters=own, clock=clock,
                                     wall=wall)
            self.bus_stats = self.bus.stats
        self._source_tasks: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._compile_pending = False
        self._damping_timers: dict[str, float] = {}
        self._dirty_since: float | None = None
        self._cluster_states: dict[str, ClusterState] = {}
        self._reloading = False
        self._reload_missed: set[ServiceKey] = set()
        self._reload_lock = asyncio.Lock()
        self._reload_tasks: set[asyncio.Task[bool]] = set()
        self._gate_timers: list[asyncio.TimerHandle] = []
        self.isolation: Episode | None = None
        """The self-isolation episode in effect (None: none suspected)."""
        self.registry.on_change = self._schedule_compile
        self.table.on_miss = self._compile_on_demand

    @property
    def sources(self) -> list[Source]:
        """The running sources (one per static file, one per Kubernetes cluster)."""
        return list(self._sources.values())

    @property
    def is_ready(self) -> bool:
        """True once the sync gate opened.

        That is: every cluster delivered data (live or from the warm-start
        snapshot) or ``freshness.sync_timeout`` passed without it.

        Latched, like CoreDNS's ``ready``: a cluster lost (or added by a reload)
        later does not make a serving instance unready.
        """
        return self.loaded.is_set() or (self.warm_started and self.registry.is_loaded)

    def _start_sync_gate(self, names: list[str], *, since: float | None = None) -> None:
        """Stop waiting for ``names`` ``sync_timeout`` after ``since`` (default: now)."""
        loop = asyncio.get_running_loop()
        timeout = self.settings.freshness.sync_timeout
        if since is not None:
            timeout = max(0.0, timeout - (self.clock() - since))
        for name in names:
            self._gate_timers.append(loop.call_later(timeout, self._sync_gate_due, name))

    def _sync_gate_due(self, name: str) -> None:
        if self.registry.stop_waiting(name):
            entry = self.registry.clusters[name]
            log.warning("cluster %s: no data after %.0f s (sync_timeout): answering without"
                        " it; names only it would add answer NXDOMAIN until it syncs%s",
                        name, self.settings.freshness.sync_timeout,
                        f" ({entry.error})" if entry.error else "")

    def _udp_front(self, settings: Settings) -> UdpFront | None:
        # The query log must see every query: the transport answers nothing by itself then.
        return None if settings.observe.query_log else self.handler.udp_front

    def _dns_handle(self, settings: Settings) -> HandleFn:
        if settings.observe.query_log:
            return logs.logging_queries(self.handler.handle)
        return self.handler.handle

    def source_kinds(self) -> dict[str, str]:
        """Cluster -> the kind of its configured source (clusters only on the bus: none)."""
        return {c.name: c.source.type for c in self.settings.clusters}

    def kubernetes_counts(self) -> dict[str, tuple[int, int]]:
        """Cluster -> (re-lists, watch events) of each Kubernetes source."""
        return {s.cluster: (s.relists, s.events) for s in self._sources.values()
                if not isinstance(s, StaticSource)}

    def _build_sources(self, settings: Settings) -> dict[str, Source]:
        """Sources by a key that changes when their settings do (a reload restarts those).

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
                existing = self._sources.get(key)
                if existing is not None:
                    sources[key] = existing
                    continue
                # Imported only when used: the client costs a quarter of a second at start.
                from feddns.sources.kubernetes.source import KubernetesSource

                settings_for = watch_settings(src, hold_down=settings.selection.hold_down)
                sources[key] = KubernetesSource(cluster.name, settings_for, self.registry,
                                                clock=self.clock)
        for path, (names, interval) in by_file.items():
            key = f"static {path} {interval} {','.join(names)}"
            existing = self._sources.get(key)
            sources[key] = existing if existing is not None else StaticSource(
                path, names, self.registry, poll_interval=interval, clock=self.clock)
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
        done = compile_one(self.table, self.registry, key, wall_now=self.wall(),
                           now=self.clock())
        if done and self._reloading:
            self._reload_missed.add(key)  # the table being built must see it too
        return done

    def _schedule_compile(self) -> None:
        if self._dirty_since is None:
            self._dirty_since = time.perf_counter()
        if not self._compile_pending:
            self._compile_pending = True
            asyncio.get_running_loop().call_soon(self._compile_batches)

    def _compile_batches(self) -> None:
        """Compile one batch; if more is dirty, continue on a later turn of the loop."""
        if self._reloading:
            # The table is being rebuilt; what changes meanwhile is compiled into the new
            # one right after the swap (queries still compile what they ask for).
            self._compile_pending = False
            return
        self.compile_now(limit=COMPILE_BATCH)
        if self.registry.dirty:
            self._compile_pending = True
            asyncio.get_running_loop().call_soon(self._compile_batches)

    def compile_now(self, *, limit: int | None = None) -> int:
        """Apply pending registry changes to the answer table (``limit`` services at most)."""
        self._compile_pending = False
        started = time.perf_counter()
        self._note_isolation()
        changed = sync_table(self.table, self.registry, wall_now=self.wall(), now=self.clock(),
                             limit=limit)
        ended = time.perf_counter()
        self._schedule_damping()
        if self.bus is not None:
            self.bus.notify()  # compile, then tell the bus: own changes are published
        if changed:
            self.stats.compile_seconds.observe(ended - started)
            self.stats.changed_services += changed
            log.info(
                "compiled %d changed service(s) in %.1f ms; serial %d",
                changed, (ended - started) * 1000, self.table.serial,
            )
        if not self.registry.dirty and self._dirty_since is not None:
            self.stats.programming_seconds.observe(ended - self._dirty_since)
            self._dirty_since = None
        self.note_cluster_states()
        if self.table.loaded and not self.loaded.is_set():
            unsynced = self.registry.unsynced()
            if unsynced:
                log.warning("ready: answering NXDOMAIN for unknown names from now; %d of %d"
                            " cluster(s) unsynced past sync_timeout: %s", len(unsynced),
                            len(self.registry.clusters), ", ".join(unsynced))
            else:
                log.info("all %d cluster(s) loaded; answering NXDOMAIN for unknown names from"
                         " now", len(self.registry.clusters))
            self.loaded.set()
        return changed

    def note_cluster_states(self) -> None:
        """Log each cluster's state change once (whichever source or timer caused it)."""
        seen = self._cluster_states
        for name, entry in self.registry.clusters.items():
            before = seen.get(name, ClusterState.SYNCING)
            seen[name] = entry.state
            if before is entry.state:
                continue
            why = f" ({entry.error})" if entry.error else ""
            level = logging.INFO if entry.state is ClusterState.FRESH else logging.WARNING
            log.log(level, "cluster %s: %s -> %s%s", name, before.value, entry.state.value, why)
        for name in [n for n in seen if n not in self.registry.clusters]:
            del seen[name]

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

    def _note_isolation(self) -> None:
        """Follow self-isolation episodes: recompile their clusters, log, time their end.

        An episode changes how every one of its clusters counts, not only the one
        whose loss started it, so each cluster joining or leaving the held set is
        recompiled; ``max_hold`` ends it by time alone, so a timer is set for that.
        """
        sel = self.settings.selection
        now = self.clock()
        episode = isolation_episode(
            self.registry.clusters.values(), now=now,
            damping=Damping(sel.hold_down, sel.readmit_after),
            isolation=Isolation(sel.isolation.window, sel.isolation.fraction,
                                sel.isolation.max_hold))
        members = episode.members if episode is not None else frozenset()
        before = self.isolation.members if self.isolation is not None else frozenset()
        if members != before:
            if episode is not None and self.isolation is None:
                self.stats.isolation_episodes += 1
                log.warning("self-isolation suspected: clusters %s lost within %g s of each"
                            " other; answering as before (signalled stale) instead of failing"
                            " over, for at most %g s", ", ".join(sorted(members)),
                            sel.isolation.window, sel.isolation.max_hold)
            elif episode is None:
                log.info("self-isolation over: clusters %s; ordinary failover resumes",
                         ", ".join(sorted(before)))
            else:
                log.warning("self-isolation: clusters %s lost too",
                            ", ".join(sorted(members - before)))
            for name in members ^ before:
                self.registry.touch(name)
        if episode is not None and (self.isolation is None
                                    or self.isolation.start != episode.start):
            ends = episode.start + sel.isolation.max_hold
            asyncio.get_running_loop().call_later(max(0.0, ends - now) + 0.001,
                                                  self._isolation_due)
        self.isolation = episode

    def _isolation_due(self) -> None:
        if self.isolation is not None:
            self._schedule_compile()

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
        self.loop = asyncio.get_running_loop()
        await self._warm_start()
        if not self.registry.clusters:
            self.compile_now()
        addresses = await self.server.start()
        for host, port in addresses:
            log.info("feddns %s serving %s on %s port %d (udp+tcp)", __version__,
                     ", ".join(o.name for o in self.settings.origins), host, port)
        for key in self._sources:
            self._start_source(key)
        self._start_sync_gate(list(self.registry.clusters), since=self.started)
        self.background("expiry", self._expire)
        self.background("monitor", lambda: watch_loop(self.stats,
                                                      on_tick=self.note_cluster_states))
        if self.settings.snapshot.path is not None:
            self.background("snapshot", self._save_snapshots)
        if self.bus is not None:
            # Nothing waits for the broker: DNS is already answering.
            self.background("federation bus", self.bus.run)
        await self._start_http()
        return addresses

    def background(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run`` as a guarded task (restarted with backoff on failure) until stop."""
        self._tasks.append(asyncio.create_task(_guard(name, run), name=name))

    def _start_source(self, key: str) -> None:
        source = self._sources[key]
        name = (f"static source {source.path}" if isinstance(source, StaticSource)
                else f"kubernetes source {source.cluster}")
        self._source_tasks[key] = asyncio.create_task(_guard(name, source.run), name=name)

    async def _stop_source(self, key: str) -> None:
        task = self._source_tasks.pop(key, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _start_http(self) -> None:
        """Serve /metrics, /healthz, /readyz and /debug; a failure never stops DNS."""
        listen = self.observe_listen
        if listen is None:
            return
        host, port = parse_host_port(listen)
        # aiohttp takes a quarter of a second to import: in a thread, once DNS answers.
        module = await asyncio.to_thread(importlib.import_module, "feddns.observe.http")
        server: ObserveServer = module.ObserveServer(self, host, port)
        try:
            bound = await server.start()
        except OSError as exc:
            log.error("cannot serve metrics and health on %s: %s; DNS is served without them",
                      listen, exc)
            return
        self.http = server
        log.info("metrics, health and debug on http://%s/metrics, /healthz, /readyz, /debug",
                 f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}")

    async def _warm_start(self) -> None:
        """Load the snapshot as stale data; a warm start counts as synced for the gate.

        The gate opens for every cluster, not only those in the snapshot: the
        restarted instance knows what it knew before the restart, and a cluster
        missing from the snapshot never synced then either (or was just added). Its
        names answer NXDOMAIN until it syncs, as they did before the restart; holding
        back every unknown name for ``sync_timeout`` would turn a restart during one
        member's outage into SERVFAIL for musl clients, which is what it must not do.
        """
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
                self.warm_started = True
        if self.warm_started:
            missing = [n for n in self.registry.awaited() if self.registry.stop_waiting(n)]
            if missing:
                log.warning("warm start: clusters %s are not in the snapshot; not waiting for"
                            " them (unsynced until they sync)", ", ".join(missing))
        if saved:
            # Compiled in batches once serving (and any service a query asks for, at once).
            log.info("warm start: answering from the snapshot after %.0f ms",
                     (time.perf_counter() - started) * 1000)

    async def _save_snapshots(self) -> None:
        """Save the registry every ``snapshot.interval`` s when it changed.

        When only freshness moved (a quiet cluster whose source is healthy), a small
        freshness file beside the snapshot is rewritten instead of the whole snapshot,
        so that a restart counts the data's age from when its source was last known
        fresh, not from its last change.
        """
        path = self.settings.snapshot.path
        assert path is not None
        saved_generation = -1
        saved_body: str | None = None
        saved_fresh: dict[str, float] = {}
        failing = False
        while True:
            await asyncio.sleep(self.settings.snapshot.interval)
            if not any(e.snapshot is not None for e in self.registry.clusters.values()):
                continue  # nothing known yet: never replace a good snapshot with an empty one
            now, wall = self.clock(), self.wall()
            # Copied here, on the loop: the registry changes its dicts in place. Times in
            # whole seconds: a fresh cluster's moves on every save, a lost one's does not.
            live = {e.name: (e.snapshot, float(int(wall - (now - e.last_fresh))))
                    for e in self.registry.clusters.values()
                    if e.snapshot is not None and e.last_fresh is not None
                    and e.state is not ClusterState.EXPIRED}
            fresh = {name: at for name, (_, at) in live.items()}
            generation = self.registry.generation
            try:
                if generation != saved_generation or saved_body is None:
                    clusters = {
                        name: snapshot.SavedCluster(ClusterSnapshot(name, dict(snap.services)),
                                                    at)
                        for name, (snap, at) in live.items()
                    }
                    data = await asyncio.to_thread(snapshot.encode, clusters,
                                                   federation=self.settings.federation,
                                                   wall=wall)
                    await asyncio.to_thread(snapshot.write_atomically, path, data)
                    saved_generation, saved_body = generation, snapshot.body_digest(data)
                elif fresh != saved_fresh:
                    data = snapshot.encode_freshness(fresh, federation=self.settings.federation,
                                                     body=saved_body)
                    await asyncio.to_thread(snapshot.write_atomically,
                                            snapshot.freshness_path(path), data)
                else:
                    continue
            except OSError as exc:
                if not failing:
                    log.error("cannot save the snapshot to %s: %s (still serving from memory;"
                              " the previous snapshot is kept)", path, exc)
                failing = True
                continue
            if failing:
                log.info("snapshot saved to %s again", path)
            failing = False
            saved_fresh = fresh

    async def _expire(self) -> None:
        """Expire clusters whose data has been stale for longer than max_stale."""
        while True:
            max_stale = self.settings.freshness.max_stale  # a reload may change it
            await asyncio.sleep(min(5.0, max_stale / 10))
            for name in self.registry.expire(now=self.clock(), max_stale=max_stale):
                log.error("cluster %s: data stale for more than %.0f s: expired, no longer"
                          " answered", name, max_stale)

    async def stop(self) -> None:
        """Stop sources, background tasks and the servers."""
        tasks = [*self._reload_tasks, *self._source_tasks.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        for timer in self._gate_timers:
            timer.cancel()
        self._gate_timers.clear()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._source_tasks.clear()
        if self.http is not None:
            await self.http.stop()
            self.http = None
        await self.server.stop()

    # --- reload ----------------------------------------------------------------------

    def request_reload(self) -> None:
        """Reload soon, from the loop (what SIGHUP calls); reloads run one at a time."""
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._reload_tasks.add(task)
        task.add_done_callback(self._reload_tasks.discard)

    async def reload(self, settings: Settings | None = None) -> bool:
        """Re-read the config (or apply ``settings``); True when the new one was applied.

        An invalid file is rejected with one log line listing its problems, and the
        running config stays: a botched config upgrade must not take DNS down.
        """
        async with self._reload_lock:
            source = str(self.config_path) if settings is None else "the given settings"
            if settings is None:
                if self.config_path is None:
                    log.error("reload: no config file to re-read (started without -c)")
                    return self._reload_failed("no config file")
                try:
                    settings = await asyncio.to_thread(load_checked, self.config_path)
                except ConfigError as exc:
                    log.error("reload rejected, still serving the previous config: %s",
                              exc.render().replace("\n", "; "))
                    return self._reload_failed(exc.render())
            started = time.perf_counter()
            try:
                summary = await self._apply_reload(settings)
            except Exception as exc:
                # A bug, not a bad file: the old table keeps answering; say so loudly.
                log.exception("reload of %s failed half-way; the previous answer table stays"
                              " in service", source)
                self._reloading = False
                if self.registry.dirty:
                    self._schedule_compile()
                return self._reload_failed(f"{type(exc).__name__}: {exc}")
            self.stats.reloads["success"] += 1
            self.stats.last_reload_ok = True
            self.stats.last_reload_error = None
            log.info("reloaded %s in %.0f ms: %s", source,
                     (time.perf_counter() - started) * 1000, summary)
            return True

    def _reload_failed(self, why: str) -> bool:
        self.stats.reloads["failure"] += 1
        self.stats.last_reload_ok = False
        self.stats.last_reload_error = why
        return False

    async def _apply_reload(self, new: Settings) -> str:
        """Apply valid settings (see the module docstring); return what changed."""
        old = self.settings
        for key in _restart_changes(old, new, listen_fixed=self.listen_override is not None,
                                    observe_fixed=self._observe_fixed):
            log.warning("reload: %s changed; it takes a restart to apply (still using the"
                        " running value)", key)
        old_names = [c.name for c in old.clusters]
        new_names = [c.name for c in new.clusters]
        removed = [n for n in old_names if n not in new_names]
        added = [n for n in new_names if n not in old_names]

        # Sources: stop those whose settings changed or went away, keep the others.
        sources = self._build_sources(new)
        for key in [k for k in self._sources if k not in sources]:
            await self._stop_source(key)
        # The registry: same object (sources hold it); clusters in the new config order,
        # then clusters known only from the bus.
        for name in removed:
            self.registry.remove_cluster(name)
        entries = self.registry.clusters
        ordered = {n: entries.get(n) or ClusterEntry(n) for n in new_names}
        ordered.update((n, e) for n, e in entries.items() if n not in ordered)
        self.registry.clusters = ordered

        # A new table from the new settings, compiled in batches while the old answers.
        self._reloading = True
        self._reload_missed = set()
        table = AnswerTable(new, serial=next_serial(self.table.serial, self.wall()),
                            locator=locator_from(new), clock=self.clock)
        shadow = Registry(clusters=self.registry.clusters,
                          dirty={k for e in self.registry.clusters.values()
                                 if e.snapshot is not None for k in e.snapshot.services})
        while shadow.dirty:
            sync_table(table, shadow, wall_now=self.wall(), now=self.clock(),
                       limit=COMPILE_BATCH)
            await asyncio.sleep(0)
        shadow.dirty = self._reload_missed
        sync_table(table, shadow, wall_now=self.wall(), now=self.clock())
        table.loaded = self.registry.is_loaded and not self.registry.dirty
        table.set_serial(table.serial)  # a new version for the handler's front memo

        # The swap: no await from here on, so no query sees half of it.
        old_table = self.table
        self.settings = new
        self.table = table
        self.handler.table = table
        self.handler.udp_payload_size = new.dns.udp_payload_size
        old_table.on_miss = None
        table.on_miss = self._compile_on_demand
        self._reloading = False
        self.server.tcp_idle_timeout = new.dns.tcp_idle_timeout
        self.server.tcp_io_timeout = new.dns.tcp_io_timeout
        if new.observe.query_log != old.observe.query_log:
            self.server.set_handle(self._dns_handle(new), self._udp_front(new))
            log.info("query log %s", "on" if new.observe.query_log else "off")
        if new.observe.log_format != old.observe.log_format:
            logs.set_format(new.observe.log_format)
        self._damping_timers.clear()
        if self.registry.dirty:
            self._schedule_compile()
        else:
            self._schedule_damping()
        self._sources = sources
        for key in sources:
            if key not in self._source_tasks:
                self._start_source(key)
        self._start_sync_gate(added)
        self.note_cluster_states()
        parts = [f"serial {table.serial}", f"{len(table.by_service)} service(s)"]
        if added:
            parts.append(f"clusters added: {', '.join(added)}")
        if removed:
            parts.append(f"clusters removed: {', '.join(removed)}")
        return "; ".join(parts)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set."""
        await self.start()
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            await self.stop()


def _restart_changes(old: Settings, new: Settings, *, listen_fixed: bool = False,
                     observe_fixed: bool = False) -> list[str]:
    """The settings that changed but apply only after a restart (command-line values win)."""
    changed = []
    if not listen_fixed and old.dns.listen != new.dns.listen:
        changed.append("dns.listen")
    for key in RESTART_KEYS:
        if key == "observe.listen" and observe_fixed:
            continue
        section, _, field = key.partition(".")
        a, b = getattr(old, section), getattr(new, section)
        if field:
            a, b = getattr(a, field), getattr(b, field)
        if a != b:
            changed.append(key)
    return changed


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


def watch_settings(src: KubernetesSourceConfig, *, hold_down: float = 3.0) -> WatchSettings:
    """The Kubernetes source's settings from its config section (and the hold-down)."""
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
        probe_interval=src.probe_interval,
        probe_timeout=src.probe_timeout,
        fast_retry_window=hold_down,
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
