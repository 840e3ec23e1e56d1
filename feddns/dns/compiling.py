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
from feddns.model.registry import ClusterEntry
from feddns.model.services import Endpoint, Service, ServiceKey

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


def service_records(
    key: ServiceKey,
    views: Sequence[tuple[ClusterEntry, Service]],
    *,
    origin: OriginZone,
    settings: Settings,
) -> NameRecords:
    """All names and records of one federated service under one origin.

    A cluster counts for a non-headless service only while it has at least
    one ready endpoint for it; a headless service answers ready endpoints.
    The service's names exist (answering NODATA) even when nothing counts,
    so a flapping service never produces cacheable NXDOMAINs.
    """
    if not views:
        return {}
    ns, svc = key
    ttl = settings.dns.record_ttl
    cap = settings.dns.max_records
    base = origin.child(svc, ns, "svc")
    if not _fits(base):
        return {}  # too long for DNS under this origin (a long custom origin)
    out: NameRecords = {base: {}}
    # KEP-1645: conflicting headlessness is settled by one cluster; here the first in
    # configured order, which every replica agrees on.
    headless = views[0][1].is_headless
    all_ports = _unique_ports(svc for _, svc in views)
    if headless:
        _headless(out, base, views, origin=origin, ttl=ttl, cap=cap)
    else:
        counting = [(e, s) for e, s in views if any(ep.ready for ep in s.endpoints)]
        addresses: list[str] = []
        for _, s in counting:
            use_lb = origin.service_address == "load-balancer" and s.load_balancer_ips
            addresses.extend(s.load_balancer_ips if use_lb else s.cluster_ips)
        addresses = _unique(addresses)
        v4 = [a for a in addresses if ":" not in a][:cap]
        v6 = [a for a in addresses if ":" in a][:cap]
        _add_addresses(out[base], base, v4 + v6, ttl)
        ports = _unique_ports(s for _, s in counting) if counting else []
        has_addresses = bool(v4 or v6)
        for name, _number, proto in all_ports:
            owner = base_port_name(base, name, proto)
            if name and _fits(owner):
                out[owner] = {}
        if has_addresses:
            bare: list[Record] = []
            seen_numbers: set[int] = set()
            for name, number, proto in ports:
                rec = Record(base, wire.SRV, ttl,
                             (wire.srv_rdata(SRV_PRIORITY, SRV_WEIGHT, number, base),))
                owner = base_port_name(base, name, proto)
                if name and owner in out:
                    prev = out[owner].get(wire.SRV, ())
                    out[owner][wire.SRV] = (*prev, Record(owner, wire.SRV, ttl, rec.rdata))
                if number not in seen_numbers:
                    seen_numbers.add(number)
                    bare.append(rec)
            if bare:
                out[base][wire.SRV] = tuple(bare)
    return out


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


def _unique_ports(services: object) -> list[tuple[str, int, str]]:
    seen: dict[tuple[str, int, str], None] = {}
    for s in services:  # type: ignore[attr-defined]
        for p in s.ports:
            seen.setdefault((p.name, p.port, p.protocol.value), None)
    return list(seen)


def _headless(
    out: NameRecords,
    base: bytes,
    views: Sequence[tuple[ClusterEntry, Service]],
    *,
    origin: OriginZone,
    ttl: int,
    cap: int,
) -> None:
    # Group one pod's IPv4 and IPv6 endpoints (same hostname or target) so that A
    # and AAAA cover the same subset (KEP-1645).
    groups: dict[tuple[str, str], tuple[bytes | None, list[Endpoint], Service]] = {}
    for entry, svc in views:
        # Sorted, not in arrival order: the order of records in an RRset carries no
        # meaning (RFC 2181 §5), so a source that re-lists the same endpoints in another
        # order must not change the answer, the bounded subset or the SOA serial.
        for ep in sorted(svc.endpoints, key=_endpoint_order):
            if not ep.ready:
                continue
            ident = ep.hostname or ep.target or ep.address
            gkey = (entry.name, ident)
            group = groups.get(gkey)
            if group is None:
                label = endpoint_label(ep)
                owner = origin_child_of(base, label, entry.name)
                # An endpoint whose name would be too long still answers at the
                # service name, but has no name of its own and no SRV record.
                groups[gkey] = (owner if _fits(owner) else None, [ep], svc)
            else:
                group[1].append(ep)
    selected = list(groups.values())[:cap]
    for named, eps, _ in groups.values():
        if named is not None:
            rrsets = out.setdefault(named, {})
            _add_addresses(rrsets, named, _unique([e.address for e in eps]), ttl)
    _add_addresses(out[base], base, [e.address for _, eps, _ in selected for e in eps], ttl)
    ports_named: dict[bytes, list[Record]] = {}
    bare: list[Record] = []
    for target, _, svc in selected:
        if target is None:
            continue
        for port in svc.ports:
            rdata = (wire.srv_rdata(SRV_PRIORITY, SRV_WEIGHT, port.port, target),)
            bare.append(Record(base, wire.SRV, ttl, rdata))
            pname = base_port_name(base, port.name, port.protocol.value)
            if port.name and _fits(pname):
                ports_named.setdefault(pname, []).append(Record(pname, wire.SRV, ttl, rdata))
    for _, svc in views:
        for port in svc.ports:
            pname = base_port_name(base, port.name, port.protocol.value)
            if port.name and _fits(pname):
                out.setdefault(pname, {})
    # RFC 2181 §5: no duplicate records in an RRset. Two ports with the same number
    # (e.g. 53/UDP and 53/TCP) give identical bare SRV records for each endpoint.
    for pname, recs in ports_named.items():
        out[pname] = {wire.SRV: tuple(dict.fromkeys(recs))}
    if bare:
        out[base][wire.SRV] = tuple(dict.fromkeys(bare))


def _endpoint_order(ep: Endpoint) -> tuple[str, bool, str]:
    """Group identity first, then IPv4 before IPv6, then the address."""
    return (ep.hostname or ep.target or ep.address, ep.is_ipv6, ep.address)


def origin_child_of(base: bytes, label: str, cluster: str) -> bytes:
    """``<label>.<cluster>.`` prepended to ``base`` (a dotted cluster id adds two labels)."""
    out = bytearray()
    for part in (label, *cluster.split(".")):
        raw = part.encode("ascii")
        out.append(len(raw))
        out += raw
    return bytes(out) + base
