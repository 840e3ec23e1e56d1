"""Fixed-bucket histograms as plain lists: counting on the hot paths without a library.

Why it exists: code on the query and compile paths must not call into a
metrics library (locks, label lookups) for every observation. A
:class:`Buckets` is a list of counts and a running sum; ``observe.metrics``
turns it into a Prometheus histogram only when ``/metrics`` is read. It
imports nothing, so every layer (the transports, the compiler) can count
without loading the Prometheus client.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

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
