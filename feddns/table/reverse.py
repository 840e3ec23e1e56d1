"""Reverse zones: which ``in-addr.arpa``/``ip6.arpa`` zones are served, and their PTRs.

Why it exists: an operator holding an address from a log must be able to ask which
service owns it, across every cluster (CoreDNS answers PTR for its own cluster only;
KEP-1645 requires none). feddns serves a reverse zone for each configured network
(or each cluster's networks and service CIDRs), and in it a PTR for every address
it answers: a service's cluster IPs and load-balancer addresses point at the service
name (and, with ``names.cluster_pinned``, at the cluster's pinned name too), a
headless endpoint's addresses at its per-endpoint name. An address owned by several
names (the same cluster IP for two services in two clusters) answers all of them.

A network becomes whole zones on label boundaries (octets for IPv4, nibbles for
IPv6), rounded *in* (a /12 is sixteen /16 zones) so that a zone claims no address
outside the configured networks, unless that takes more than sixteen zones (a /10,
a /25): then it is rounded out to the zone that holds it. A name outside every zone
stays REFUSED.
Pure: the answer table lays the records out (:meth:`AnswerTable.apply_service`).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from feddns import wire
from feddns.policy.health import Level
from feddns.table.origins import fits
from feddns.table.plans import ServicePlan

MAX_ZONES_PER_NETWORK = 16
"""Zones one network may become by rounding in (a /12 is sixteen /16 zones); a network
that would need more (a /10, a /25) is rounded out to the zone that holds it."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _zone_name(net: Network) -> str:
    """The reverse zone of a network on a label boundary (``1.96.10.in-addr.arpa.``)."""
    if net.version == 4:
        octets = str(net.network_address).split(".")[: net.prefixlen // 8]
        return ".".join(reversed(octets)) + ".in-addr.arpa."
    nibbles = net.network_address.exploded.replace(":", "")[: net.prefixlen // 4]
    return ".".join(reversed(nibbles)) + ".ip6.arpa."


def zone_names(networks: Iterable[str]) -> tuple[str, ...]:
    """The reverse zones that cover exactly ``networks`` (CIDRs), nested ones dropped."""
    nets: set[Network] = set()
    for cidr in networks:
        net = ipaddress.ip_network(cidr, strict=False)
        step = 8 if net.version == 4 else 4
        if net.prefixlen < step:
            continue  # a /0 and the like: not a network of services
        boundary = -(-net.prefixlen // step) * step
        if 2 ** (boundary - net.prefixlen) > MAX_ZONES_PER_NETWORK:
            nets.add(net.supernet(new_prefix=boundary - step))
            continue
        subnets: list[Network] = list(net.subnets(new_prefix=boundary))
        nets.update(subnets)
    ordered = sorted(nets, key=lambda n: (n.version, n.prefixlen, int(n.network_address)))
    kept: list[Network] = []
    for net in ordered:
        if not any(k.version == net.version and net.subnet_of(k)  # type: ignore[arg-type]
                   for k in kept):
            kept.append(net)
    return tuple(_zone_name(n) for n in kept)


def pointer_name(address: str) -> bytes:
    """The reverse name of an address, in wire form (lowercase)."""
    return wire.name_to_wire(ipaddress.ip_address(address).reverse_pointer)


@functools.lru_cache(maxsize=8)
def _v4_prefixes(zones: frozenset[bytes]) -> frozenset[str]:
    """The IPv4 zones as address prefixes (``1.96.10.in-addr.arpa.`` -> ``10.96.1.``)."""
    out = set()
    for zone in zones:
        text = wire.wire_to_text(zone).lower()
        if text.endswith(".in-addr.arpa."):
            out.add(".".join(reversed(text.removesuffix(".in-addr.arpa.").split("."))) + ".")
    return frozenset(out)


def _in_v4_zones(address: str, prefixes: frozenset[str]) -> bool:
    """True when an IPv4 address lies in one of the zones (text only: every compile)."""
    parts = address.split(".")
    return any(".".join(parts[:k]) + "." in prefixes for k in (1, 2, 3))


def _in_zones(name: bytes, zones: frozenset[bytes]) -> bool:
    pos = 0
    while name[pos]:
        if name[pos:] in zones:
            return True
        pos += name[pos] + 1
    return False


def pointers(plan: ServicePlan, bases: Sequence[bytes], zones: frozenset[bytes], *,
             pinned: bool = False) -> dict[bytes, frozenset[bytes]]:
    """Reverse name -> the names ``plan`` gives it, for its addresses inside ``zones``.

    ``bases`` are the service's names, one per forward origin. Every address the
    service answers counts, whatever its health now (the address is the service's);
    a headless endpoint counts while its per-endpoint name exists (not unhealthy).
    """
    if not zones or plan.expired or plan.external:
        return {}
    out: dict[bytes, set[bytes]] = {}
    v4 = _v4_prefixes(zones)
    for c in plan.candidates:
        if c.owner is not None:
            if c.level is Level.UNHEALTHY or (plan.regions is not None
                                              and c.region not in plan.regions):
                continue
            targets = [c.owner + base for base in bases]
            addresses: Iterable[str] = c.addresses
        else:
            targets = list(bases)
            if pinned:
                targets += [wire.labels(c.cluster) + base for base in bases]
            addresses = (*c.addresses, *c.lb_addresses, *c.lb_resolved)
        for address in addresses:
            if ":" not in address and not _in_v4_zones(address, v4):
                continue
            name = pointer_name(address)
            if _in_zones(name, zones):
                out.setdefault(name, set()).update(t for t in targets if fits(t))
    return {name: frozenset(t) for name, t in out.items() if t}
