"""Which addresses a peer may make feddns answer: the bus's address policy.

Why it exists: a peer that can publish can point every client of the federation
at an address of its choice; some addresses are never a service's (this host,
link-local and cloud metadata, multicast, the unspecified address), and an IPv6
address that embeds an IPv4 one must not smuggle those in. SECURITY.md explains
the default (every public and private address allowed, the never-valid ranges
refused whatever is configured) and how to narrow it.

Every address of every received service is checked, so the check is integer
arithmetic on precomputed (network, mask) pairs, the address parsed once with
``inet_pton``: with ``ipaddress`` objects it cost more than the message's Ed25519
signature (issue #17, ``bench/bus_verify.py``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence

from feddns.config import BUS_DENIED_CIDRS, BusConfig
from feddns.model.services import Service

NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
"""The NAT64 well-known prefix (RFC 6052): its last 32 bits are an IPv4 address."""


class AddressPolicy:
    """Which addresses a peer may make feddns answer.

    Inside an allowed block, outside every configured denied block, and never in
    ``BUS_DENIED_CIDRS`` (loopback, link-local and cloud metadata, multicast, ...),
    whatever the config says. An IPv6 address that embeds an IPv4 one (NAT64, 6to4,
    Teredo) is judged by the embedded address too, so a translator cannot be made to
    reach what the IPv4 rules refuse.
    """

    def __init__(self, allowed: Iterable[str], denied: Iterable[str]) -> None:
        self.allowed = tuple(ipaddress.ip_network(c, strict=False) for c in allowed)
        self.denied = tuple(ipaddress.ip_network(c, strict=False)
                            for c in (*BUS_DENIED_CIDRS, *denied))
        self._allowed = _ranges(self.allowed)
        self._denied = _ranges(self.denied)

    @classmethod
    def from_config(cls, settings: BusConfig) -> AddressPolicy:
        """The policy the config describes."""
        return cls(settings.allowed_cidrs, settings.denied_cidrs)

    def is_allowed(self, address: str) -> bool:
        """True when ``address`` is inside an allowed block and outside every denied one."""
        parsed = _parse(address)
        if parsed is None:
            return False
        version, value = parsed
        if _inside(value, self._denied[version]):
            return False
        if version == 6 and any(_inside(int(v4), self._denied[4])
                                for v4 in _embedded_ipv4(ipaddress.IPv6Address(value))):
            return False
        return _inside(value, self._allowed[version])

    def first_violation(self, service: Service) -> str | None:
        """The first address of ``service`` that is not allowed, or None."""
        for address in (*service.cluster_ips, *service.load_balancer_ips,
                        *(e.address for e in service.endpoints)):
            if not self.is_allowed(address):
                return address
        return None


Ranges = dict[int, tuple[tuple[int, int], ...]]
"""IP version -> (network as an integer, netmask as an integer) of each block."""


def _ranges(networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> Ranges:
    return {v: tuple((int(n.network_address), int(n.netmask)) for n in networks
                     if n.version == v) for v in (4, 6)}


def _inside(value: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(value & mask == network for network, mask in ranges)


def _parse(address: str) -> tuple[int, int] | None:
    """(IP version, the address as an integer), or None for anything but an address."""
    for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        try:
            return version, int.from_bytes(socket.inet_pton(family, address), "big")
        except (OSError, ValueError):  # not this family (or not text inet_pton takes)
            continue
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (NAT64, 6to4, Teredo server and client)."""
    out: list[ipaddress.IPv4Address] = []
    if ip in NAT64_PREFIX:
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        out.append(ip.sixtofour)
    if ip.teredo is not None:
        out.extend(ip.teredo)
    return out
