"""Ground truth and verifier of the chaos harness (``bench/chaos.py``): pure, no I/O, no clock.

Why it exists: a fault-sequence run is only worth something if every answer is
judged against what was true at the moment it was given, with exemptions that
are feddns's *documented* behaviour and nothing else. This module holds that
judgement apart from the processes and sockets, so it can be unit-tested with
synthetic timelines (``tests/unit/test_chaos_verifier.py``) and so the
definition of a wrong answer (written out in ``bench/chaos.py``'s docstring and
the README, "Testing under faults") has exactly one implementation.

The model. The harness records, with monotonic timestamps, every state change
it causes: each API server (``up``, ``refused``, ``partitioned``), each feddns
process (``starting``, ``running``, ``changing``, ``stopped``), each broker
(``up``, ``down``, ``changing``) and every data change in every cluster. From
those it derives, per instance and cluster, the state of each *path* by which
the instance hears of the cluster: its own watch (``direct``), a peer's
publication on the bus (``bus``, fresh-capable when the instance does not
source the cluster itself) or a relay of a cluster it also sources
(``relay``: "relayed data is a fallback, never fresh", README). A path is UP,
DOWN, or UNCERTAIN (something is changing, a process is starting, the bus
is reconnecting): every rule needs a *sure* state, so uncertainty only ever
removes checks.
"""

from __future__ import annotations

import bisect
import ipaddress
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

UP, DOWN, UNCERTAIN = "up", "down", "uncertain"


@dataclass(frozen=True)
class Timers:
    """The feddns settings the harness runs with, and the budgets derived from them.

    Every budget is a documented delay plus ``margin`` (scheduling on a loaded
    two-core machine); README and docs/kubernetes.md are the sources.
    """

    hold_down: float = 3.0
    """selection.hold_down (default)."""
    readmit_after: float = 10.0
    """selection.readmit_after (default)."""
    probe_detect: float = 4.2
    """probe_interval (2, jittered +-10 %) + probe_timeout (2): a silent partition noticed."""
    heartbeat_interval: float = 2.0
    """bus.heartbeat_interval (non-default, 30)."""
    peer_timeout: float = 6.0
    """bus.peer_timeout (non-default, 90)."""
    bus_backoff_max: float = 2.0
    """bus.backoff_max (non-default, 30): reconnection after every broker was down."""
    max_stale: float = 30.0
    """freshness.max_stale (non-default, one day), so expiry happens during a run."""
    sync_timeout: float = 8.0
    """freshness.sync_timeout (non-default, 15)."""
    snapshot_interval: float = 5.0
    """snapshot.interval (default)."""
    isolation_window: float = 5.0
    """selection.isolation.window (default)."""
    isolation_max_hold: float = 120.0
    """selection.isolation.max_hold (default)."""
    record_ttl: int = 5
    stale_ttl: int = 30
    negative_ttl: int = 5
    margin: float = 3.0
    direct_sync: float = 5.0
    """A direct path UP this long has delivered every change made before: a watch event
    (milliseconds), or the re-list after a heal (the probe retries every 0.5 s and
    restarts the watches) or after a start (list, compile)."""

    @property
    def expiry_check(self) -> float:
        """Expiry is checked every ``min(5 s, max_stale / 10)`` (docs/kubernetes.md)."""
        return min(5.0, self.max_stale / 10)

    def sync(self, kind: str) -> float:
        """Seconds a path must be UP to have delivered every earlier change."""
        if kind == "direct":
            return self.direct_sync
        # The publisher's own sync, then the bus: a reconnect round (backoff_max), the
        # subscription and the republication.
        return self.direct_sync + self.bus_backoff_max + 2.0

    def fresh_after(self, kind: str) -> float:
        """Seconds a fresh-capable path must be UP before the cluster surely counts fresh.

        Synced, then ``readmit_after`` (applied after every recovery).
        """
        return self.sync(kind) + self.readmit_after + self.margin

    def detect(self, kind: str) -> float:
        """Worst delay between a path breaking and feddns marking the cluster stale."""
        if kind == "direct":
            return self.probe_detect  # refused: at once; silent: the liveness probe
        # The publisher's detection and its status message, or a silent peer / a dead bus
        # noticed after peer_timeout (heartbeats every heartbeat_interval).
        return max(self.probe_detect + 1.0, self.peer_timeout + self.heartbeat_interval)

    def dead_after(self, kind: str) -> float:
        """Seconds a path must be DOWN before the cluster is *known dead*.

        Detected, then ``hold_down`` (during which it still counts fresh).
        """
        return self.detect(kind) + self.hold_down + self.margin

    @property
    def surely_expired_after(self) -> float:
        """Every path DOWN this long: the data has expired (max_stale + the check)."""
        return self.max_stale + self.expiry_check + self.margin

    @property
    def possibly_expired_after(self) -> float:
        """No path UP for this long: the data may have expired.

        (``last_fresh`` moves with
        probes and heartbeats every 2 s, and a warm start reads it from the freshness file,
        rewritten every ``snapshot.interval``).
        """
        return self.max_stale - max(self.snapshot_interval, self.heartbeat_interval) - self.margin

    @property
    def isolation_hold(self) -> float:
        """An episode ends ``max_hold`` after its start (at most the loss + its detection)."""
        return self.isolation_max_hold + self.margin


class Timeline:
    """A step function of time: ``(t, value)`` changes, appended in time order."""

    def __init__(self, initial: Any, t: float = -math.inf) -> None:
        self.times: list[float] = [t]
        self.values: list[Any] = [initial]

    def set(self, t: float, value: Any) -> None:
        """The value from ``t`` on (``t`` never before the last change)."""
        t = max(t, self.times[-1])
        if value == self.values[-1]:
            return
        if t == self.times[-1]:
            self.values[-1] = value
            if len(self.values) > 1 and self.values[-2] == value:
                self.times.pop()
                self.values.pop()
            return
        self.times.append(t)
        self.values.append(value)

    def at(self, t: float) -> Any:
        """The value at ``t``."""
        i = bisect.bisect_right(self.times, t) - 1
        return self.values[max(i, 0)]

    def since(self, t: float) -> tuple[Any, float]:
        """The value at ``t`` and when that value started (the segment's start)."""
        i = max(bisect.bisect_right(self.times, t) - 1, 0)
        return self.values[i], self.times[i]

    def segments(self, a: float, b: float) -> Iterator[tuple[float, float, Any]]:
        """``(start, end, value)`` of every segment overlapping ``[a, b]``."""
        i = max(bisect.bisect_right(self.times, a) - 1, 0)
        while i < len(self.times) and self.times[i] <= b:
            end = self.times[i + 1] if i + 1 < len(self.times) else math.inf
            yield self.times[i], end, self.values[i]
            i += 1

    def last_with(self, value: Any, t: float) -> float:
        """The latest time ``<= t`` at which the value was ``value`` (-inf: never)."""
        i = bisect.bisect_right(self.times, t) - 1
        if i >= 0 and self.values[i] == value:
            return t
        while i >= 0:
            if self.values[i] == value:
                return self.times[i + 1]
            i -= 1
        return -math.inf


# --------------------------------------------------------------------------- the truth


@dataclass(frozen=True)
class ServiceSpec:
    """What one cluster holds for one service (what the harness applied)."""

    headless: bool
    cluster_ips: Mapping[int, str]
    """Address family (4, 6) -> cluster IP; empty for a headless service."""
    endpoints: Mapping[str, bool]
    """Endpoint address -> ready (serving follows ready; nothing is terminating)."""

    def answer_set(self, family: int) -> frozenset[str]:
        """The addresses this cluster contributes to an answer of that family when chosen."""
        if self.headless:
            return frozenset(a for a, ready in self.endpoints.items()
                             if ready and family_of(a) == family)
        if family in self.cluster_ips and any(self.endpoints.values()):
            return frozenset({self.cluster_ips[family]})
        return frozenset()

    def addresses(self) -> Iterator[str]:
        yield from self.cluster_ips.values()
        yield from self.endpoints


def family_of(address: str) -> int:
    return ipaddress.ip_address(address).version


@dataclass(frozen=True)
class Owner:
    cluster: str
    service: str
    family: int


class Truth:
    """Every cluster's services over time, as the harness applied them."""

    def __init__(self) -> None:
        self.exists: dict[tuple[str, str], Timeline] = {}
        self.answers: dict[tuple[str, str, int], Timeline] = {}
        self.owners: dict[str, Owner] = {}
        self.current: dict[tuple[str, str], ServiceSpec] = {}

    def update(self, cluster: str, service: str, spec: ServiceSpec | None, t: float,
               t_after: float | None = None) -> None:
        """Record the service's state in ``cluster`` (None: deleted).

        The change was made between ``t`` and ``t_after``: within that span only what is
        true both before and after is counted as true (a deletion from ``t``, a creation
        from ``t_after``; an answer set is their intersection).
        """
        t_after = t if t_after is None else t_after
        key = (cluster, service)
        exists = self.exists.setdefault(key, Timeline(False))
        was = bool(exists.at(t))
        exists.set(t, was and spec is not None)
        exists.set(t_after, spec is not None)
        for family in (4, 6):
            line = self.answers.setdefault((cluster, service, family), Timeline(frozenset()))
            new = spec.answer_set(family) if spec is not None else frozenset()
            line.set(t, line.at(t) & new)
            line.set(t_after, new)
        if spec is None:
            self.current.pop(key, None)
            return
        self.current[key] = spec
        for address in spec.addresses():
            self.owners[address] = Owner(cluster, service, family_of(address))

    def services(self, cluster: str) -> list[str]:
        return [s for (c, s) in self.exists if c == cluster]

    def clusters_of(self, service: str) -> list[str]:
        return [c for (c, s) in self.exists if s == service]

    def exists_throughout(self, cluster: str, service: str, a: float, b: float) -> bool:
        line = self.exists.get((cluster, service))
        return line is not None and all(v for _, _, v in line.segments(a, b))

    def exists_at(self, cluster: str, service: str, t: float) -> bool:
        line = self.exists.get((cluster, service))
        return line is not None and bool(line.at(t))

    def present_during(self, owner: Owner, address: str, a: float, b: float) -> bool:
        """The address was part of its cluster's answer at some moment of ``[a, b]``."""
        line = self.answers.get((owner.cluster, owner.service, owner.family))
        return line is not None and any(address in v for _, _, v in line.segments(a, b))

    def ready_throughout(self, cluster: str, service: str, family: int, a: float,
                         b: float) -> frozenset[str]:
        """The addresses in the cluster's answer during the whole of ``[a, b]``."""
        line = self.answers.get((cluster, service, family))
        if line is None:
            return frozenset()
        sets = [v for _, _, v in line.segments(a, b)]
        return frozenset.intersection(*sets) if sets else frozenset()


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class Path:
    """One way an instance hears of a cluster."""

    instance: str
    cluster: str
    kind: str
    """``direct`` (its own watch), ``bus`` (a peer's publication; fresh-capable) or
    ``relay`` (a peer's publication of a cluster it also sources: data only)."""
    via: str | None = None
    """The publishing instance (bus, relay)."""

    @property
    def fresh_capable(self) -> bool:
        return self.kind != "relay"


class World:
    """Process, API-server and broker states over time, and what follows for each path."""

    def __init__(self, timers: Timers, *, clusters: Sequence[str],
                 direct: Mapping[str, Sequence[str]], brokers: Sequence[str]) -> None:
        """``direct``: instance -> the clusters it sources itself (the rest come by bus)."""
        self.timers = timers
        self.clusters = list(clusters)
        self.instances = list(direct)
        self.api = {c: Timeline("up") for c in clusters}
        self.proc = {i: Timeline("stopped") for i in direct}
        self.broker = {b: Timeline("down") for b in brokers}
        self.paths: dict[tuple[str, str], list[Path]] = {}
        for i, own in direct.items():
            for c in clusters:
                paths = [Path(i, c, "direct")] if c in own else []
                for j, theirs in direct.items():
                    if j != i and c in theirs:
                        paths.append(Path(i, c, "relay" if c in own else "bus", via=j))
                self.paths[(i, c)] = paths
        self._version = 0
        self._built = -1
        self._lines: dict[Path, Timeline] = {}
        self._any_up: dict[tuple[str, str], Timeline] = {}
        self._losses: dict[str, list[tuple[float, str, float]]] = {}
        self._bus = Timeline(UNCERTAIN)

    # -- recording ------------------------------------------------------------------------

    def set_api(self, cluster: str, state: str, t: float) -> None:
        self.api[cluster].set(t, state)
        self._version += 1

    def set_proc(self, instance: str, state: str, t: float) -> None:
        self.proc[instance].set(t, state)
        self._version += 1

    def set_broker(self, broker: str, state: str, t: float) -> None:
        self.broker[broker].set(t, state)
        self._version += 1

    # -- derived states -------------------------------------------------------------------

    def _bus_raw(self, t: float) -> str:
        states = [line.at(t) for line in self.broker.values()]
        if "up" in states:
            return UP
        return DOWN if all(s == "down" for s in states) else UNCERTAIN

    def _bus_line(self, points: list[float]) -> Timeline:
        """The bus's state over time.

        UP while a broker is up (one broker's loss is a failover, README), DOWN while none
        is, UNCERTAIN while one changes with none up, and for a reconnection round after the
        bus came back from none (instances retry every ``backoff_max`` at most).
        """
        reconnect = self.timers.bus_backoff_max * 2 + 1.0
        line = Timeline(UNCERTAIN)
        back_at = -math.inf
        previous = DOWN
        for x in points:
            raw = self._bus_raw(x)
            if raw == UP and previous != UP:
                back_at = x
            previous = raw
            line.set(x, UNCERTAIN if raw == UP and x - back_at < reconnect else raw)
        return line

    def _breakpoints(self) -> list[float]:
        times: set[float] = set()
        for line in [*self.api.values(), *self.proc.values(), *self.broker.values()]:
            times.update(x for x in line.times if x > -math.inf)
        reconnect = self.timers.bus_backoff_max * 2 + 1.0
        return sorted(times | {x + reconnect for x in times})

    def bus_state(self, t: float) -> str:
        """The bus's state at ``t`` (see ``_bus_line``)."""
        self._build()
        return str(self._bus.at(t))

    def _path_raw(self, p: Path, t: float) -> str:
        me = self.proc[p.instance].at(t)
        if me != "running":
            return UNCERTAIN
        api = self.api[p.cluster].at(t)
        if p.kind == "direct":
            if api == "up":
                return UP
            return DOWN if api in ("refused", "partitioned") else UNCERTAIN
        peer = self.proc[p.via or ""].at(t)
        bus = self._bus.at(t)
        parts = [
            UP if peer == "running" else DOWN if peer == "stopped" else UNCERTAIN,
            UP if api == "up" else DOWN if api in ("refused", "partitioned") else UNCERTAIN,
            bus,
        ]
        if DOWN in parts:
            return DOWN
        return UP if all(x == UP for x in parts) else UNCERTAIN

    def _build(self) -> None:
        if self._built == self._version:
            return
        points = self._breakpoints()
        self._bus = self._bus_line(points)
        self._lines = {}
        for paths in self.paths.values():
            for p in paths:
                line = Timeline(UNCERTAIN)
                for x in points:
                    line.set(x, self._path_raw(p, x))
                self._lines[p] = line
        self._any_up = {}
        self._losses = {i: [] for i in self.instances}
        for (i, c), paths in self.paths.items():
            line = Timeline(False)
            for x in points:
                line.set(x, any(self._lines[p].at(x) == UP for p in paths if p.fresh_capable))
            self._any_up[(i, c)] = line
            # A loss: the cluster stops being heard by any fresh-capable path while the
            # instance runs (its own stop is no loss: the new process remembers none).
            for k in range(1, len(line.times)):
                x = line.times[k]
                if line.values[k - 1] and not line.values[k] and self.proc[i].at(x) == "running":
                    self._losses[i].append((x, c, self._noticed_within(i, c, x)))
        for losses in self._losses.values():
            losses.sort()
        self._built = self._version

    def path_state(self, p: Path, t: float) -> tuple[str, float]:
        """The path's state at ``t`` and since when it has been in it."""
        self._build()
        state, since = self._lines[p].since(t)
        return str(state), since

    def _held(self, p: Path, state: str, t: float, start: float | None = None) -> float:
        """Seconds the path had been in ``state`` at ``start`` and stayed so until ``t``.

        -inf when it is not in that state at ``t``; ``start`` defaults to ``t``. A value
        of at least X means: at every moment of ``[start, t]`` it had been so for X s.
        """
        now, since = self.path_state(p, t)
        return (t if start is None else start) - since if now == state else -math.inf

    def surely_fresh(self, instance: str, cluster: str, t: float,
                     start: float | None = None) -> bool:
        """A fresh-capable path has been UP long enough to sync and be readmitted.

        At every moment of ``[start, t]`` (``start`` defaults to ``t``).
        """
        return any(self._held(p, UP, t, start) >= self.timers.fresh_after(p.kind)
                   for p in self.paths[(instance, cluster)] if p.fresh_capable)

    def current(self, instance: str, cluster: str, t: float,
                start: float | None = None) -> float | None:
        """The sync budget B when the instance surely has the cluster's data as of B s ago.

        Else None. Either its direct source is surely fresh ("the direct source wins while
        it is fresh"), or every path has been UP for its sync budget (no path disagrees).
        """
        paths = self.paths[(instance, cluster)]
        for p in paths:
            if (p.kind == "direct"
                    and self._held(p, UP, t, start) >= self.timers.fresh_after("direct")):
                return self.timers.sync("direct")
        if paths and all(self._held(p, UP, t, start) >= self.timers.sync(p.kind)
                         for p in paths):
            return max(self.timers.sync(p.kind) for p in paths)
        return None

    def known_dead(self, instance: str, cluster: str, t: float,
                   start: float | None = None) -> bool:
        """Every fresh-capable path DOWN for longer than detection + hold_down."""
        paths = [p for p in self.paths[(instance, cluster)] if p.fresh_capable]
        return bool(paths) and all(
            self._held(p, DOWN, t, start) >= self.timers.dead_after(p.kind) for p in paths)

    def surely_expired(self, instance: str, cluster: str, t: float,
                       start: float | None = None) -> bool:
        """Every path (relays too) DOWN for longer than max_stale and the expiry check."""
        paths = self.paths[(instance, cluster)]
        return bool(paths) and all(
            self._held(p, DOWN, t, start) >= self.timers.surely_expired_after for p in paths)

    def isolation_during(self, instance: str, a: float, b: float) -> bool:
        """A self-isolation episode may have been in effect at some moment of ``[a, b]``."""
        self._build()
        moments = [a, b] + [x + 1e-6 for x, _, _ in self._losses[instance] if a <= x <= b]
        return any(self.isolation_possible(instance, x) for x in moments)

    def possibly_expired(self, instance: str, cluster: str, t: float) -> bool:
        """No fresh-capable path UP for long enough that the data may have expired."""
        self._build()
        last = self._any_up[(instance, cluster)].last_with(True, t)
        return t - last > self.timers.possibly_expired_after

    def _noticed_within(self, instance: str, cluster: str, x: float) -> float:
        """The most seconds feddns can take to notice the loss of ``cluster`` at ``x``.

        What broke decides: an API server refusing is noticed at once (its connections are
        closed), a silent one by the liveness probe; a publisher that stopped by its "offline"
        status or last will at once; a dead bus after ``peer_timeout``. One second is added
        for the harness's own step (the fault's call, the status message on the bus).
        """
        tm = self.timers
        after = x + 0.5  # past the "changing" step of the harness's call

        def api() -> float:
            state = self.api[cluster].at(after)
            return 1.0 if state == "refused" else tm.probe_detect + 1.0

        hi = 0.0
        for p in self.paths[(instance, cluster)]:
            if not p.fresh_capable:
                continue
            if p.kind == "direct":
                hi = max(hi, api())
                continue
            if self.proc[p.via or ""].at(after) != "running":
                hi = max(hi, 1.0)
            elif self.api[cluster].at(after) != "up":
                hi = max(hi, api() + 1.0)
            else:
                hi = max(hi, tm.peer_timeout + tm.heartbeat_interval + 1.0)
        return hi

    def isolation_possible(self, instance: str, t: float) -> bool:
        """A self-isolation episode may be in effect.

        README, "Self-isolation is not failover": two clusters lost close enough in time
        that feddns may have noticed them within ``isolation.window`` of each other, not
        every cluster lost since then surely fresh again, and ``max_hold`` not over.
        """
        self._build()
        tm = self.timers
        horizon = tm.isolation_hold + tm.isolation_window + 2 * tm.detect("bus")
        # A restarted process remembers no earlier loss: only this life's losses count.
        born = self.proc[instance].last_with("starting", t)
        losses = [x for x in self._losses[instance] if max(t - horizon, born) <= x[0] <= t]
        for k, (start, first, noticed) in enumerate(losses):
            if t - start > tm.isolation_hold + noticed:
                continue
            paired = any(c != first and x - start <= tm.isolation_window + noticed
                         for x, c, _ in losses[k + 1:])
            if not paired:
                continue
            members = {c for _, c, _ in losses[k:]}
            if not all(self.surely_fresh(instance, c, t) for c in members):
                return True
        return False

    def running(self, instance: str, t: float) -> tuple[bool, float]:
        state, since = self.proc[instance].since(t)
        return state == "running", since


# --------------------------------------------------------------------------- knowledge


class Knowledge:
    """Which names each instance surely knows (from any source), kept by periodic ticks.

    A service becomes known to an instance when a cluster that has it is *current* there
    (``World.current``) and has had it for the whole sync budget. It stays known while the
    instance runs, across a restart only if it was known ``snapshot.interval`` + margin
    before the stop (the warm-start snapshot is saved every interval), and only until the
    service is deleted from that cluster or the cluster's data may have expired.
    """

    def __init__(self, world: World, truth: Truth) -> None:
        self.world = world
        self.truth = truth
        self.known: dict[str, dict[str, dict[str, float]]] = {
            i: defaultdict(dict) for i in world.instances}
        self.since: dict[str, dict[str, float]] = {i: {} for i in world.instances}

    def tick(self, t: float) -> None:
        for i in self.world.instances:
            for c in self.world.clusters:
                if self.world.possibly_expired(i, c, t):
                    self._drop(i, lambda svc, cl, _c=c: cl == _c, t)
                    continue
                budget = self.world.current(i, c, t)
                if budget is None:
                    continue
                for svc in self.truth.services(c):
                    if self.truth.exists_throughout(c, svc, t - budget, t):
                        self.known[i][svc].setdefault(c, t)
                        self.since[i].setdefault(svc, t)
            self._drop(i, lambda svc, cl: not self.truth.exists_at(cl, svc, t), t)

    def _drop(self, instance: str, gone: Any, t: float) -> None:
        for svc, by_cluster in self.known[instance].items():
            for c in [c for c in by_cluster if gone(svc, c)]:
                del by_cluster[c]
            if not by_cluster:
                self.since[instance].pop(svc, None)

    def stopped(self, instance: str, t: float) -> None:
        """The instance stopped at ``t``: keep only what its last snapshot surely holds."""
        cut = t - self.world.timers.snapshot_interval - 2.0
        self._drop(instance, lambda svc, c: self.known[instance][svc][c] > cut, t)

    def known_at(self, instance: str, service: str, t: float, t_end: float) -> bool:
        """Known at ``t`` (a query's send time) and not deleted before ``t_end`` (its reply)."""
        return any(q <= t and self.truth.exists_throughout(c, service, t, t_end)
                   for c, q in self.known[instance].get(service, {}).items())

    def known_since(self, instance: str, service: str) -> float:
        """Since when the name has been known without a break (inf: not known)."""
        return self.since[instance].get(service, math.inf)


# --------------------------------------------------------------------------- the verifier


@dataclass(frozen=True)
class Observation:
    """One query and its reply, as the client saw them."""

    t_send: float
    t_recv: float
    target: str
    """The instance asked, or ``resolver:<instance>`` through Unbound in front of it."""
    transport: str
    qname: str
    service: str
    qtype: str
    rcode: str
    records: tuple[tuple[str, int], ...] = ()
    """(address, TTL) of each A/AAAA record of the answer section."""
    ede: frozenset[int] = frozenset()
    edns: bool = True

    @property
    def family(self) -> int:
        return 6 if self.qtype == "AAAA" else 4

    @property
    def instance(self) -> str:
        return self.target.split(":", 1)[-1]

    @property
    def via_resolver(self) -> bool:
        return self.target.startswith("resolver:")


@dataclass(frozen=True)
class Wrong:
    rule: str
    why: str


@dataclass
class Verifier:
    """Judges observations; counts, per rule, how often it was armed and how often broken."""

    world: World
    truth: Truth
    knowledge: Knowledge
    armed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    broken: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def check(self, obs: Observation) -> list[Wrong]:
        out = (self._via_resolver(obs) if obs.via_resolver else self._direct(obs))
        for w in out:
            self.broken[w.rule] += 1
        return out

    def _arm(self, rule: str) -> None:
        self.armed[rule] += 1

    def _bogus(self, obs: Observation) -> list[Wrong]:
        out = []
        for address, _ in obs.records:
            owner = self.truth.owners.get(address)
            if owner is None or owner.service != obs.service or owner.family != obs.family:
                out.append(Wrong("bogus-address", f"{address} is no address of"
                                 f" {obs.service} ({obs.qtype}) in any cluster"
                                 + (f" (it belongs to {owner})" if owner else "")))
        return out

    def _negative(self, obs: Observation, *, known: bool, why: str) -> list[Wrong]:
        rule = {"NXDOMAIN": "nxdomain-known-name", "SERVFAIL": "servfail-known-name"}
        if obs.rcode in rule and known:
            return [Wrong(rule[obs.rcode], why)]
        return []

    def _candidates(self, i: str, obs: Observation, t: float, t_end: float,
                    start: float | None = None) -> dict[str, frozenset[str]]:
        """Fresh candidates: clusters surely fresh, current and ready at ``i``.

        Surely fresh and current at every moment of ``[start, t]`` (``start`` defaults to
        ``t``), with the same ready addresses in the answer set for the name during the
        whole sync window before ``start`` and until ``t_end``.
        """
        start = t if start is None else start
        out = {}
        for c in self.truth.clusters_of(obs.service):
            budget = self.world.current(i, c, t, start)
            if budget is None or not self.world.surely_fresh(i, c, t, start):
                continue
            ready = self.truth.ready_throughout(c, obs.service, obs.family,
                                                start - budget - 1.0, t_end)
            if ready:
                out[c] = ready
        return out

    def _direct(self, obs: Observation) -> list[Wrong]:
        i, t = obs.instance, obs.t_send
        out = self._bogus(obs)
        known = self.knowledge.known_at(i, obs.service, t, obs.t_recv)
        if known:
            self._arm("known-name")
        out += self._negative(obs, known=known, why=(
            f"{obs.service} is known to {i}: a cluster that has it was current there"
            " (README: a name known from any source never answers SERVFAIL; NXDOMAIN"
            " would deny a name that exists)"))
        iso = self.world.isolation_possible(i, t) or self.world.isolation_possible(i, obs.t_recv)
        fresh = self._candidates(i, obs, t, obs.t_recv)
        answered = {a for a, _ in obs.records}
        if any(self.world.surely_expired(i, c, t) for c in self.truth.clusters_of(obs.service)):
            self._arm("expired-answer")
        for address, _ in obs.records:
            owner = self.truth.owners.get(address)
            if owner is None or owner.service != obs.service:
                continue
            c = owner.cluster
            if self.world.surely_expired(i, c, t):
                out.append(Wrong("expired-answer", f"{address} is {c}'s, whose every path to"
                                 f" {i} has been down longer than max_stale"
                                 f" ({self.world.timers.max_stale:g} s) + the expiry check"))
            budget = self.world.current(i, c, t)
            if budget is not None:
                self._arm("obsolete-address")
                if not self.truth.present_during(owner, address, t - budget - 1.0,
                                                 obs.t_recv):
                    out.append(Wrong("obsolete-address", f"{address} left {c}'s answer for"
                                     f" {obs.service} more than {budget:g} s before, and"
                                     f" {c} is current at {i}"))
            if fresh and not iso and c not in fresh and self.world.known_dead(i, c, t):
                out.append(Wrong("dead-cluster-address", f"{address} is {c}'s, known dead at"
                                 f" {i} (every path down > detection + hold_down), while"
                                 f" {sorted(fresh)} are fresh and ready"))
        if obs.rcode != "NOERROR" or iso or not fresh:
            if fresh and iso:
                self._arm("isolation-exempt")
            return out + self._signal(obs)
        self._arm("fresh-candidate")
        if any(self.world.known_dead(i, c, t) for c in self.truth.clusters_of(obs.service)):
            self._arm("dead-cluster-address")
        ttls = {ttl for _, ttl in obs.records}
        if self.world.timers.stale_ttl in ttls:
            out.append(Wrong("stale-while-fresh", f"stale TTL {self.world.timers.stale_ttl}"
                             f" although {sorted(fresh)} are fresh and ready (README: stale"
                             " data answers only when no fresh candidate exists)"))
        for c, ready in sorted(fresh.items()):
            missing = ready - answered
            if missing:
                out.append(Wrong("missing-fresh-address", f"{sorted(missing)} of {c} (fresh,"
                                 f" current, ready throughout) absent from the answer"))
        return out + self._signal(obs)

    def _signal(self, obs: Observation) -> list[Wrong]:
        stale = any(ttl == self.world.timers.stale_ttl for _, ttl in obs.records)
        if stale and obs.edns and 3 not in obs.ede:
            return [Wrong("unsignalled-stale", "stale TTL without Extended DNS Error 3")]
        return []

    def _via_resolver(self, obs: Observation) -> list[Wrong]:
        """Through a caching resolver: what survives caching (TTLs 5/30, negative 5)."""
        i, t, tm = obs.instance, obs.t_send, self.world.timers
        out = self._bogus(obs)
        since = self.knowledge.known_since(i, obs.service)
        running, up_since = self.world.running(i, t)
        if obs.rcode == "NXDOMAIN" and since <= t - tm.negative_ttl - tm.margin:
            out.append(Wrong("resolver-nxdomain-known-name", f"{obs.service} known to {i}"
                             f" without a break since {t - since:.1f} s, longer than the"
                             f" negative TTL ({tm.negative_ttl} s)"))
        window = tm.stale_ttl + tm.margin
        if since <= t - window:
            self._arm("resolver-known-name")
        if obs.rcode == "SERVFAIL" and since <= t - window and running and up_since <= t - window:
            out.append(Wrong("resolver-servfail-known-name", f"{obs.service} known to {i}"
                             f" and {i} running, both for more than {window:g} s"))
        if not obs.records:
            return out
        # When the resolver can have fetched these records from the instance: a record
        # cached with TTL T (5 fresh, 30 stale) and shown with R left was fetched T - R ago.
        fetched = t - max(tm.stale_ttl - min(ttl for _, ttl in obs.records), 0) - 1.0
        fresh = {c: ready for c, ready in self._candidates(i, obs, obs.t_recv, obs.t_recv,
                                                           start=fetched).items()}
        guarded = bool(fresh) and not self.world.isolation_during(i, fetched, obs.t_recv)
        if any(self.world.surely_expired(i, c, obs.t_recv, fetched)
               for c in self.truth.clusters_of(obs.service)):
            self._arm("resolver-expired-answer")
        if guarded and any(self.world.known_dead(i, c, obs.t_recv, fetched)
                           for c in self.truth.clusters_of(obs.service)):
            self._arm("resolver-dead-cluster-address")
        for address, _ in obs.records:
            owner = self.truth.owners.get(address)
            if owner is None or owner.service != obs.service:
                continue
            c = owner.cluster
            if self.world.surely_expired(i, c, obs.t_recv, fetched):
                out.append(Wrong("resolver-expired-answer", f"{address} ({c}) was expired at"
                                 f" {i} whenever the resolver can have fetched it"))
            if guarded and c not in fresh and self.world.known_dead(i, c, obs.t_recv, fetched):
                out.append(Wrong("resolver-dead-cluster-address", f"{address} ({c}) was known"
                                 f" dead at {i} with {sorted(fresh)} fresh whenever the"
                                 " resolver can have fetched it"))
        return out


def describe(obs: Observation) -> str:
    """The answer in one short string (for report lines)."""
    records = " ".join(f"{a}/{ttl}" for a, ttl in obs.records)
    ede = f" ede={sorted(obs.ede)}" if obs.ede else ""
    return f"{obs.rcode}[{records}]{ede}"


def recent(events: Iterable[tuple[float, str]], t: float, *, window: float = 90.0,
           limit: int = 10) -> list[str]:
    """The events of the last ``window`` seconds before ``t``, as ``-12.3s kind``."""
    out = [f"{x - t:+.1f}s {what}" for x, what in events if t - window <= x <= t]
    return out[-limit:]
