"""Compiled answers: a response's sections encoded once, sent many times.

Why it exists: queries must do almost nothing, so an answer's records are
encoded when data changes (or on first use), kept as the bytes that follow the
question, and the transport only puts a header and the question around them.
:class:`CompiledAnswer` is that unit, shared by the answer table (which
memoizes it per question and client class) and the handler (which keeps, on
each one, the ready-made pieces per kind of query: :class:`FastMemo`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from feddns import wire
from feddns.wire import Record

STALE_EDE = wire.ede_option(3)
"""RFC 8914 §4.4: Stale Answer, added for EDNS clients to answers from stale data."""


class FastMemo(NamedTuple):
    """One answer's ready-made pieces for one kind of query (flags, EDNS, advertised size).

    Each piece is (header after the ID, tail after the question); the handler
    sends the first that fits: ``full``, ``lean`` (no additional section), or
    ``truncated`` (empty, TC=1). ``slot`` is the answer's counting slot.
    """

    full: tuple[bytes, bytes]
    lean: tuple[bytes, bytes]
    truncated: tuple[bytes, bytes]
    slot: int


class CompiledAnswer:
    """An answer's header bits and pre-encoded sections (everything after the question).

    ``body`` holds the answer and authority records; ``additional`` the
    additional records without OPT, kept apart because they are dropped
    first when a UDP answer does not fit (RFC 2181 §9). ``fast`` is the
    handler's memo of ready-made response pieces.
    """

    __slots__ = ("aa", "additional", "ancount", "arcount", "body", "ede", "fast", "nscount",
                 "rcode", "variants")

    def __init__(
        self,
        rcode: int,
        *,
        aa: bool,
        ancount: int = 0,
        nscount: int = 0,
        arcount: int = 0,
        body: bytes = b"",
        additional: bytes = b"",
    ) -> None:
        self.rcode = rcode
        self.aa = aa
        self.ancount = ancount
        self.nscount = nscount
        self.arcount = arcount
        self.body = body
        self.additional = additional
        self.fast: dict[int, FastMemo] = {}
        self.ede = b""
        """An Extended DNS Error option to add for EDNS clients (RFC 8914)."""
        self.variants: tuple[CompiledAnswer, ...] | None = None
        """Record orders to rotate through, one per query (weights, round robin)."""

    def __repr__(self) -> str:
        return (
            f"CompiledAnswer(rcode={self.rcode}, aa={self.aa}, an={self.ancount}, "
            f"ns={self.nscount}, ar={self.arcount})"
        )


REFUSED = CompiledAnswer(wire.REFUSED, aa=False)
SERVFAIL = CompiledAnswer(wire.SERVFAIL, aa=False)


def encode_answer(
    qname: bytes,
    *,
    rcode: int,
    answer: Iterable[Record] = (),
    authority: Iterable[Record] = (),
    additional: Iterable[Record] = (),
    known: bytes | None = None,
) -> CompiledAnswer:
    """Encode the sections of an answer to a question for ``qname``.

    With ``known``, only that suffix of the question is used for compression,
    so the bytes fit any question name of the same length under that suffix.
    """
    comp = wire.Compressor(qname, known=known)
    an = ns = ar = 0
    for rec in answer:
        comp.record(rec)
        an += 1
    for rec in authority:
        comp.record(rec)
        ns += 1
    body = comp.take()
    for rec in additional:
        comp.record(rec)
        ar += 1
    return CompiledAnswer(
        rcode, aa=True, ancount=an, nscount=ns, arcount=ar, body=body, additional=comp.take()
    )
