"""The running event loop, as the compiler's scheduler.

Why it exists: the compiler (``feddns.table``) owns timers but must not import
asyncio (the core does no I/O); it is given this object, which looks the loop up
when used, so the app can be built before its loop runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class LoopScheduler:
    """The running event loop, looked up when used (the app is built before the loop runs)."""

    @staticmethod
    def call_soon(callback: Callable[..., object], *args: object) -> asyncio.Handle:
        """Run ``callback`` on the next turn of the running loop."""
        return asyncio.get_running_loop().call_soon(callback, *args)

    @staticmethod
    def call_later(delay: float, callback: Callable[..., object],
                   *args: object) -> asyncio.TimerHandle:
        """Run ``callback`` after ``delay`` seconds on the running loop."""
        return asyncio.get_running_loop().call_later(delay, callback, *args)
