"""Client locality: which cluster, region and zone a query comes from.

Why it exists: the answer a client gets depends on where it is, and that must
be derived the same way for every query and cheaply. In order (issue #4):

1. EDNS Client Subnet (RFC 7871) when the query comes from a trusted forwarder
   (a resolver that adds ECS for its clients); the subnet's address is located;
2. the query's source address, matched against the per-cluster and per-zone
   CIDRs of the config (longest prefix wins);
3. the instance's own cluster (``locality.local_cluster``), zone unknown.

A client none of these place gets the federation-wide answer. Each distinct
place is a small integer *class*: answers are compiled and memoized per class,
so the per-query cost of locality is one dictionary lookup.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

UNKNOWN = 0
"""The class of a client nothing places: it gets the federation-wide answer."""


@dataclass(frozen=True, slots=True)
class Place:
    """Where a client is; ``None`` fields are unknown."""

    cluster: str | None = None
    region: str | None = None
    zone: str | None = None


@dataclass(frozen=True, slots=True)
class NetworkRule:
    """A CIDR that places its clients in a cluster (and optionally a zone)."""

    network: Network
    place: Place


class Locator:
    """Maps client addresses (and ECS subnets) to place classes."""

    def __init__(
        self,
        rules: Iterable[NetworkRule],
        *,
        local: Place | None = None,
        trusted_forwarders: Iterable[Network] = (),
        cache_size: int = 65536,
    ) -> None:
        # Longest prefix first, so the first match is the most specific.
        self.rules = sorted(rules, key=lambda r: r.network.prefixlen, reverse=True)
        self.local = local
        self.trusted = tuple(trusted_forwarders)
        self.places: list[Place] = [Place()]
        self._class_of: dict[Place, int] = {Place(): UNKNOWN}
        for rule in self.rules:
            self.class_for(rule.place)
        if local is not None:
            self.class_for(local)
        self._cache: dict[str, int] = {}
        self.cache_size = cache_size
        self.active = bool(self.rules) or local is not None
        """False when every client is unknown (then the handler skips locating)."""

    def class_for(self, place: Place) -> int:
        """The class number of ``place`` (allocated on first use)."""
        cls = self._class_of.get(place)
        if cls is None:
            cls = len(self.places)
            if cls > 0xFFFF:
                return UNKNOWN
            self.places.append(place)
            self._class_of[place] = cls
        return cls

    def place(self, cls: int) -> Place:
        """The place of a class."""
        return self.places[cls]

    def locate(self, address: Address) -> tuple[Place, int]:
        """The place of an address and the prefix length that decided it (0: default)."""
        for rule in self.rules:
            if address.version == rule.network.version and address in rule.network:
                return rule.place, rule.network.prefixlen
        if self.local is not None:
            return self.local, 0
        return Place(), 0

    def class_of_source(self, host: str) -> int:
        """The class of a query's source address (memoized; the per-query fast path)."""
        cls = self._cache.get(host)
        if cls is None:
            try:
                address = ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                return self.class_for(self.local) if self.local is not None else UNKNOWN
            cls = self.class_for(self.locate(address)[0])
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[host] = cls
        return cls

    def is_trusted(self, host: str) -> bool:
        """True when ``host`` may speak for its clients with ECS."""
        if not self.trusted:
            return False
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return any(address.version == n.version and address in n for n in self.trusted)

    def class_of_subnet(self, network: Network) -> tuple[int, int]:
        """The class for an ECS subnet and the scope prefix length to echo (RFC 7871 §7.2.1).

        The scope is the prefix length of the rule that placed the subnet (0 when no
        rule did: the answer does not depend on the client's address).
        """
        place, prefix = self.locate(network.network_address)
        if prefix > network.prefixlen:
            # The subnet is wider than the rule: we cannot tell, treat as unknown.
            return UNKNOWN, prefix
        return self.class_for(place), prefix


def rules_from(clusters: Sequence[tuple[str, str, Sequence[tuple[str, str | None]]]]
               ) -> list[NetworkRule]:
    """Build rules from ``(cluster, region, [(cidr, zone or None), ...])`` triples."""
    rules = []
    for cluster, region, networks in clusters:
        for cidr, zone in networks:
            rules.append(NetworkRule(ipaddress.ip_network(cidr, strict=False),
                                     Place(cluster, region, zone)))
    return rules
