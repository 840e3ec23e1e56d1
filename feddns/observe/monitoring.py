"""The event-loop monitor: how late a timer fires is how long queries wait.

Why it exists: every query, compile and source event shares one event loop,
so anything that holds it (a huge compile, a slow callback) delays every
answer. A timer that should fire every ``LAG_INTERVAL`` seconds measures its
own lateness; the samples of the last ten seconds feed
``feddns_event_loop_lag_seconds``. The same tick runs the app's cheap
periodic checks (logging cluster state changes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from feddns.observe.counting import AppStats

LAG_INTERVAL = 0.25
"""Seconds between two lag samples."""


async def watch_loop(stats: AppStats, *, on_tick: Callable[[], None] | None = None,
                     interval: float = LAG_INTERVAL) -> None:
    """Sample the loop's lag into ``stats.loop_lag`` forever (cancel to stop)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        stats.loop_lag.append(max(0.0, loop.time() - due))
        if on_tick is not None:
            on_tick()
