"""The front memo: whole answers by whole queries, shared by the handler and the UDP socket.

Why it exists: most queries repeat, and the cheapest answer is one that needs
no parsing at all. The handler remembers, per client class, the whole answer
after the ID keyed by the whole query after the ID (so 0x20 case, flags and the
OPT record are part of the key); the UDP listener looks a datagram up by its
source address, then its bytes, and sends the answer itself. This module is
that contract, in one place: the entry format, the bounds, and invalidation.

* **Entry**: ``(tail, slot)``: the answer after the ID (a tuple of variants when
  it rotates, indexed by the query ID's low byte) and its counting slot in
  :attr:`FrontMemo.counts`, region included (a UDP answer cut to fit is counted
  in its own region, and a TCP query never takes such an entry).
* **Bounds**: ``FRONT_SIZE`` entries per client class and ``FRONT_BYTES`` of
  answers in all (a rotating answer keeps up to 64 variants per spelling of the
  name, and 0x20 resolvers spell names at random), ``MAX_FRONT_SOURCES`` source
  addresses (a flood from random sources must not grow memory).
* **Invalidation**: :meth:`FrontMemo.clear`, called by the answer table on every
  change (:meth:`~feddns.table.table.AnswerTable.watch`), by a new table, and by a
  new advertised UDP size. It is emptied *in place*: the listener holds the map.
* **Off** (:attr:`FrontMemo.enabled` False) while something must see every
  query: the ACL or rate limiting (``dns.allow``, ``dns.rrl``), the query log.
* **Counting per client class**: an answer's slot says what it is (origin, rcode,
  type, how it was cut); for a client feddns places (class above 0) the slot is a
  further index, handed out on first use (:meth:`FrontMemo.slot_of`), so the hot path
  still pays one list increment and the queries per client class (the demand of
  capacity-aware locality) are exact: :meth:`FrontMemo.class_totals`.
"""

from __future__ import annotations

FRONT_SIZE = 65536
"""Most entries of one client class's front memo (cleared when full: random-case
queries from 0x20 resolvers never repeat, and must not grow memory)."""
FRONT_BYTES = 64 * 1024 * 1024
"""Most bytes of answers held by all the front memos together (then they all start
over). The entry count alone would not bound memory: a rotating answer keeps every
variant, up to 64 of them, for each spelling of the name."""
FRONT_ENTRY_OVERHEAD = 200
"""Bytes counted per front entry besides its answers (key, tuple, dict slot)."""
MAX_CLASS_SLOTS = 65536
"""Most counting slots of located clients (client class above 0) beyond the shared ones;
then further combinations are counted without their class (bounded memory)."""
MAX_FRONT_SOURCES = 16384
"""Most client addresses the UDP front maps to their class's memo (then it starts
over: a flood from random source addresses must not grow memory)."""

FrontEntry = tuple["bytes | tuple[bytes, ...]", int]
"""A front memo entry: the answer after the ID (a tuple when it rotates, indexed by
the query ID's low byte) and its counting slot (region included)."""


def entry_size(key: bytes, tail: bytes | tuple[bytes, ...]) -> int:
    """What a front entry is counted as against :data:`FRONT_BYTES`."""
    answers = len(tail) if isinstance(tail, bytes) else sum(len(t) for t in tail)
    return FRONT_ENTRY_OVERHEAD + len(key) + answers


class FrontMemo:
    """The front memos of every client class, and the map the UDP listener reads."""

    __slots__ = ("base", "by_source", "class_keys", "class_slots", "counts", "enabled",
                 "fronts", "size")

    def __init__(self, counts: list[int]) -> None:
        self.counts = counts
        """The per-answer counters (shared with the handler): the listener counts the
        answers it sends itself here."""
        self.base = len(counts)
        """Slots below this are shared by every client class (unknown clients' own)."""
        self.class_slots: dict[tuple[int, int], int] = {}
        """(slot, client class) -> its index in :attr:`counts`, for classes above 0."""
        self.class_keys: list[tuple[int, int]] = []
        """(slot, client class) of each index from :attr:`base` on."""
        self.by_source: dict[str, dict[bytes, FrontEntry]] = {}
        """Client address -> the front of its class (the listener's lookup)."""
        self.fronts: list[dict[bytes, FrontEntry]] = []
        """The front per client class; empty after :meth:`clear` (rebuilt on demand)."""
        self.size = 0
        """Bytes of answers held (approximately)."""
        self.enabled = True
        """False while every query must reach the handler (ACL, RRL, query log)."""

    def clear(self) -> None:
        """Forget every entry: some question may answer differently now."""
        self.fronts = []
        self.size = 0
        if self.by_source:
            self.by_source.clear()

    def front_of(self, cls: int, classes: int) -> dict[bytes, FrontEntry]:
        """The front of client class ``cls`` (of ``classes``), made on first use."""
        fronts = self.fronts
        if not fronts:
            fronts = self.fronts = [{} for _ in range(classes)]
            self.size = 0
        return fronts[cls]

    def map_source(self, source: str, front: dict[bytes, FrontEntry]) -> None:
        """Let the UDP listener answer ``source`` from ``front`` (bounded)."""
        by_source = self.by_source
        if by_source.get(source) is not front:
            if len(by_source) >= MAX_FRONT_SOURCES:
                by_source.clear()
            by_source[source] = front

    def remember(self, front: dict[bytes, FrontEntry], query: bytes,
                 entry: FrontEntry) -> None:
        """Keep ``entry`` for ``query`` in ``front``, making room first if a bound is hit.

        Full fronts are emptied in place: the UDP listener's map points at them.
        """
        size = entry_size(query, entry[0])
        if len(front) >= FRONT_SIZE:
            self.size -= sum(entry_size(k, v[0]) for k, v in front.items())
            front.clear()
        if self.size + size > FRONT_BYTES:
            for each in self.fronts:
                each.clear()
            self.size = 0
        self.size += size
        front[query] = entry

    def slot_of(self, slot: int, cls: int) -> int:
        """The index in :attr:`counts` that counts answers of ``slot`` to class ``cls``."""
        if cls == 0:
            return slot
        index = self.class_slots.get((slot, cls))
        if index is None:
            if len(self.class_keys) >= MAX_CLASS_SLOTS:
                return slot
            index = len(self.counts)
            self.counts.append(0)
            self.class_slots[(slot, cls)] = index
            self.class_keys.append((slot, cls))
        return index

    def folded(self) -> list[int]:
        """The counts by slot, every client class added up (what the metrics show)."""
        out = self.counts[:self.base]
        for (slot, _), n in zip(self.class_keys, self.counts[self.base:], strict=False):
            out[slot] += n
        return out

    def class_totals(self) -> dict[int, int]:
        """Answers sent so far per client class (class 0: clients nothing places)."""
        totals = {0: sum(self.counts[:self.base])}
        for (_, cls), n in zip(self.class_keys, self.counts[self.base:], strict=False):
            totals[cls] = totals.get(cls, 0) + n
        return totals
