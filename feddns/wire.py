"""DNS wire format: a strict query parser and the encoder for compiled answers.

Why it exists: the query parser is the first thing hostile bytes touch, so it
is small, strict and total: every input either parses into a :class:`Query`
or raises :class:`FormError`/:class:`ShortMessage`, never anything else.
It accepts only strictly backward compression pointers, each pointing before
the previous one, so a pointer loop cannot be expressed (the dnspython rule);
labels over 63 octets, names over 255, trailing bytes, duplicate OPT records
and a QDCOUNT other than one are FORMERR (RFC 1035 §4.1.4, RFC 6891 §6.1.1,
RFC 9619). dnslib's parser was measured to accept trailing junk, 64-octet
labels, 256-octet names and two questions, so it is not used for queries.

The encoder writes answer sections once, when data changes, with name
compression against the question (always at offset 12, so the same bytes
serve every query for that name whatever its 0x20 case).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Final

from feddns.errors import WireError

# RR types (RFC 1035, 3596, 2782, 6891, 8482).
A: Final = 1
NS: Final = 2
CNAME: Final = 5
SOA: Final = 6
PTR: Final = 12
HINFO: Final = 13
TXT: Final = 16
AAAA: Final = 28
SRV: Final = 33
OPT: Final = 41
IXFR: Final = 251
AXFR: Final = 252
ANY: Final = 255

CLASS_IN: Final = 1

# RCODEs (RFC 1035, 6891).
NOERROR: Final = 0
FORMERR: Final = 1
SERVFAIL: Final = 2
NXDOMAIN: Final = 3
NOTIMP: Final = 4
REFUSED: Final = 5
BADVERS: Final = 16

# Header flag bits.
FLAG_QR: Final = 0x8000
FLAG_AA: Final = 0x0400
FLAG_TC: Final = 0x0200
FLAG_RD: Final = 0x0100
OPCODE_MASK: Final = 0x7800

EDNS_DO: Final = 0x8000
EDNS_OPT_EDE: Final = 15  # RFC 8914
EDNS_OPT_ECS: Final = 8  # RFC 7871

MAX_NAME: Final = 255
MAX_LABEL: Final = 63
HEADER = struct.Struct("!HHHHHH")
RR_FIXED = struct.Struct("!HHIH")


class FormError(WireError):
    """The message is malformed; answer FORMERR if ``header`` is known."""

    def __init__(self, reason: str, *, qid: int = 0, flags: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.qid = qid
        self.flags = flags


class ShortMessage(WireError):
    """Fewer than 12 octets: there is no header to answer, so the packet is dropped."""


@dataclass(slots=True)
class Edns:
    """The EDNS(0) OPT pseudo-record of a query (RFC 6891 §6.1.2)."""

    udp_size: int
    version: int
    do: bool
    options: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class Query:
    """A parsed query. ``question`` is the raw question section, echoed byte for byte."""

    qid: int
    flags: int
    question: bytes
    qname: bytes
    qtype: int
    qclass: int
    edns: Edns | None

    @property
    def opcode(self) -> int:
        """The OPCODE field."""
        return (self.flags & OPCODE_MASK) >> 11

    @property
    def qname_lower(self) -> bytes:
        """The question name lowercased for lookup (length bytes are < 64, never letters)."""
        return self.qname.lower()


def _skip_name(data: bytes, pos: int, *, allow_pointers: bool) -> int:
    """Validate the name at ``pos``; return the offset just past it.

    Each pointer must point strictly before the previous one (and never into
    the header), which makes loops impossible and bounds the work.
    """
    end = -1
    limit = pos
    length = 0
    n = len(data)
    while True:
        if pos >= n:
            raise FormError("name runs past the end of the message")
        b = data[pos]
        if b == 0:
            length += 1
            if length > MAX_NAME:
                raise FormError("name longer than 255 octets")
            return pos + 1 if end < 0 else end
        kind = b & 0xC0
        if kind == 0xC0:
            if not allow_pointers:
                raise FormError("compression pointer where none can be valid")
            if pos + 1 >= n:
                raise FormError("truncated compression pointer")
            target = ((b & 0x3F) << 8) | data[pos + 1]
            if target < 12 or target >= limit:
                raise FormError("compression pointer not strictly backward")
            if end < 0:
                end = pos + 2
            limit = target
            pos = target
            continue
        if kind:
            raise FormError("extended or reserved label type")
        length += b + 1
        if length > MAX_NAME:
            raise FormError("name longer than 255 octets")
        pos += b + 1


def parse_header(data: bytes) -> tuple[int, int, int, int, int, int]:
    """Return the six header fields, or raise :class:`ShortMessage`."""
    if len(data) < 12:
        raise ShortMessage("shorter than a DNS header")
    return HEADER.unpack_from(data)


def parse_query(data: bytes) -> Query:
    """Parse a query strictly (see module docstring); raise FormError or ShortMessage."""
    qid, flags, qdcount, ancount, nscount, arcount = parse_header(data)
    if qdcount != 1:
        raise FormError(f"QDCOUNT is {qdcount}, not 1 (RFC 9619)", qid=qid, flags=flags)
    try:
        qend = _skip_name(data, 12, allow_pointers=False)
        if qend + 4 > len(data):
            raise FormError("question runs past the end of the message")
        qtype, qclass = struct.unpack_from("!HH", data, qend)
        pos = qend + 4
        edns: Edns | None = None
        for i in range(ancount + nscount + arcount):
            owner = pos
            pos = _skip_name(data, pos, allow_pointers=True)
            if pos + 10 > len(data):
                raise FormError("resource record header runs past the end")
            rtype, rclass, ttl, rdlen = RR_FIXED.unpack_from(data, pos)
            pos += 10
            rd_end = pos + rdlen
            if rd_end > len(data):
                raise FormError("RDATA runs past the end of the message")
            if rtype == OPT:
                if i < ancount + nscount:
                    raise FormError("OPT outside the additional section")
                if edns is not None:
                    raise FormError("more than one OPT record (RFC 6891 §6.1.1)")
                if data[owner] != 0:
                    raise FormError("OPT owner is not the root")
                options: list[tuple[int, bytes]] = []
                opos = pos
                while opos < rd_end:
                    if opos + 4 > rd_end:
                        raise FormError("truncated EDNS option")
                    code, olen = struct.unpack_from("!HH", data, opos)
                    opos += 4
                    if opos + olen > rd_end:
                        raise FormError("EDNS option longer than the OPT RDATA")
                    options.append((code, data[opos : opos + olen]))
                    opos += olen
                edns = Edns(
                    udp_size=rclass,
                    version=(ttl >> 16) & 0xFF,
                    do=bool(ttl & EDNS_DO),
                    options=options,
                )
            pos = rd_end
        if pos != len(data):
            raise FormError("trailing bytes after the last record")
    except FormError as exc:
        exc.qid, exc.flags = qid, flags
        raise
    return Query(
        qid=qid,
        flags=flags,
        question=data[12 : qend + 4],
        qname=data[12:qend],
        qtype=qtype,
        qclass=qclass,
        edns=edns,
    )


# --- names ---------------------------------------------------------------


def name_to_wire(text: str) -> bytes:
    """Encode a dotted name (absolute or not) as uncompressed wire labels, keeping case."""
    text = text.rstrip(".")
    if not text:
        return b"\x00"
    out = bytearray()
    for label in text.split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) <= MAX_LABEL:
            raise ValueError(f"bad label {label!r} in {text!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > MAX_NAME:
        raise ValueError(f"name {text!r} is longer than 255 octets")
    return bytes(out)


def labels(*parts: str) -> bytes:
    """Relative wire labels of ``parts`` (each may hold dots: ``"west.prod"`` is two).

    No root byte: the result is prepended to an absolute name. The one encoder of
    names feddns builds from data (cluster ids, service and port names, hostnames).
    """
    out = bytearray()
    for part in parts:
        for label in part.split("."):
            raw = label.encode("ascii")
            out.append(len(raw))
            out += raw
    return bytes(out)


def split_labels(wire: bytes, *, stop: int | None = None) -> list[bytes]:
    """The labels of an uncompressed wire name, up to byte ``stop`` (default: the root)."""
    out = []
    pos = 0
    end = len(wire) - 1 if stop is None else stop
    while pos < end and wire[pos]:
        n = wire[pos]
        out.append(wire[pos + 1 : pos + 1 + n])
        pos += n + 1
    return out


def wire_to_text(wire: bytes) -> str:
    """Render uncompressed wire labels as a dotted absolute name (escaping odd octets)."""
    labels = []
    pos = 0
    while wire[pos]:
        n = wire[pos]
        raw = wire[pos + 1 : pos + 1 + n]
        labels.append(
            "".join(
                chr(c) if 0x21 <= c <= 0x7E and c not in (0x2E, 0x5C) else f"\\{c:03d}"
                for c in raw
            )
        )
        pos += n + 1
    return ".".join(labels) + "."


def parent_names(wire: bytes, stop: bytes) -> list[bytes]:
    """Names strictly between ``wire`` and its ancestor ``stop`` (both wire form)."""
    out = []
    pos = 0
    while len(wire) - pos > len(stop):
        pos += wire[pos] + 1
        if len(wire) - pos > len(stop):
            out.append(wire[pos:])
    return out


def is_subdomain(wire: bytes, origin: bytes) -> bool:
    """True when ``wire`` equals ``origin`` or lies below it (label-aligned)."""
    if not wire.endswith(origin):
        return False
    cut = len(wire) - len(origin)
    pos = 0
    while pos < cut:
        pos += wire[pos] + 1
    return pos == cut


# --- encoding -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Name:
    """A domain name inside RDATA that may be compressed (NS, CNAME, SOA names)."""

    wire: bytes


RdataPart = bytes | Name


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record to encode: owner and type, TTL and RDATA parts."""

    owner: bytes
    rtype: int
    ttl: int
    rdata: tuple[RdataPart, ...]


def a_rdata(address: str) -> bytes:
    """Packed RDATA for an A or AAAA record."""
    return ipaddress.ip_address(address).packed


def txt_rdata(*strings: str) -> bytes:
    """Packed RDATA of a TXT record (each string at most 255 octets)."""
    out = bytearray()
    for s in strings:
        raw = s.encode("utf-8")[:255]
        out.append(len(raw))
        out += raw
    return bytes(out)


def srv_rdata(priority: int, weight: int, port: int, target: bytes) -> bytes:
    """Packed SRV RDATA; the target is never compressed (RFC 2782)."""
    return struct.pack("!HHH", priority, weight, port) + target


def soa_rdata(  # noqa: PLR0917 - the SOA's own field order (RFC 1035 §3.3.13)
    mname: bytes, rname: bytes, serial: int, refresh: int, retry: int, expire: int, minimum: int
) -> tuple[RdataPart, ...]:
    """SOA RDATA with compressible MNAME and RNAME."""
    return (
        Name(mname),
        Name(rname),
        struct.pack("!IIIII", serial & 0xFFFFFFFF, refresh, retry, expire, minimum),
    )


class Compressor:
    """Writes names with backward pointers to suffixes already in the message."""

    __slots__ = ("base", "buf", "offsets")

    def __init__(self, qname: bytes, *, known: bytes | None = None) -> None:
        """Start writing just after the question.

        ``known`` limits what the question offers for pointers to that one
        suffix, so the result depends only on the question name's length.
        """
        self.buf = bytearray()
        self.base = 12 + len(qname) + 4
        self.offsets: dict[bytes, int] = {}
        if known is None:
            self._register(qname, 12)
        else:
            self._register(known, 12 + len(qname) - len(known))

    def _register(self, wire: bytes, offset: int) -> None:
        pos = 0
        while wire[pos] and offset + pos < 0x4000:
            self.offsets.setdefault(wire[pos:], offset + pos)
            pos += wire[pos] + 1

    def name(self, wire: bytes) -> None:
        """Append ``wire`` compressed against what was written before."""
        pos = 0
        while wire[pos]:
            off = self.offsets.get(wire[pos:])
            if off is not None:
                start = self.base + len(self.buf)
                self.buf += wire[:pos] + struct.pack("!H", 0xC000 | off)
                p = 0
                while p < pos and start + p < 0x4000:
                    self.offsets.setdefault(wire[p:], start + p)
                    p += wire[p] + 1
                return
            pos += wire[pos] + 1
        start = self.base + len(self.buf)
        self.buf += wire
        self._register(wire, start)

    def record(self, rec: Record) -> None:
        """Append one resource record."""
        self.name(rec.owner)
        fixed_at = len(self.buf)
        self.buf += RR_FIXED.pack(rec.rtype, CLASS_IN, rec.ttl, 0)
        rd_start = len(self.buf)
        for part in rec.rdata:
            if isinstance(part, Name):
                self.name(part.wire)
            else:
                self.buf += part
        struct.pack_into("!H", self.buf, fixed_at + 8, len(self.buf) - rd_start)

    def take(self) -> bytes:
        """Return what was written since the last call, and keep the offsets."""
        out = bytes(self.buf)
        self.base += len(self.buf)
        self.buf = bytearray()
        return out


def opt_record(*, udp_size: int, do: bool, ext_rcode: int = 0, options: bytes = b"") -> bytes:
    """An OPT pseudo-record for a response (version 0, MBZ bits clear)."""
    ttl = (ext_rcode << 24) | (EDNS_DO if do else 0)
    return b"\x00" + RR_FIXED.pack(OPT, udp_size, ttl, len(options)) + options


def ede_option(code: int, text: str = "") -> bytes:
    """An Extended DNS Error option (RFC 8914 §2)."""
    body = struct.pack("!H", code) + text.encode("utf-8")
    return struct.pack("!HH", EDNS_OPT_EDE, len(body)) + body
