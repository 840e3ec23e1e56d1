"""Process-wide interpreter settings, applied once by the composition root, with the reason.

Why it exists: the thread switch interval and the cyclic garbage collector's view
of the heap are properties of the whole process, not of one source; a source
that changed them for everyone hid a global effect in a local module. The app
decides here, once, from what it runs.
"""

from __future__ import annotations

import gc
import logging
import sys

log = logging.getLogger(__name__)

SWITCH_INTERVAL = 0.0002
"""The interpreter's thread switch interval while watch threads run (CPython: 5 ms).

A watch thread converting a re-list holds the GIL until it is asked to drop it, and
the event loop asks at every query (``recvfrom`` and ``sendto`` release the GIL), so
this bounds how long each query waits for it. A 20,000-endpoint re-list, measured
(``bench/k8s_relist.py``): query p99 147 ms at the default, 47 ms at 0.5 ms, 22 ms
at 0.2 ms; the re-list itself 7 % slower. Threads blocked in reads never contend, so
an idle watch costs nothing."""


def for_watch_threads() -> None:
    """Shorten the thread switch interval: worker threads share the GIL with queries."""
    if sys.getswitchinterval() > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)
        log.debug("thread switch interval %.1f ms (watch threads run)", SWITCH_INTERVAL * 1000)


def after_bulk_load() -> None:
    """Keep the objects of a large load out of the cyclic collector's full passes.

    The model objects are acyclic (reference counting frees them), but a full
    collection scans the whole heap while holding the GIL: measured 56-120 ms
    pauses during a re-list of 200,000 endpoints. ``gc.freeze`` moves everything
    alive now into a generation the collector never scans.
    """
    gc.freeze()
