"""The query handler: bytes in, bytes (or nothing) out; one entry point per transport.

Why it exists: it is what the transports call (:meth:`Handler.handle_udp`,
:meth:`Handler.handle_tcp`) and the fuzz tests drive, so every protocol rule lives here
once:

* a packet shorter than a header, or with QR=1, is dropped (answering
  responses causes loops and reflection);
* malformed queries get FORMERR, opcodes other than QUERY get NOTIMP;
* EDNS (RFC 6891): a version above 0 gets BADVERS with an OPT of version 0;
  unknown options are not echoed; MBZ flag bits are cleared; DO is echoed;
  an advertised size below 512 counts as 512; we advertise 1232;
* RD is copied; RA, AD, CD, Z and TC of the query are cleared;
* the question is echoed byte for byte (0x20 case preserved);
* a UDP answer that does not fit drops its additional section first, then
  is sent empty with TC=1 (RFC 2181 §9, RFC 8906 §8.2.7);
* admission (``feddns.dns.limiting``): sources outside ``dns.allow`` get
  REFUSED; over UDP, responses beyond a prefix's rate (``dns.rrl``) are
  dropped or, every ``slip``-th, sent empty with TC=1 (so the client retries
  over TCP). With both off, the whole cost is one attribute check per query;
* ``_explain`` names (``names.explain_allow``) never enter the front memo: it is
  per client class, not per source, and an explain record shows ages (TTL 0).

A fast path serves ordinary queries (one question, no EDNS or a plain OPT) by slicing the
question out of the packet and copying pre-encoded pieces around it; anything else takes
the full path. Both build responses from the same :func:`pieces`, so they cannot disagree
(a property test checks it).

The front memo (:mod:`feddns.dns.front`) goes one step further: the whole answer after the
ID, keyed by the whole query after the ID, per client class, shared with the UDP
transport, which answers a repeated query itself, without calling the handler
(``feddns.dns.server``): the hot path is two dict lookups, one list increment and one
concatenation. The app builds the front memo and the :class:`~feddns.dns.limiting.Limits`
and hands the same objects to the handler and to the server; a reload changes them through
explicit calls (:meth:`Handler.use`), never through a setter with side effects.

Rotating answers pick their variant by the low byte of the query ID, in both paths:
stateless, and one indexing operation on the hot path.

Every answer sent is counted in :attr:`Handler.query_counts`, a flat list of plain ints
indexed by (region, origin slot, rcode slot, query type); the slot is worked out once per
compiled answer and kept in its memo, so the hot path pays one list increment per query.
The region says how a UDP answer was cut to fit: whole, without its additional section
(:data:`LEAN`), or empty with TC=1 (:data:`TRUNCATED`); a TCP query never takes a front
entry of a cut answer. A client feddns places counts at an index of its own class
(``FrontMemo.slot_of``): the demand of capacity-aware locality. ``feddns.observe.metrics``
turns the list into ``feddns_dns_queries_total`` and ``feddns_dns_truncated_total`` when
``/metrics`` is read.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections import Counter
from collections.abc import Callable
from time import monotonic

from feddns import wire
from feddns.dns.front import FrontEntry, FrontMemo
from feddns.dns.limiting import DROP, REFUSE, SLIP, Limits
from feddns.dns.slots import (
    LEAN,
    QTYPE_SLOTS,
    RCODE_SLOTS,
    SLOT_BADVERS,
    SLOT_STALE,
    TRUNCATED,
    origin_slot,
    rcode_slot,
)
from feddns.policy.locality import Locator
from feddns.table.answers import REFUSED, CompiledAnswer, FastMemo
from feddns.table.names import EXPLAIN
from feddns.table.table import AnswerTable

log = logging.getLogger(__name__)

_HEAD = struct.Struct("!HHHHH")
_NO_EDNS = 0
_EDNS = 1
_EDNS_DO = 2

def _slot_base(ans: CompiledAnswer, origin: bytes | None) -> int:
    rslot = rcode_slot(ans)
    # Only lookups inside an origin are counted by origin. REFUSED and SERVFAIL are
    # shared singletons (table.answers), so their memo cannot carry one origin.
    if rslot not in (wire.NOERROR, wire.NXDOMAIN, SLOT_STALE):
        origin = None
    return (origin_slot(origin) * RCODE_SLOTS + rslot) * QTYPE_SLOTS


def pieces(
    ans: CompiledAnswer, *, flags_in: int, edns: int, udp_size: int, ext_rcode: int = 0,
    options: bytes = b"",
) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes], tuple[bytes, bytes]]:
    """The three candidate responses, as (header after ID, tail after question) pairs.

    Full answer, answer without additional records, and empty with TC=1; the
    caller sends the first that fits its size limit (TCP: always the first).
    """
    flags = (
        wire.FLAG_QR
        | (flags_in & (wire.OPCODE_MASK | wire.FLAG_RD))
        | (wire.FLAG_AA if ans.aa else 0)
        | (ans.rcode & 0xF)
    )
    opt = b""
    extra = 0
    if edns != _NO_EDNS:
        opt = wire.opt_record(udp_size=udp_size, do=edns == _EDNS_DO, ext_rcode=ext_rcode,
                              options=ans.ede + options)
        extra = 1
    full = (
        _HEAD.pack(flags, 1, ans.ancount, ans.nscount, ans.arcount + extra),
        ans.body + ans.additional + opt,
    )
    if ans.arcount:
        lean = (_HEAD.pack(flags, 1, ans.ancount, ans.nscount, extra), ans.body + opt)
    else:
        lean = full
    truncated = (_HEAD.pack(flags | wire.FLAG_TC, 1, 0, 0, extra), opt)
    return full, lean, truncated


def _header_only(qid_flags: bytes, flags_in: int, rcode: int) -> bytes:
    flags = wire.FLAG_QR | (flags_in & (wire.OPCODE_MASK | wire.FLAG_RD)) | rcode
    return qid_flags[:2] + _HEAD.pack(flags, 0, 0, 0, 0)


class Handler:
    """Answers queries from the current :class:`AnswerTable` (replaced on reload).

    ``front`` and ``limits`` are built by the app and shared with the server;
    :meth:`use` points the handler at a new table (a reload), explicitly.
    """

    def __init__(self, table: AnswerTable, *, front: FrontMemo, limits: Limits,
                 udp_payload_size: int = 1232,
                 clock: Callable[[], float] = monotonic) -> None:
        self.front = front
        self.clock = clock
        """Read only for answers that show ages (explain records), on a memo miss."""
        self.limits = limits
        """ACL, rate limits and TCP caps (also read by the transport), with their counters."""
        self.counters: Counter[str] = Counter()
        self.query_counts = front.counts
        """Answers sent, by ``region + (origin slot * RCODE_SLOTS + rcode slot) * QTYPE_SLOTS
        + qtype`` (regions: 0, :data:`LEAN`, :data:`TRUNCATED`); the front memo's list."""
        self.table = table
        self.udp_payload_size = udp_payload_size
        """The EDNS payload size this server advertises and answers within (RFC 6891)."""
        table.watch(front.clear)

    def use(self, table: AnswerTable, *, udp_payload_size: int) -> None:
        """Answer from ``table`` and advertise ``udp_payload_size`` from now on (a reload)."""
        self.table.unwatch(self.front.clear)
        self.table = table
        self.udp_payload_size = udp_payload_size
        table.watch(self.front.clear)
        self.front.clear()

    def truncated_total(self) -> int:
        """UDP answers sent empty with TC=1 (RRL slips apart)."""
        return sum(self.front.folded()[TRUNCATED:])

    def handle_udp(self, data: bytes, addr: tuple[str, int] | None = None) -> bytes | None:
        """Answer one datagram from ``addr``; None means send nothing."""
        return self._handle(data, False, addr)

    def handle_tcp(self, data: bytes, addr: tuple[str, int] | None = None) -> bytes | None:
        """Answer one message from a TCP connection with ``addr``; None: send nothing."""
        return self._handle(data, True, addr)

    # The fast path. Kept flat on purpose: every attribute lookup here is paid per query.
    def _handle(self, data: bytes, tcp: bool, addr: tuple[str, int] | None) -> bytes | None:
        limits = self.limits
        if limits.active and addr is not None:
            verdict = limits.admit(data, addr[0], tcp)
            if verdict:
                return self._limited(data, tcp, addr, verdict)
        # The front memo: the whole answer after the ID, keyed by the whole query after
        # the ID (so 0x20 case, flags and OPT are part of the key), per client class.
        # Any change to the table clears it. Most repeated queries end here.
        table = self.table
        cls = 0
        if addr is not None and table.locator.active:
            # The locator's own memo, read directly: one dict lookup per query.
            known = table.locator.cache.get(addr[0])
            cls = known if known is not None else table.locator.class_of_source(addr[0])
        memo = self.front
        front = memo.front_of(cls, len(table.memos))
        if addr is not None and memo.enabled and not limits.active:
            memo.map_source(addr[0], front)
        hit = front.get(data[2:])
        if hit is not None and not (tcp and hit[1] >= LEAN):
            self.query_counts[hit[1]] += 1
            tail = hit[0]
            if tail.__class__ is bytes:
                return data[:2] + tail
            return data[:2] + tail[data[1] % len(tail)]  # type: ignore[operator]
        n = len(data)
        if (
            n >= 17
            and not data[2] & 0xFE
            and data[4:11] == b"\x00\x01\x00\x00\x00\x00\x00"
            and data[11] < 2
        ):
            end = data.find(0, 12)
            qend = end + 5
            if end > 0 and qend <= n:
                if data[11] == 0:
                    variant = _NO_EDNS
                    ok = qend == n
                    limit = 512
                else:
                    ok = (
                        n == qend + 11
                        and data[qend : qend + 3] == b"\x00\x00\x29"
                        and data[qend + 5 : qend + 7] == b"\x00\x00"
                        and not data[qend + 7] & 0x7F
                        and data[qend + 8 : qend + 11] == b"\x00\x00\x00"
                    )
                    # Read the OPT only once it is known to be there: a query that
                    # announces ARCOUNT=1 but ends early must get FORMERR from the
                    # full path (RFC 1035 §4.1.1), not an IndexError here.
                    variant = _EDNS
                    limit = 512
                    if ok:
                        if data[qend + 7]:
                            variant = _EDNS_DO
                        size = (data[qend + 3] << 8) | data[qend + 4]
                        limit = size if size > 512 else 512
                        limit = min(limit, self.udp_payload_size)
                if ok:
                    name = data[12 : end + 1].lower()
                    ans = table.memos[cls].get(name + data[end + 1 : qend])
                    if ans is None:
                        ans = table.negatives.get(name + data[end + 1 : qend])
                    if ans is None and _plain_name(data, end):
                        qtype = (data[end + 1] << 8) | data[end + 2]
                        qclass = (data[end + 3] << 8) | data[end + 4]
                        if name.startswith(EXPLAIN) and not limits.may_explain(
                                table.options.explain_allow, addr):
                            ans = REFUSED
                        else:
                            ans = table.resolve(name + data[end + 1 : qend], name, qtype,
                                                qclass, cls, now=self.clock())
                    if ans is not None:
                        return self._answer_fast(data, tcp, ans, front=front,
                                                 variant=variant, name=name, qend=qend,
                                                 end=end, limit=limit, cls=cls)
        return self.handle_full(data, tcp=tcp, addr=addr)

    def _answer_fast(self, data: bytes, tcp: bool, ans: CompiledAnswer, *,
                     front: dict[bytes, FrontEntry], variant: int, name: bytes, qend: int,
                     end: int, limit: int, cls: int) -> bytes:
        """Send ``ans`` for a plain query, as the full path would, and remember it in the front.

        The memo lives on the shared CompiledAnswer (REFUSED and SERVFAIL are module
        singletons), and its OPT carries this handler's advertised size, so the size
        is part of the key (RFC 6891 §6.2.3).
        """
        key = variant | (data[2] & 1) << 2 | self.udp_payload_size << 3
        question = data[12:qend]
        qslot = 256 if data[end + 1] else data[end + 2]
        choices = ans.variants or (ans,)
        made: list[tuple[bytes, int]] = []
        for choice in choices:
            memo = choice.fast.get(key)
            if memo is None:
                memo = self._fast_memo(choice, key, data, variant, name)
            # The UDP answer: the first of whole, lean and empty-with-TC that fits,
            # exactly as in handle_full.
            if len(memo.full[1]) + qend <= limit:
                part, region = memo.full, 0
            elif len(memo.lean[1]) + qend <= limit:
                part, region = memo.lean, LEAN
            else:
                part, region = memo.truncated, TRUNCATED
            made.append((part[0] + question + part[1],
                         self.front.slot_of(memo.slot + region + qslot, cls)))
        pick = data[1] % len(made)
        if len({slot for _, slot in made}) == 1 and not name.startswith(EXPLAIN):
            # Every variant is cut the same way (the usual case): remember it.
            tails = tuple(tail for tail, _ in made)
            entry = (tails[0] if len(tails) == 1 else tails, made[0][1])
            self.front.remember(front, data[2:], entry)
        if tcp:
            memo = choices[pick].fast[key]
            self.query_counts[self.front.slot_of(memo.slot + qslot, cls)] += 1
            return data[:2] + memo.full[0] + question + memo.full[1]
        tail, slot = made[pick]
        self.query_counts[slot] += 1
        return data[:2] + tail

    def _limited(self, data: bytes, tcp: bool, addr: tuple[str, int],
                 verdict: int) -> bytes | None:
        """Answer a query the limits stopped: REFUSED (ACL), truncated (slip), or nothing."""
        if verdict & DROP:
            return None
        resp = self.handle_full(data, tcp=tcp, addr=addr, refuse=bool(verdict & REFUSE),
                                slip=bool(verdict & SLIP))
        if resp is not None:
            if verdict & SLIP:
                self.limits.slipped += 1
            if verdict & REFUSE and resp[3] & 0xF == wire.REFUSED:
                self.limits.refused += 1
        return resp

    def _fast_memo(self, ans: CompiledAnswer, key: int, data: bytes, variant: int,
                   name: bytes) -> FastMemo:
        """The ready-made headers and tails of ``ans`` for this kind of query (memoized)."""
        full, lean, truncated = pieces(ans, flags_in=data[2] << 8, edns=variant,
                                       udp_size=self.udp_payload_size)
        found = self.table.origin_of(name)
        memo = FastMemo(full, lean, truncated,
                        _slot_base(ans, None if found is None else found.wire))
        ans.fast[key] = memo
        return memo

    def handle_full(self, data: bytes, *, tcp: bool, addr: tuple[str, int] | None = None,
                    refuse: bool = False, slip: bool = False) -> bytes | None:
        """The complete, strict path for everything the fast path does not take.

        ``refuse`` answers a well-formed query REFUSED whatever it asks (the ACL);
        ``slip`` sends the answer empty with TC=1 (rate limiting, RFC 8906 §8.2.7 form:
        question and OPT only).
        """
        if len(data) < 12:
            self.counters["dropped_short"] += 1
            return None
        flags = (data[2] << 8) | data[3]
        if flags & wire.FLAG_QR:
            self.counters["dropped_response"] += 1
            return None
        try:
            q = wire.parse_query(data)
        except wire.FormError:
            if flags & wire.OPCODE_MASK:
                # RFC 8906 §8.1.4: an unknown opcode is NOTIMP even with no question.
                self.counters["notimp"] += 1
                self._count(wire.NOTIMP, QTYPE_SLOTS - 1)
                return _header_only(data, flags, wire.NOTIMP)
            self.counters["formerr"] += 1
            self._count(wire.FORMERR, QTYPE_SLOTS - 1)
            return _header_only(data, flags, wire.FORMERR)
        edns = _NO_EDNS
        limit = 512
        ext_rcode = 0
        ecs_option = b""
        cls = 0
        if q.edns is not None:
            edns = _EDNS_DO if q.edns.do else _EDNS
            limit = min(max(q.edns.udp_size, 512), self.udp_payload_size)
        if q.opcode != 0:
            self.counters["notimp"] += 1
            ans: CompiledAnswer = _NOTIMP
        elif q.edns is not None and q.edns.version > 0:
            self.counters["badvers"] += 1
            ans = _BADVERS
            ext_rcode = wire.BADVERS >> 4
        elif refuse:
            ans = REFUSED
        else:
            table = self.table
            if addr is not None and table.locator.active:
                cls = table.locator.class_of_source(addr[0])
            if q.edns is not None and addr is not None:
                try:
                    located = _client_subnet(q.edns.options, addr[0], table.locator)
                except wire.FormError:
                    self.counters["formerr"] += 1
                    self._count(wire.FORMERR, q.qtype)
                    return _header_only(data, flags, wire.FORMERR)
                if located is not None:
                    cls, ecs_option = located
            refused = q.qname_lower.startswith(EXPLAIN) and not self.limits.may_explain(
                table.options.explain_allow, addr)
            ans = REFUSED if refused else table.lookup(q.qname_lower, q.qtype, q.qclass, cls,
                                                       now=self.clock())
            if ans.variants is not None:
                ans = ans.variants[(q.qid & 0xFF) % len(ans.variants)]
        full, lean, truncated = pieces(
            ans, flags_in=q.flags, edns=edns, udp_size=self.udp_payload_size,
            ext_rcode=ext_rcode, options=ecs_option,
        )
        if ans is _BADVERS:
            slot = SLOT_BADVERS * QTYPE_SLOTS
        else:
            found = self.table.origin_of(q.qname_lower)
            slot = _slot_base(ans, None if found is None else found.wire)
        slot += min(q.qtype, QTYPE_SLOTS - 1)
        head = data[:2]
        slot_of = self.front.slot_of
        if slip:
            self.query_counts[slot_of(slot, cls)] += 1
            return head + truncated[0] + q.question + truncated[1]
        for part, region in ((full, 0), (lean, LEAN)):
            if tcp or 12 + len(q.question) + len(part[1]) <= limit:
                self.query_counts[slot_of(slot + region, cls)] += 1
                return head + part[0] + q.question + part[1]
        # Empty with TC=1 always fits (header, question and OPT only).
        self.query_counts[slot_of(slot + TRUNCATED, cls)] += 1
        return head + truncated[0] + q.question + truncated[1]

    def _count(self, rslot: int, qtype: int) -> None:
        """Count an answer of the full path that belongs to no origin."""
        self.query_counts[rslot * QTYPE_SLOTS + min(qtype, QTYPE_SLOTS - 1)] += 1


_NOTIMP = CompiledAnswer(wire.NOTIMP, aa=False)
_BADVERS = CompiledAnswer(wire.BADVERS & 0xF, aa=False)


def _plain_name(data: bytes, end: int) -> bool:
    """True when bytes 12..end are plain labels (no pointers, none over 63, <=255 total)."""
    if end - 12 + 1 > wire.MAX_NAME:
        return False
    pos = 12
    while pos < end:
        length = data[pos]
        if length > wire.MAX_LABEL:
            return False
        pos += length + 1
    return pos == end


def _client_subnet(options: list[tuple[int, bytes]], source: str,
                   locator: Locator) -> tuple[int, bytes] | None:
    """The class an ECS option places the client in, and the option to echo.

    Only trusted forwarders may speak for their clients (anyone else could
    choose their own answers); their option is validated (RFC 7871 §6) and
    echoed with the scope that decided the answer (§7.2.1).
    """
    found = [data for code, data in options if code == wire.EDNS_OPT_ECS]
    if not found or not locator.is_trusted(source):
        return None
    if len(found) > 1:
        raise wire.FormError("more than one ECS option")
    data = found[0]
    if len(data) < 4:
        raise wire.FormError("ECS option too short")
    family, source_prefix, scope = data[0] << 8 | data[1], data[2], data[3]
    address = data[4:]
    width = {1: 32, 2: 128}.get(family)
    if width is None or source_prefix > width or scope != 0:
        raise wire.FormError("bad ECS family, prefix or scope")
    if len(address) != (source_prefix + 7) // 8:
        raise wire.FormError("ECS address length does not match its prefix")
    if source_prefix % 8 and address[-1] & (0xFF >> (source_prefix % 8)):
        raise wire.FormError("ECS address has bits set beyond its prefix")
    raw = address + bytes(width // 8 - len(address))
    network = ipaddress.ip_network((ipaddress.ip_address(raw), source_prefix))
    cls, scope_len = locator.class_of_subnet(network)
    body = data[:3] + bytes([min(scope_len, width)]) + address
    return cls, struct.pack("!HH", wire.EDNS_OPT_ECS, len(body)) + body
