"""The event-loop monitor: how late a timer fires is how long queries wait.

Why it exists: every query, compile and source event shares one event loop,
so anything that holds it (a huge compile, a slow callback, a garbage
collection) delays every answer. A timer callback that should run every
``LAG_INTERVAL`` seconds measures its own lateness with the precise clock;
the worst of each ``TICK_INTERVAL`` is kept, and the last ten seconds of those
feed ``feddns_event_loop_lag_seconds``. The interval is short so that a stall
of a few milliseconds is seen (a sample every quarter second saw a stall only
if it happened to cover the sample's due time); a timer callback costs about
a microsecond, so 200 a second cost nothing measurable. Under uvloop timers
have millisecond resolution: a sample can read up to 1 ms late with no stall
at all. The same tick runs the app's cheap periodic checks (logging cluster
state changes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter

from feddns.observe.counting import AppStats

LAG_INTERVAL = 0.005
"""Seconds between two lag samples."""
TICK_INTERVAL = 0.25
"""Seconds between two kept maxima (and two calls of ``on_tick``)."""


class LagSampler:
    """Samples the loop's lag with a timer callback every ``interval`` (no task, no sleep)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.worst = 0.0
        """The largest lag since :meth:`take` was last called."""
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Take samples until :meth:`stop`."""
        self._due = perf_counter() + self.interval
        self._timer = self.loop.call_later(self.interval, self._sample)

    def stop(self) -> None:
        """Stop sampling."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def take(self) -> float:
        """The largest lag since the last call (0 if none), and start over."""
        worst, self.worst = self.worst, 0.0
        return worst

    def _sample(self) -> None:
        now = perf_counter()
        lag = now - self._due
        self.worst = max(self.worst, lag)
        self._due = now + self.interval
        self._timer = self.loop.call_later(self.interval, self._sample)


async def watch_loop(stats: AppStats, *, on_tick: Callable[[], None] | None = None,
                     interval: float = LAG_INTERVAL) -> None:
    """Sample the loop's lag into ``stats.loop_lag`` forever (cancel to stop)."""
    sampler = LagSampler(asyncio.get_running_loop(), interval=interval)
    sampler.start()
    try:
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            stats.loop_lag.append(sampler.take())
            if on_tick is not None:
                on_tick()
    finally:
        sampler.stop()
