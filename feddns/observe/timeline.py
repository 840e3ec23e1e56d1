"""The instance's recent past, for the federation page: state changes and counter samples.

Why it exists: ``/metrics`` and ``/debug`` show the present; a person looking at
the federation also wants "what happened in the last minutes" without running
Prometheus: each cluster's last state changes with their times, and the query
rate by rcode, the stale answers and the programming latency over the last ten
minutes. The event-loop monitor's tick (every 0.25 s) calls :meth:`Timeline.note`:
it compares each cluster's displayed state with the one it saw last (a few
attribute reads per cluster) and, every ``sample_interval`` seconds, keeps one
sample of the cumulative counters in a bounded ring. Nothing on the query path
changes, and memory is bounded (``keep`` samples, ``per_cluster`` changes each).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Protocol

from feddns.observe.counting import rcode_totals

if TYPE_CHECKING:
    from feddns.dns.handling import Handler
    from feddns.model.registry import Registry
    from feddns.table.compiler import Compiler

SAMPLE_INTERVAL = 2.0
"""Seconds between two counter samples."""
KEEP_SAMPLES = 300
"""Samples kept: ten minutes at the default interval."""
PER_CLUSTER = 10
"""State changes kept per cluster."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of a cluster's displayed state (``ClusterEntry.display_state``)."""

    before: str
    after: str
    wall: float
    """When it changed (wall clock, seconds since the epoch)."""
    error: str | None
    """Why, as the source said (None when it became fresh)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """The cumulative counters at one moment."""

    wall: float
    rcodes: dict[str, int]
    stale: int
    programming_count: int
    programming_sum: float
    programming_buckets: tuple[int, ...]
    """Observations per bucket (not cumulative), the overflow last."""


class Observed(Protocol):
    """What the timeline reads of a running instance.

    A part of ``observe.instance.Instance``, which itself names the timeline: hence a
    protocol of its own rather than an import cycle.
    """

    registry: Registry
    handler: Handler
    compiler: Compiler
    clock: Callable[[], float]


class Timeline:
    """Cluster state changes and counter samples of one instance (bounded)."""

    def __init__(self, app: Observed, *, wall: Callable[[], float],
                 sample_interval: float = SAMPLE_INTERVAL, keep: int = KEEP_SAMPLES,
                 per_cluster: int = PER_CLUSTER) -> None:
        self.app = app
        self.wall = wall
        self.sample_interval = sample_interval
        self.samples: deque[Sample] = deque(maxlen=keep)
        self.transitions: dict[str, deque[Transition]] = {}
        self.per_cluster = per_cluster
        self._seen: dict[str, str] = {}
        self._last_sample: float | None = None

    def note(self) -> None:
        """Record state changes since the last call; sample the counters when due."""
        app = self.app
        now = app.clock()
        wall_now = self.wall()
        clusters = app.registry.clusters
        for name, entry in clusters.items():
            shown = entry.display_state
            before = self._seen.get(name, "syncing")
            if shown == before:
                continue
            self._seen[name] = shown
            # The registry knows when the state changed; "unsynced" is a timer's verdict
            # on a syncing cluster, noticed within a tick.
            at = entry.state_since if shown == entry.state.value else now
            kept = self.transitions.setdefault(name, deque(maxlen=self.per_cluster))
            kept.append(Transition(before, shown, wall_now - max(0.0, now - at), entry.error))
        for name in [n for n in self._seen if n not in clusters]:
            del self._seen[name]
            self.transitions.pop(name, None)
        if self._last_sample is None or now - self._last_sample >= self.sample_interval:
            self._last_sample = now
            self.sample(wall_now)

    def sample(self, wall_now: float) -> None:
        """Keep one sample of the cumulative counters."""
        totals, stale = rcode_totals(self.app.handler.query_counts)
        programming = self.app.compiler.stats.programming_seconds
        self.samples.append(Sample(wall_now, totals, stale, programming.count,
                                   programming.total, tuple(programming.counts)))

    def transitions_view(self, cluster: str, wall_now: float) -> list[dict[str, Any]]:
        """A cluster's last state changes, newest first, as JSON."""
        return [{"from": t.before, "to": t.after, "at": round(t.wall, 3),
                 "ago_seconds": round(max(0.0, wall_now - t.wall), 3), "error": t.error}
                for t in reversed(self.transitions.get(cluster, ()))]

    def series_view(self) -> dict[str, Any]:
        """Rates between consecutive samples, as JSON.

        Answers per second by rcode, stale answers per second, and the programming
        latency (mean, and the bucket holding the 90th percentile).
        """
        bounds = self.app.compiler.stats.programming_seconds.bounds
        points = []
        samples = list(self.samples)
        for before, after in pairwise(samples):
            span = after.wall - before.wall
            if span <= 0:
                continue
            rates = {name: round((n - before.rcodes.get(name, 0)) / span, 3)
                     for name, n in after.rcodes.items()}
            count = after.programming_count - before.programming_count
            mean = ((after.programming_sum - before.programming_sum) / count
                    if count > 0 else None)
            points.append({
                "at": round(after.wall, 3),
                "rcodes": rates,
                "stale": round((after.stale - before.stale) / span, 3),
                "programmed": count,
                "programming_mean_seconds": None if mean is None else round(mean, 6),
                "programming_p90_seconds": _p90(before.programming_buckets,
                                                after.programming_buckets, bounds),
            })
        return {"interval_seconds": self.sample_interval, "points": points}


def _p90(before: tuple[int, ...], after: tuple[int, ...],
         bounds: tuple[float, ...]) -> float | None:
    """The upper bound of the bucket holding the 90th percentile of the new observations."""
    deltas = [a - b for a, b in zip(after, before, strict=True)]
    total = sum(deltas)
    if total <= 0:
        return None
    running = 0
    for i, n in enumerate(deltas):
        running += n
        if running >= 0.9 * total:
            return bounds[min(i, len(bounds) - 1)]  # the overflow: at least the top bound
    return None
