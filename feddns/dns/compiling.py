"""Turn registry data into DNS records, following the MCS DNS spec (KEP-1645).

Why it exists: this is the one place that decides which names exist and what
records they hold, as pure functions of the registry and the config (no I/O,
no clock), so the naming rules are testable as tables and the answer table
can recompile a single service when only that service changed.

Names, for service ``<svc>`` in namespace ``<ns>`` under origin ``<origin>``:

* ``<svc>.<ns>.svc.<origin>``: A/AAAA (per-cluster service address, or a
  bounded subset of ready endpoints when headless) and SRV per port (the
  mcs-api conformance suite queries SRV on this bare name);
* ``_<port>._<proto>.<svc>.<ns>.svc.<origin>``: SRV per named port;
* ``<hostname>.<clusterid>.<svc>.<ns>.svc.<origin>``: A/AAAA per ready
  endpoint of a headless service; cluster ids may be two labels, which the
  name index handles naturally since names are looked up whole, not parsed;
* ``dns-version.<origin>``: TXT ``"1.0.0"`` (KEP-1645 specification.md);
* the apex: SOA and NS.

``<clusterid>.<svc>.<ns>.svc.<origin>`` holds no records (KEP-1645 reserves
it); it exists only as an empty non-terminal when endpoint names lie below
it, so it answers NODATA, never NXDOMAIN (RFC 8020).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from feddns.config import Settings
from feddns.dns import wire
from feddns.dns.wire import Name, Record
from feddns.model.services import Endpoint

DNS_SCHEMA_VERSION = "1.0.0"
SRV_PRIORITY = 0
SRV_WEIGHT = 100

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

    def child(self, *labels: str) -> bytes:
        """Wire form of ``labels`` under this origin."""
        out = bytearray()
        for label in labels:
            for part in label.split("."):
                raw = part.encode("ascii")
                out.append(len(raw))
                out += raw
        return bytes(out) + self.wire


def origins_from(settings: Settings) -> tuple[OriginZone, ...]:
    """The configured origins, in wire form."""
    return tuple(
        OriginZone(i, o.name, wire.name_to_wire(o.name), o.service_address)
        for i, o in enumerate(settings.origins)
    )


def soa_record(settings: Settings, origin: OriginZone, serial: int, *, ttl: int) -> Record:
    """The apex SOA with ``ttl`` (the SOA TTL, or the negative TTL in authority sections)."""
    soa = settings.soa
    mname = soa.mname or (settings.nameservers[0].name if settings.nameservers else None)
    mname_wire = wire.name_to_wire(mname) if mname else origin.child("ns")
    rname_wire = wire.name_to_wire(soa.rname) if soa.rname else origin.child("hostmaster")
    return Record(
        origin.wire,
        wire.SOA,
        ttl,
        wire.soa_rdata(mname_wire, rname_wire, serial, soa.refresh, soa.retry, soa.expire,
                       soa.minimum),
    )


def negative_ttl(settings: Settings) -> int:
    """RFC 2308 §3/§5: negative answers live ``min(SOA TTL, SOA MINIMUM)`` seconds."""
    return min(settings.soa.ttl, settings.soa.minimum)


def apex_records(settings: Settings, origin: OriginZone, serial: int) -> NameRecords:
    """SOA and NS at the apex, the ``dns-version`` TXT, and in-zone name server addresses."""
    out: NameRecords = {}
    servers = settings.nameservers
    ns_names = [wire.name_to_wire(s.name) for s in servers] or [origin.child("ns")]
    out[origin.wire] = {
        wire.SOA: (soa_record(settings, origin, serial, ttl=settings.soa.ttl),),
        # dict.fromkeys: a name server listed twice is one NS record (RFC 2181 §5).
        wire.NS: tuple(
            Record(origin.wire, wire.NS, settings.soa.ttl, (Name(n),))
            for n in dict.fromkeys(ns_names)
        ),
    }
    out[origin.child("dns-version")] = {
        wire.TXT: (
            Record(origin.child("dns-version"), wire.TXT, settings.dns.version_ttl,
                   (wire.txt_rdata(DNS_SCHEMA_VERSION),)),
        )
    }
    for server in servers:
        owner = wire.name_to_wire(server.name)
        if not wire.is_subdomain(owner, origin.wire) or owner == origin.wire:
            continue
        rrsets = out.setdefault(owner, {})
        _add_addresses(rrsets, owner, server.addresses, settings.dns.record_ttl)
    return out


def _add_addresses(rrsets: RRsets, owner: bytes, addresses: Sequence[str], ttl: int) -> None:
    # RFC 2181 §5: an RRset never holds two identical records. The same address can
    # come from two clusters (overlapping pod CIDRs behind a headless service) or twice
    # from the config, so duplicates are dropped here, keeping the first position.
    addresses = _unique(addresses)
    v4 = tuple(Record(owner, wire.A, ttl, (wire.a_rdata(a),)) for a in addresses if ":" not in a)
    v6 = tuple(Record(owner, wire.AAAA, ttl, (wire.a_rdata(a),)) for a in addresses if ":" in a)
    if v4:
        rrsets[wire.A] = v4
    if v6:
        rrsets[wire.AAAA] = v6


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def endpoint_label(ep: Endpoint) -> str:
    """The endpoint's DNS label: its hostname, else its address with ``.``/``:`` as ``-``."""
    if ep.hostname:
        return ep.hostname
    if ":" in ep.address:
        # The exploded form never starts or ends with '-', so it is a valid label.
        return ipaddress.ip_address(ep.address).exploded.replace(":", "-")
    return ep.address.replace(".", "-")


def base_port_name(base: bytes, port_name: str, proto: str) -> bytes:
    """``_<port>._<proto>.`` prepended to the service name."""
    p = ("_" + port_name.lower()).encode("ascii")
    q = ("_" + proto.lower()).encode("ascii")
    return bytes([len(p)]) + p + bytes([len(q)]) + q + base


def _fits(name: bytes) -> bool:
    """True when a wire name is at most 255 octets (RFC 1035 §2.3.4).

    KEP-1645 leaves sizing names to the user; a name that cannot exist is left
    out rather than put into an answer, where one over-long SRV target would
    make the whole message unparseable for the client.
    """
    return len(name) <= wire.MAX_NAME


def origin_child_of(base: bytes, label: str, cluster: str) -> bytes:
    """``<label>.<cluster>.`` prepended to ``base`` (a dotted cluster id adds two labels)."""
    out = bytearray()
    for part in (label, *cluster.split(".")):
        raw = part.encode("ascii")
        out.append(len(raw))
        out += raw
    return bytes(out) + base
