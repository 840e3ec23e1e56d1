"""Case tables for DNS semantics, in the spirit of CoreDNS's ``test.Case``.

Why it exists: unit tests state DNS behaviour as rows (question, expected
rcode, expected records in zone-text form) and run them through the real
answer table and handler, without sockets, threads or clocks. This module
builds the table from plain model objects and compares the parsed reply
with the expected zone-text lines (both sides normalised by dnspython, so
``fd00::1`` and ``fd00:0::1`` compare equal).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from feddns.config import Settings
from feddns.dns.front import FrontMemo
from feddns.dns.handling import Handler
from feddns.dns.limiting import Limits
from feddns.dns.slots import new_counts
from feddns.model.registry import Registry
from feddns.model.services import ClusterSnapshot, Service
from feddns.policy.locality import Locator
from feddns.runtime.options import table_options
from feddns.table.compiler import sync_table
from feddns.table.table import AnswerTable

SERIAL = 1000
"""The serial an answer table starts with in these tests."""

WALL = 2000.0
"""The wall clock passed to the first compile (the serial becomes 2000 if anything compiled)."""


def settings_for(clusters: Sequence[str], **overrides: Any) -> Settings:
    """Settings with ``clusters`` (static sources, never read) and top-level ``overrides``."""
    data: dict[str, Any] = {
        "clusters": [
            {
                "name": name,
                "region": "region-1",
                "zones": ["zone-1"],
                "source": {"type": "static", "file": "/nonexistent/services.yaml"},
            }
            for name in clusters
        ],
    }
    data.update(overrides)
    return Settings.model_validate(data)


def make_table(settings: Settings, *, serial: int = SERIAL,
               locator: Locator | None = None) -> AnswerTable:
    """An empty answer table built from ``settings`` (as the app builds it)."""
    return AnswerTable(table_options(settings), serial=serial, locator=locator)


def make_handler(table: AnswerTable, *, settings: Settings | None = None,
                 udp_payload_size: int | None = None,
                 clock: Callable[[], float] | None = None) -> Handler:
    """A handler over ``table`` with its own front memo and limits (``settings.dns``)."""
    limits = Limits(settings.dns) if settings is not None else Limits()
    size = udp_payload_size if udp_payload_size is not None else (
        settings.dns.udp_payload_size if settings is not None else 1232)
    front = FrontMemo(new_counts())
    front.enabled = not limits.active  # as the app builds it
    handler = Handler(table, front=front, limits=limits, udp_payload_size=size)
    if clock is not None:
        handler.clock = clock
    return handler


def handle(handler: Handler, data: bytes, tcp: bool = False,
           addr: tuple[str, int] | None = None) -> bytes | None:
    """What a transport would get: the TCP or the UDP entry point of ``handler``."""
    return handler.handle_tcp(data, addr) if tcp else handler.handle_udp(data, addr)


@dataclass
class Federation:
    """A registry and the answer table compiled from it, plus a handler over the table."""

    settings: Settings
    registry: Registry
    table: AnswerTable
    wall: float = WALL
    clock: Callable[[], float] | None = None
    """What handlers of this federation read as ``now`` (explain ages); None: monotonic."""

    def load(self, cluster: str, services: Iterable[Service], *, now: float = 1.0) -> None:
        """Replace ``cluster``'s snapshot with ``services`` (not compiled yet)."""
        self.registry.replace(ClusterSnapshot.from_services(cluster, services), now=now)

    def sync(self, *, now: float | None = None) -> int:
        """Compile what changed, one wall-clock second later than the last compile.

        ``now`` is the monotonic time flap damping is judged at (None: long after
        every transition, i.e. no damping).
        """
        self.wall += 1
        return sync_table(self.table, self.registry, wall_now=self.wall, now=now)


def federation(
    data: Mapping[str, Iterable[Service] | None],
    *,
    settings: Settings | None = None,
    locator: Locator | None = None,
    clock: Callable[[], float] | None = None,
    **overrides: Any,
) -> Federation:
    """A compiled federation: cluster -> services (``None``: the cluster never delivered).

    ``locator`` places clients (default: every client unknown); ``clock`` is what the
    table reads for the ages in explain records (default: the monotonic clock).
    """
    settings = settings or settings_for(list(data), **overrides)
    registry = Registry.for_clusters(c.name for c in settings.clusters)
    table = make_table(settings, locator=locator)
    fed = Federation(settings, registry, table, wall=WALL - 1, clock=clock)
    for cluster, services in data.items():
        if services is not None:
            fed.load(cluster, services)
    fed.sync()
    return fed


def query(
    table: AnswerTable,
    qname: str,
    qtype: str = "A",
    *,
    full: bool = False,
    edns: bool = True,
    tcp: bool = True,
    qid: int | None = None,
    addr: tuple[str, int] | None = None,
    options: Sequence[dns.edns.Option] = (),
    clock: Callable[[], float] | None = None,
) -> dns.message.Message:
    """Ask ``table`` one question through the real handler and parse the reply.

    ``full`` takes the strict path (``handle_full``) instead of the fast path;
    TCP by default so that size limits never truncate a case's answer. Answers
    that rotate (several clusters, weights) rotate by query ID, so ``qid`` pins
    which order is seen. ``addr`` is the client's source address (it decides the
    client's place); ``options`` are EDNS options to send (e.g. Client Subnet);
    ``clock`` is the handler's ``now`` (explain ages).
    """
    q = dns.message.make_query(qname, qtype, use_edns=0 if edns or options else None,
                               options=list(options) or None)
    if qid is not None:
        q.id = qid
    q.flags &= ~dns.flags.RD
    handler = make_handler(table, clock=clock)
    wire = q.to_wire()
    reply = (handler.handle_full(wire, tcp=tcp, addr=addr) if full
             else handle(handler, wire, tcp, addr))
    assert reply is not None, f"no reply to {qname} {qtype}"
    msg = dns.message.from_wire(reply)
    assert msg.id == q.id
    # dnspython merges identical records while parsing; comparing the header counts
    # with what it kept catches duplicate records in an RRset (RFC 2181 §5).
    ancount, nscount, arcount = struct.unpack("!HHH", reply[6:12])
    opt = 1 if msg.opt is not None else 0
    parsed = (len(section(msg)), len(section(msg, "authority")),
              len(section(msg, "additional")) + opt)
    assert (ancount, nscount, arcount) == parsed, f"duplicate records in {qname} {qtype}"
    return msg


def _line(name: str, ttl: int, rdtype: int, rdata: str) -> str:
    owner = dns.name.from_text(name).to_text().lower()
    return f"{owner} {ttl} IN {dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))} {rdata}"


def normalise(line: str) -> str:
    """Canonical zone text of one record line ``name ttl IN TYPE rdata``."""
    name, ttl, cls, rtype, rdata = line.split(None, 4)
    assert cls.upper() == "IN", line
    rdtype = dns.rdatatype.from_text(rtype)
    rd = dns.rdata.from_text(dns.rdataclass.IN, rdtype, rdata)
    return _line(name, int(ttl), rdtype, rd.to_text())


def section(msg: dns.message.Message, which: str = "answer") -> list[str]:
    """One section's records as sorted canonical zone-text lines (OPT excluded)."""
    out = []
    for rrset in getattr(msg, which):
        for rd in rrset:
            out.append(_line(rrset.name.to_text(), rrset.ttl, rrset.rdtype, rd.to_text()))
    return sorted(out)


@dataclass(frozen=True)
class Case:
    """One row: a question and the reply it must get.

    ``additional`` is compared only when given (``None`` means not checked).
    """

    qname: str
    qtype: str
    rcode: str = "NOERROR"
    answer: tuple[str, ...] = ()
    authority: tuple[str, ...] = ()
    additional: tuple[str, ...] | None = None
    aa: bool = True

    @property
    def id(self) -> str:
        """A readable pytest id."""
        return f"{self.qname} {self.qtype} -> {self.rcode}"


def check(table: AnswerTable, case: Case, *, full: bool = False,
          addr: tuple[str, int] | None = None) -> dns.message.Message:
    """Run ``case`` against ``table`` and assert every expected part of the reply.

    ``addr`` is the asking client's source address (None: an unknown client).
    """
    msg = query(table, case.qname, case.qtype, full=full, addr=addr)
    where = f"{case.qname} {case.qtype}"
    assert dns.rcode.to_text(msg.rcode()) == case.rcode, f"{where}: rcode"
    assert bool(msg.flags & dns.flags.AA) is case.aa, f"{where}: AA"
    assert section(msg) == sorted(normalise(x) for x in case.answer), f"{where}: answer"
    assert section(msg, "authority") == sorted(normalise(x) for x in case.authority), (
        f"{where}: authority"
    )
    if case.additional is not None:
        assert section(msg, "additional") == sorted(normalise(x) for x in case.additional), (
            f"{where}: additional"
        )
    return msg


def soa(origin: str = "clusterset.local.", *, serial: int, ttl: int = 5,
        minimum: int = 5) -> str:
    """The default SOA line of ``origin`` (as compiled from default settings)."""
    return (f"{origin} {ttl} IN SOA ns.{origin} hostmaster.{origin} {serial} 3600 600 "
            f"86400 {minimum}")
