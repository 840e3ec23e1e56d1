"""The layout of the answer counters: one flat list of ints, indexed by slot.

Why it exists: every answer sent is counted with one list increment on the hot path
(``feddns.dns.handling`` and the transports), and ``feddns.observe.metrics`` folds the
list back into labelled counters when ``/metrics`` is read. Both sides must agree on
the layout: (region, origin slot, rcode slot, query type), defined here once.
"""

from __future__ import annotations

from feddns import wire
from feddns.table.answers import CompiledAnswer

QTYPE_SLOTS = 257
"""Query types 0-255 are counted by value; slot 256 holds every type above 255."""
RCODE_SLOTS = 9
"""Rcodes 0-5 by value, then ``SLOT_STALE``, ``SLOT_BADVERS`` and ``SLOT_OTHER_RCODE``."""
SLOT_STALE = 6
"""NOERROR built from stale data (it carries EDE 3 for EDNS clients, RFC 8914)."""
SLOT_BADVERS = 7
SLOT_OTHER_RCODE = 8
ORIGIN_SLOTS = 8
"""Slot 0: no origin (errors, REFUSED, SERVFAIL); 1-6: served origins by name; 7: others."""
COUNT_SLOTS = ORIGIN_SLOTS * RCODE_SLOTS * QTYPE_SLOTS
"""Slots of one region of :attr:`Handler.query_counts`."""
LEAN = COUNT_SLOTS
"""Region offset: UDP answers sent without their additional section (RFC 2181 §9)."""
TRUNCATED = 2 * COUNT_SLOTS
"""Region offset: UDP answers sent empty with TC=1."""


def new_counts() -> list[int]:
    """The per-answer counters of one instance (every region), all zero."""
    return [0] * (3 * COUNT_SLOTS)


_origin_slots: dict[bytes, int] = {}
"""Origin (wire name) -> its slot, for the whole process: compiled answers (and so their
memos) may be shared by several handlers, and a reload may reorder the origins."""


def origin_slot(origin: bytes | None) -> int:
    """The counting slot of a served origin (wire form); 0 for none."""
    if origin is None:
        return 0
    slot = _origin_slots.get(origin)
    if slot is None:
        slot = min(len(_origin_slots) + 1, ORIGIN_SLOTS - 1)
        if slot < ORIGIN_SLOTS - 1:
            _origin_slots[origin] = slot
    return slot


def origin_names() -> dict[int, bytes]:
    """Slot -> origin wire name, for the slots handed out so far."""
    return {slot: name for name, slot in _origin_slots.items()}


def rcode_slot(ans: CompiledAnswer) -> int:
    """The counting slot of an answer's rcode (stale NOERROR apart)."""
    rcode = ans.rcode
    if rcode == wire.NOERROR and ans.ede:
        return SLOT_STALE
    return rcode if rcode <= wire.REFUSED else SLOT_OTHER_RCODE
