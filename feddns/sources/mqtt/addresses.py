"""Which addresses a peer may make feddns answer: the bus's address policy.

Why it exists: a peer that can publish can point every client of the federation
at an address of its choice; some addresses are never a service's (this host,
link-local and cloud metadata, multicast, the unspecified address), and an IPv6
address that embeds an IPv4 one must not smuggle those in. SECURITY.md explains
the default (every public and private address allowed, the never-valid ranges
refused whatever is configured) and how to narrow it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

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

    @classmethod
    def from_config(cls, settings: BusConfig) -> AddressPolicy:
        """The policy the config describes."""
        return cls(settings.allowed_cidrs, settings.denied_cidrs)

    def is_allowed(self, address: str) -> bool:
        """True when ``address`` is inside an allowed block and outside every denied one."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if self._is_denied(ip):
            return False
        if isinstance(ip, ipaddress.IPv6Address) and any(
                self._is_denied(v4) for v4 in _embedded_ipv4(ip)):
            return False
        return any(ip.version == n.version and ip in n for n in self.allowed)

    def _is_denied(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(ip.version == n.version and ip in n for n in self.denied)

    def first_violation(self, service: Service) -> str | None:
        """The first address of ``service`` that is not allowed, or None."""
        for address in (*service.cluster_ips, *service.load_balancer_ips,
                        *(e.address for e in service.endpoints)):
            if not self.is_allowed(address):
                return address
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
