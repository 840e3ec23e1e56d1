"""Plain counters: histograms in lists, the app's counters, bounded label names.

Why it exists: code on the query and compile paths must not call into a
metrics library (locks, label lookups) for every observation. A ``Buckets``
is a list of counts and a running sum, :class:`AppStats` holds the app's
counters; ``observe.metrics`` turns them into Prometheus families only when
``/metrics`` is read. This module imports nothing from feddns and no
third-party library, so the DNS transport and the app can count without
loading the Prometheus client (it loads with the HTTP endpoint).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

LATENCY_BOUNDS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                  0.005, 0.01, 0.025, 0.1)
"""Seconds: answering one query takes microseconds; the top buckets catch a stalled loop."""

COMPILE_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0, 10.0)
"""Seconds: one compile turn (a batch of services) up to a full re-list of a large cluster."""

PROGRAMMING_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                      10.0, 30.0, 60.0)
"""Seconds from a registry change to the answer table that shows it."""


class Buckets:
    """Counts per upper bound (``le``), plus the overflow, the sum and the count."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)
        """Observations per bucket (not cumulative); the last one is above every bound."""
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Record one observation (bucket ``le`` includes values equal to the bound)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at or below it)`` pairs, ``+Inf`` last."""
        out = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


LOOP_LAG_WINDOW = 40
"""Event-loop lag samples kept (one every ``monitoring.LAG_INTERVAL`` s: ten seconds)."""


@dataclass(slots=True)
class AppStats:
    """Counters the app keeps for the collector (plain values, updated on the loop)."""

    started: float = field(default_factory=time.monotonic)
    compile_seconds: Buckets = field(default_factory=lambda: Buckets(COMPILE_BOUNDS))
    programming_seconds: Buckets = field(default_factory=lambda: Buckets(PROGRAMMING_BOUNDS))
    changed_services: int = 0
    reloads: Counter[str] = field(default_factory=Counter)
    """Reloads by result: ``success`` or ``failure``."""
    last_reload_ok: bool = True
    last_reload_error: str | None = None
    loop_lag: deque[float] = field(default_factory=lambda: deque(maxlen=LOOP_LAG_WINDOW))
    isolation_episodes: int = 0
    """Suspected self-isolation episodes so far."""


QTYPE_NAMES: Mapping[int, str] = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
    33: "SRV", 35: "NAPTR", 43: "DS", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 251: "IXFR",
    252: "AXFR", 255: "ANY",
}
"""Query types counted by name; every other type is counted as "other"."""


def qtype_label(qtype: int) -> str:
    """The ``qtype`` label of a query type (bounded: unknown types are "other")."""
    return QTYPE_NAMES.get(qtype, "other")
