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
        # Longest prefix first, so the first match is the most specific; at equal
        # length a zone-level network beats a cluster-level one (it says more).
        self.rules = sorted(rules, key=lambda r: (r.network.prefixlen, r.place.zone is not None),
                            reverse=True)
        self.local = local
        self.trusted = tuple(trusted_forwarders)
        self.places: list[Place] = [Place()]
        self._class_of: dict[Place, int] = {Place(): UNKNOWN}
        for rule in self.rules:
            self.class_for(rule.place)
        if local is not None:
            self.class_for(local)
        self.cache: dict[str, int] = {}
        self._subnet_cache: dict[Network, tuple[int, int]] = {}
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
        cls = self.cache.get(host)
        if cls is None:
            try:
                address = ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                return self.class_for(self.local) if self.local is not None else UNKNOWN
            cls = self.class_for(self.locate(address)[0])
            if len(self.cache) >= self.cache_size:
                self.cache.clear()
            self.cache[host] = cls
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

    def scope(self, address: Address, place: Place, prefix: int) -> int:
        """The shortest prefix around ``address`` whose addresses are all placed at ``place``.

        ``prefix`` is the length of the rule that placed it (0: none did). It is that
        length, or longer when a more specific rule with another place lies nearby
        (a zone-level network inside a cluster-level one): a resolver caches the
        answer for the whole scope (RFC 7871 §7.3.1), so the scope must not cover
        clients that are answered differently.
        """
        width = address.max_prefixlen
        value = int(address)
        scope = prefix
        for rule in self.rules:
            net = rule.network
            if net.version != address.version or rule.place == place or address in net:
                continue
            # Leading bits shared with the rule's network; fewer than its prefix length,
            # since the address is outside it. One bit more leaves the rule out.
            common = width - (value ^ int(net.network_address)).bit_length()
            scope = max(scope, common + 1)
        return scope

    def class_of_subnet(self, network: Network) -> tuple[int, int]:
        """The class for an ECS subnet and the scope prefix length to echo (RFC 7871 §7.2.1).

        The scope is the prefix length of the rule that placed the subnet (0 when no
        rule did), lengthened when a rule placing elsewhere lies nearby (see
        :meth:`scope`); memoized per subnet.
        """
        hit = self._subnet_cache.get(network)
        if hit is not None:
            return hit
        address = network.network_address
        place, prefix = self.locate(address)
        scope = self.scope(address, place, prefix)
        # A subnet wider than the scope holds clients placed differently: we cannot
        # tell where this one is, so it is unknown.
        out = (UNKNOWN if scope > network.prefixlen else self.class_for(place), scope)
        if len(self._subnet_cache) >= self.cache_size:
            self._subnet_cache.clear()
        self._subnet_cache[network] = out
        return out


def rules_from(clusters: Sequence[tuple[str, str, Sequence[tuple[str, str | None]]]]
               ) -> list[NetworkRule]:
    """Build rules from ``(cluster, region, [(cidr, zone or None), ...])`` triples."""
    rules = []
    for cluster, region, networks in clusters:
        for cidr, zone in networks:
            rules.append(NetworkRule(ipaddress.ip_network(cidr, strict=False),
                                     Place(cluster, region, zone)))
    return rules
