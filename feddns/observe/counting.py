"""Plain counters: the app's counters and bounded label names.

Why it exists: :class:`AppStats` holds the instance's own counters (reloads,
event-loop lag, isolation episodes) as plain values updated on the loop;
``observe.metrics`` turns them into Prometheus families only when ``/metrics``
is read. Histograms are :class:`feddns.histogram.Buckets`. The folds of the
handler's count slots that need no Prometheus client live here too, so the
status page's timeline (loaded with the app) does not load it.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from feddns.dns import slots

LOOP_LAG_WINDOW = 40
"""Event-loop lag maxima kept (one every ``monitoring.TICK_INTERVAL`` s: ten seconds)."""


@dataclass(slots=True)
class AppStats:
    """Counters the app keeps for the collector (plain values, updated on the loop)."""

    started: float = field(default_factory=time.monotonic)
    reloads: Counter[str] = field(default_factory=Counter)
    """Reloads by result: ``success`` or ``failure``."""
    last_reload_ok: bool = True
    last_reload_error: str | None = None
    last_reload_wall: float | None = None
    """Wall-clock time of the last reload, accepted or rejected (None: none yet)."""
    loop_lag: deque[float] = field(default_factory=lambda: deque(maxlen=LOOP_LAG_WINDOW))


QTYPE_NAMES: Mapping[int, str] = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
    33: "SRV", 35: "NAPTR", 43: "DS", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 251: "IXFR",
    252: "AXFR", 255: "ANY",
}
"""Query types counted by name; every other type is counted as "other"."""


def qtype_label(qtype: int) -> str:
    """The ``qtype`` label of a query type (bounded: unknown types are "other")."""
    return QTYPE_NAMES.get(qtype, "other")


RCODE_NAMES: Mapping[int, str] = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    slots.SLOT_STALE: "NOERROR", slots.SLOT_BADVERS: "BADVERS",
    slots.SLOT_OTHER_RCODE: "other",
}
"""The ``rcode`` label of each rcode slot (stale answers are NOERROR)."""


def rcode_totals(counts: list[int]) -> tuple[dict[str, int], int]:
    """Answers sent so far by rcode name, and the stale ones among them.

    One C-level ``sum`` per (region, origin, rcode) slice of query types: a few
    hundred slices, cheap enough to run every few seconds on the event loop.
    """
    totals: dict[str, int] = {}
    stale = 0
    width = slots.QTYPE_SLOTS
    for start in range(0, len(counts), width):
        n = sum(counts[start:start + width])
        if not n:
            continue
        rslot = (start % slots.COUNT_SLOTS) // width % slots.RCODE_SLOTS
        name = RCODE_NAMES[rslot]
        totals[name] = totals.get(name, 0) + n
        if rslot == slots.SLOT_STALE:
            stale += n
    return totals, stale
