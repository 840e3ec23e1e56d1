"""The compiler: keeps the answer table in step with the registry and with time.

Why it exists: everything that turns registry data into answers, and decides
*when*, lives here and nowhere else. It recompiles the services the registry
marked dirty, a batch per turn of the event loop so queries are answered
between batches during a re-list (:meth:`Compiler.schedule`); compiles at once
a service a query asks for while it is still waiting (the table's
:class:`~feddns.table.table.Pending`, so a query never waits for its batch and
never calls back into the app); and owns the timers by which answers change
with time alone: a cluster's hold-down or readmission ending (flap damping),
a self-isolation episode ending, and the sync gate's ``sync_timeout``. A
reload compiles a new table from new options in batches while the old one keeps
answering (:meth:`Compiler.rebuild`), then swaps it in one step.

The SOA serial moves only when some service's plan differs from before
(CoreDNS bumps its serial on the same condition, ``endpointsEquivalent``).
NXDOMAIN is allowed only once the sync gate is open *and* everything is
compiled: before that a missing name may just not be compiled yet.

No I/O and no clock of its own: the event loop's ``call_soon``/``call_later``
and the clocks are given (:class:`Scheduler`), so it runs under a fake one in
unit tests.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from feddns.histogram import COMPILE_BOUNDS, PROGRAMMING_BOUNDS, Buckets
from feddns.model.registry import Registry
from feddns.model.services import ServiceKey
from feddns.policy.health import (
    Episode,
    Freshness,
    cluster_freshness,
    isolation_episode,
    next_change,
)
from feddns.policy.spreading import Demand
from feddns.table.names import ServiceNode, service_key_of, service_nodes
from feddns.table.options import TableOptions
from feddns.table.origins import OriginZone
from feddns.table.plans import plan_service
from feddns.table.reverse import pointers
from feddns.table.table import AnswerTable

log = logging.getLogger(__name__)

COMPILE_BATCH = 200
"""Services compiled per turn of the event loop (keeps query latency flat during re-lists)."""


class Timer(Protocol):
    """What ``call_later`` returns (an ``asyncio.TimerHandle``)."""

    def cancel(self) -> None:
        """Do not run."""


class Scheduler(Protocol):
    """The event loop, as far as the compiler uses it."""

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> Any:
        """Run ``callback`` on the next turn of the loop."""

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Run ``callback`` after ``delay`` seconds."""


@dataclass(slots=True)
class CompileStats:
    """What the compiler did, for metrics."""

    compile_seconds: Buckets = field(default_factory=lambda: Buckets(COMPILE_BOUNDS))
    """Time of each compile turn that changed something."""
    programming_seconds: Buckets = field(default_factory=lambda: Buckets(PROGRAMMING_BOUNDS))
    """From a registry change to the end of the compile that put its last change in."""
    changed_services: int = 0
    isolation_episodes: int = 0
    """Suspected self-isolation episodes so far."""


def next_serial(current: int, wall_now: float) -> int:
    """The serial after a visible change: wall-clock seconds, but always forward."""
    return max(current + 1, int(wall_now)) & 0xFFFFFFFF


def freshness_of(options: TableOptions, registry: Registry,
                 at: float) -> dict[str, Freshness]:
    """How every cluster counts at ``at``: damping, and self-isolation across clusters."""
    return cluster_freshness(registry.clusters.values(), now=at, damping=options.damping,
                             isolation=options.isolation)


def compile_key(table: AnswerTable, registry: Registry, key: ServiceKey, at: float,
                freshness: Mapping[str, Freshness]) -> bool:
    """Compile one service into ``table``; True when something visible changed."""
    views = registry.views(key)
    expired = False
    if not views:
        # Known only from expired clusters: keep every name it had, answering SERVFAIL.
        views = registry.views(key, expired=True)
        expired = bool(views)
    plan = plan_service(key, views, options=table.options, now=at, expired=expired,
                        freshness=freshness, resolved=registry.resolved, demand=table.demand)
    nodes: dict[bytes, ServiceNode] = {}
    ptrs = None
    if plan is not None:
        for origin in table.forward_origins:
            nodes.update(service_nodes(plan, origin, table.options))
        if table.reverse_wires:
            bases = [origin.child(key[1], key[0], "svc") for origin in table.forward_origins]
            ptrs = pointers(plan, bases, table.reverse_wires,
                            pinned=table.options.cluster_pinned)
    return table.apply_service(key, plan, nodes, ptrs)


def sync_table(table: AnswerTable, registry: Registry, *, wall_now: float,
               now: float | None = None, limit: int | None = None,
               compiled: set[ServiceKey] | None = None) -> int:
    """Recompile the services the registry marked dirty; return how many changed visibly.

    ``now`` (monotonic) drives flap damping; None means "long after every
    transition" (no damping), which is what socket-free tables use. With
    ``limit``, at most that many services are compiled and the rest stay
    dirty, so a caller on the event loop can yield to queries between batches.
    The keys compiled are added to ``compiled`` when given.
    """
    at = math.inf if now is None else now
    changed = 0
    freshness = freshness_of(table.options, registry, at)
    for key in registry.take_dirty(limit):
        if compiled is not None:
            compiled.add(key)
        if compile_key(table, registry, key, at, freshness):
            changed += 1
    loaded = registry.is_loaded and not registry.dirty
    if loaded != table.loaded:
        table.loaded = loaded
        table.bump()  # SERVFAIL turns into NXDOMAIN (or back)
    if changed:
        table.set_serial(next_serial(table.serial, wall_now))
    return changed


def compile_one(table: AnswerTable, registry: Registry, key: ServiceKey, *, wall_now: float,
                now: float | None = None) -> bool:
    """Compile one dirty service now (a query is waiting for it); True when it was dirty."""
    if key not in registry.dirty:
        return False
    registry.dirty.discard(key)
    at = math.inf if now is None else now
    if compile_key(table, registry, key, at, freshness_of(table.options, registry, at)):
        table.set_serial(next_serial(table.serial, wall_now))
    return True


class Compiler:
    """Keeps :attr:`table` in step with the registry, in batches, and with time."""

    def __init__(self, registry: Registry, table: AnswerTable, *, scheduler: Scheduler,
                 clock: Callable[[], float], wall: Callable[[], float]) -> None:
        self.registry = registry
        self.table = table
        self.scheduler = scheduler
        self.clock = clock
        self.wall = wall
        self.stats = CompileStats()
        self.isolation: Episode | None = None
        """The self-isolation episode in effect (None: none suspected)."""
        self.after_compile: list[Callable[[], None]] = []
        """Called after every compile turn (the bus publishes own changes; state logs)."""
        self.on_loaded: list[Callable[[], None]] = []
        """Called once, when the gate is open and everything is compiled (ready)."""
        self.loaded = False
        self._pending = False
        self._dirty_since: float | None = None
        self._damping_timers: dict[str, float] = {}
        self._timers: list[Timer] = []
        self._rebuilding: set[ServiceKey] | None = None
        """While :meth:`rebuild` runs: what was compiled into the old table meanwhile."""
        registry.on_change = self.schedule
        table.pending = self

    # --- scheduling ------------------------------------------------------------------

    def schedule(self) -> None:
        """The registry changed: compile soon (a batch per turn of the loop)."""
        if self._dirty_since is None:
            self._dirty_since = self.clock()
        if not self._pending:
            self._pending = True
            self.scheduler.call_soon(self._batches)

    def _batches(self) -> None:
        self.compile_now(limit=COMPILE_BATCH)
        if self.registry.dirty:
            self._pending = True
            self.scheduler.call_soon(self._batches)

    def compile_now(self, *, limit: int | None = None) -> int:
        """Apply pending registry changes to the table (``limit`` services at most)."""
        self._pending = False
        started = self.clock()
        self._note_isolation()
        changed = sync_table(self.table, self.registry, wall_now=self.wall(), now=self.clock(),
                             limit=limit, compiled=self._rebuilding)
        ended = self.clock()
        self._schedule_damping()
        if changed:
            self.stats.compile_seconds.observe(ended - started)
            self.stats.changed_services += changed
            log.info("compiled %d changed service(s) in %.1f ms; serial %d",
                     changed, (ended - started) * 1000, self.table.serial)
        if not self.registry.dirty and self._dirty_since is not None:
            self.stats.programming_seconds.observe(ended - self._dirty_since)
            self._dirty_since = None
        for callback in self.after_compile:
            callback()
        if self.table.loaded and not self.loaded:
            self.loaded = True
            for callback in self.on_loaded:
                callback()
        return changed

    def compile_pending(self, name: bytes, origin: OriginZone) -> bool:
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
        if done and self._rebuilding is not None:
            self._rebuilding.add(key)  # the table being built must see it too
        return done

    def set_demand(self, demand: Demand | None) -> int:
        """Take a new measure of where queries come from; return the services recompiled.

        Only capacity-aware services depend on it; a plan that comes out equal changes
        nothing visible (the runtime quantizes the demand so small moves change nothing).
        """
        if demand == self.table.demand:
            return 0
        self.table.demand = demand
        keys = [k for k, plan in self.table.plans.items() if plan.capacity_aware]
        self.registry.touch_services(keys)
        return len(keys)

    # --- time ---------------------------------------------------------------------------

    def _schedule_damping(self) -> None:
        """Recompile a cluster's services when its hold-down or readmission delay ends."""
        now = self.clock()
        damping = self.table.options.damping
        for entry in self.registry.clusters.values():
            at = next_change(entry, now=now, damping=damping)
            if at is None or self._damping_timers.get(entry.name) == at:
                continue
            self._damping_timers[entry.name] = at
            self._timers.append(self.scheduler.call_later(at - now + 0.001, self._damping_due,
                                                          entry.name, at))

    def _damping_due(self, cluster: str, at: float) -> None:
        if self._damping_timers.get(cluster) == at:
            del self._damping_timers[cluster]
            log.info("cluster %s: damping period over; re-evaluating its answers", cluster)
            self.registry.touch(cluster)

    def _note_isolation(self) -> None:
        """Follow self-isolation episodes: recompile their clusters, log, time their end.

        An episode changes how every one of its clusters counts, not only the one
        whose loss started it, so each cluster joining or leaving the held set is
        recompiled; ``max_hold`` ends it by time alone, so a timer is set for that.
        """
        options = self.table.options
        now = self.clock()
        episode = isolation_episode(self.registry.clusters.values(), now=now,
                                    damping=options.damping, isolation=options.isolation)
        members = episode.members if episode is not None else frozenset()
        before = self.isolation.members if self.isolation is not None else frozenset()
        if members != before:
            iso = options.isolation
            if episode is not None and self.isolation is None:
                self.stats.isolation_episodes += 1
                log.warning("self-isolation suspected: clusters %s lost within %g s of each"
                            " other; answering as before (signalled stale) instead of failing"
                            " over, for at most %g s", ", ".join(sorted(members)), iso.window,
                            iso.max_hold)
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
            ends = episode.start + options.isolation.max_hold
            self._timers.append(self.scheduler.call_later(max(0.0, ends - now) + 0.001,
                                                          self._isolation_due))
        self.isolation = episode

    def _isolation_due(self) -> None:
        if self.isolation is not None:
            self.schedule()

    def start_gate(self, names: list[str], *, timeout: float, since: float | None = None,
                   ) -> None:
        """Stop waiting for ``names`` ``timeout`` s after ``since`` (default: now).

        The sync gate: until then, a cluster that delivered nothing holds back
        NXDOMAIN for unknown names (it may have them); after, it is *unsynced*.
        """
        if since is not None:
            timeout = max(0.0, timeout - (self.clock() - since))
        for name in names:
            self._timers.append(self.scheduler.call_later(timeout, self._gate_due, name,
                                                          timeout))

    def _gate_due(self, name: str, timeout: float) -> None:
        if self.registry.stop_waiting(name):
            entry = self.registry.clusters[name]
            log.warning("cluster %s: no data after the sync timeout: answering without it;"
                        " names only it would add answer NXDOMAIN until it syncs%s", name,
                        f" ({entry.error})" if entry.error else "")

    def close(self) -> None:
        """Cancel every timer (the instance stops)."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._damping_timers.clear()

    # --- reload -------------------------------------------------------------------------

    def rebuild(self, table: AnswerTable) -> Iterator[None]:
        """Compile every service into ``table`` (new options), a batch per step; then swap.

        The old table keeps answering (and keeps being compiled) until the last
        step, which compiles into the new table what changed meanwhile and makes
        it :attr:`table` in one assignment: no query sees half of it. The caller
        yields to the event loop between steps.
        """
        self._rebuilding = set()
        table.demand = self.table.demand
        try:
            keys = sorted(self.registry.service_keys() | set(self.registry.dirty))
            at = self.clock()
            freshness = freshness_of(table.options, self.registry, at)
            for start in range(0, len(keys), COMPILE_BATCH):
                for key in keys[start:start + COMPILE_BATCH]:
                    compile_key(table, self.registry, key, at, freshness)
                yield
            at = self.clock()
            freshness = freshness_of(table.options, self.registry, at)
            for key in sorted(self._rebuilding):
                compile_key(table, self.registry, key, at, freshness)
        finally:
            self._rebuilding = None
        table.loaded = self.registry.is_loaded and not self.registry.dirty
        table.set_serial(next_serial(max(table.serial, self.table.serial), self.wall()))
        old, self.table = self.table, table
        old.pending = None
        table.pending = self
        self._damping_timers.clear()
        if self.registry.dirty:
            self.schedule()
        else:
            self._schedule_damping()
