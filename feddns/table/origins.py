"""The served zones' apexes, and the name pieces every service name is built from.

Why it exists: an origin's fixed records (SOA, NS, the ``dns-version`` TXT of
KEP-1645, in-zone name server addresses), the negative TTL, and the rules for
labels made from data (an endpoint's label, a port's ``_<port>._<proto>``, the
255-octet limit) are needed both when service names are laid out
(:mod:`.names`) and when answers are encoded (:mod:`.table`); they live once,
here, as pure functions of :class:`~feddns.table.options.TableOptions`.

``<clusterid>.<svc>.<ns>.svc.<origin>`` holds no records (KEP-1645 reserves
it); it exists only as an empty non-terminal when endpoint names lie below
it, so it answers NODATA, never NXDOMAIN (RFC 8020).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from feddns import wire
from feddns.model.services import Endpoint
from feddns.table.options import TableOptions
from feddns.wire import Name, Record

DNS_SCHEMA_VERSION = "1.0.0"
"""The ``dns-version`` TXT (KEP-1645 specification.md)."""

RRsets = dict[int, tuple[Record, ...]]
"""The records of one name, by type."""

NameRecords = dict[bytes, RRsets]
"""Lowercase wire name -> its records. An empty dict is an empty non-terminal."""


@dataclass(frozen=True, slots=True)
class OriginZone:
    """A served origin, pre-encoded."""

    index: int
    name: str
    wire: bytes
    service_address: str
    reverse: bool = False
    """A reverse zone (PTRs only; its SOA and NS name the first origin's servers)."""

    def child(self, *parts: str) -> bytes:
        """Wire form of ``parts`` (each may hold dots) under this origin."""
        return wire.labels(*parts) + self.wire


def origins_from(options: TableOptions) -> tuple[OriginZone, ...]:
    """The configured origins, in wire form, then the reverse zones."""
    forward = [OriginZone(i, o.name, wire.name_to_wire(o.name), o.service_address)
               for i, o in enumerate(options.origins)]
    reverse = [OriginZone(len(forward) + i, name, wire.name_to_wire(name), "cluster-ip",
                          reverse=True) for i, name in enumerate(options.reverse_zones)]
    return (*forward, *reverse)


def _home(options: TableOptions, origin: OriginZone) -> OriginZone:
    """Where an origin's default server names live (a reverse zone: the first origin's)."""
    if not origin.reverse:
        return origin
    first = options.origins[0].name
    return OriginZone(0, first, wire.name_to_wire(first), "")


def soa_record(options: TableOptions, origin: OriginZone, serial: int, *, ttl: int) -> Record:
    """The apex SOA with ``ttl`` (the SOA TTL, or the negative TTL in authority sections)."""
    soa = options.soa
    home = _home(options, origin)
    mname = soa.mname or (options.nameservers[0].name if options.nameservers else None)
    mname_wire = wire.name_to_wire(mname) if mname else home.child("ns")
    rname_wire = wire.name_to_wire(soa.rname) if soa.rname else home.child("hostmaster")
    return Record(
        origin.wire,
        wire.SOA,
        ttl,
        wire.soa_rdata(mname_wire, rname_wire, serial, soa.refresh, soa.retry, soa.expire,
                       soa.minimum),
    )


def apex_records(options: TableOptions, origin: OriginZone, serial: int) -> NameRecords:
    """SOA and NS at the apex, the ``dns-version`` TXT, and in-zone name server addresses."""
    out: NameRecords = {}
    servers = options.nameservers
    ns_names = [wire.name_to_wire(s.name) for s in servers] or [
        _home(options, origin).child("ns")]
    out[origin.wire] = {
        wire.SOA: (soa_record(options, origin, serial, ttl=options.soa.ttl),),
        # dict.fromkeys: a name server listed twice is one NS record (RFC 2181 §5).
        wire.NS: tuple(
            Record(origin.wire, wire.NS, options.soa.ttl, (Name(n),))
            for n in dict.fromkeys(ns_names)
        ),
    }
    if origin.reverse:
        return out  # PTRs only: no schema version, no name server addresses here
    out[origin.child("dns-version")] = {
        wire.TXT: (
            Record(origin.child("dns-version"), wire.TXT, options.version_ttl,
                   (wire.txt_rdata(DNS_SCHEMA_VERSION),)),
        )
    }
    for server in servers:
        owner = wire.name_to_wire(server.name)
        if not wire.is_subdomain(owner, origin.wire) or owner == origin.wire:
            continue
        rrsets = out.setdefault(owner, {})
        _add_addresses(rrsets, owner, server.addresses, options.record_ttl)
    return out


def _add_addresses(rrsets: RRsets, owner: bytes, addresses: Sequence[str], ttl: int) -> None:
    # RFC 2181 §5: an RRset never holds two identical records. The same address can
    # come twice from the config, so duplicates are dropped here, keeping the first.
    unique = list(dict.fromkeys(addresses))
    v4 = tuple(Record(owner, wire.A, ttl, (wire.a_rdata(a),)) for a in unique if ":" not in a)
    v6 = tuple(Record(owner, wire.AAAA, ttl, (wire.a_rdata(a),)) for a in unique if ":" in a)
    if v4:
        rrsets[wire.A] = v4
    if v6:
        rrsets[wire.AAAA] = v6


def endpoint_label(ep: Endpoint) -> str:
    """The endpoint's DNS label: its hostname, else its address with ``.``/``:`` as ``-``."""
    if ep.hostname:
        return ep.hostname
    if ":" in ep.address:
        # The exploded form never starts or ends with '-', so it is a valid label.
        return ipaddress.ip_address(ep.address).exploded.replace(":", "-")
    return ep.address.replace(".", "-")


def port_name(base: bytes, name: str, proto: str) -> bytes:
    """``_<port>._<proto>.`` prepended to the service name ``base``."""
    return wire.labels("_" + name.lower(), "_" + proto.lower()) + base


def fits(name: bytes) -> bool:
    """True when a wire name is at most 255 octets (RFC 1035 §2.3.4).

    KEP-1645 leaves sizing names to the user; a name that cannot exist is left
    out rather than put into an answer, where one over-long SRV target would
    make the whole message unparseable for the client.
    """
    return len(name) <= wire.MAX_NAME
