"""What a client at a chosen place would get for a service, and why: the page's JSON.

Why it exists: "why does this name answer that, from there?" is what the
``_explain`` TXT record answers for the place a query comes from; the federation
page asks it for any place an operator picks (a cluster and zone, or a client
CIDR as a forwarder's EDNS Client Subnet would carry it). This module does not
decide anything itself: it finds the service's name in the answer table and
runs the same evaluation code a query runs (``table.evaluation.evaluate`` for
the A and AAAA answers, ``table.evaluation.decide`` for the explain lines), so
the page cannot disagree with DNS. A CIDR is placed exactly as an ECS subnet is
(``Locator.class_of_subnet``). Pure reads, on the event loop.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from feddns import wire
from feddns.observe.debug import parse_service
from feddns.observe.metrics import name_from_wire
from feddns.policy.locality import Place
from feddns.policy.selection import TIER_NAMES
from feddns.table.evaluation import decide, evaluate
from feddns.table.names import EXPLAIN, Role, ServiceNode

if TYPE_CHECKING:
    from feddns.observe.instance import Instance
    from feddns.table.origins import OriginZone


class DecisionError(ValueError):
    """The question cannot be answered: ``status`` is the HTTP status to send."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def place_from(app: Instance, *, cluster: str | None, zone: str | None,
               cidr: str | None) -> tuple[Place, dict[str, Any]]:
    """The client place asked for, and how it was placed (for the page to show)."""
    if cidr:
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError as exc:
            raise DecisionError(f"cidr={cidr!r} is not an address or a network") from exc
        locator = app.compiler.table.locator
        cls, scope = locator.class_of_subnet(network)
        return locator.place(cls), {"given": f"cidr {network}", "scope_prefix": scope}
    if cluster:
        configured = {c.name: c for c in app.settings.clusters}
        found = configured.get(cluster)
        if found is None:
            raise DecisionError(f"cluster={cluster!r} is not a configured cluster")
        if zone and zone not in found.zones:
            raise DecisionError(f"zone={zone!r} is not a zone of cluster {cluster}")
        return Place(cluster, found.region, zone or None), {
            "given": f"cluster {cluster}" + (f" zone {zone}" if zone else "")}
    return Place(), {"given": "unknown place"}


def _origin(app: Instance, wanted: str | None) -> OriginZone:
    origins = app.compiler.table.origins
    if not wanted:
        return origins[0]
    name = wanted if wanted.endswith(".") else wanted + "."
    for origin in origins:
        if name_from_wire(origin.wire).lower() == name.lower():
            return origin
    raise DecisionError(f"origin={wanted!r} is not served")


def _answer(node: ServiceNode, qtype: int, place: Place, *, lb: bool,
            now: float) -> dict[str, Any]:
    outcome = evaluate(node, qtype, place, lb=lb, now=now)
    if outcome.rcode != wire.NOERROR:
        return {"rcode": "SERVFAIL" if outcome.rcode == wire.SERVFAIL else str(outcome.rcode),
                "records": [], "ttl": None, "stale": False, "rotations": 0}
    first = outcome.variants[0][0] if outcome.variants else ()
    addresses = [str(ipaddress.ip_address(r.rdata[0])) for r in first
                 if r.rtype == qtype and isinstance(r.rdata[0], bytes)]
    return {
        "rcode": "NOERROR" if addresses else "NODATA",
        "records": addresses,
        "ttl": first[0].ttl if first else None,
        "stale": outcome.stale,
        "rotations": len(outcome.variants),
    }


def decision_view(app: Instance, *, service: str, cluster: str | None = None,
                  zone: str | None = None, cidr: str | None = None,
                  origin: str | None = None) -> dict[str, Any]:
    """The answer and the explain record for ``service`` from the chosen place.

    Raises :class:`DecisionError` for a malformed question (400) or an unknown
    service (404).
    """
    key = parse_service(service)
    if key is None:
        raise DecisionError(f"service={service!r} is not NAMESPACE/NAME")
    zone_of = _origin(app, origin)
    place, placed = place_from(app, cluster=cluster, zone=zone, cidr=cidr)
    table = app.compiler.table
    nodes = table.by_service.get(key, {})
    node = next((n for name, n in nodes.items() if n.role is Role.BASE
                 and wire.is_subdomain(name, zone_of.wire)), None)
    if node is None:
        raise DecisionError(f"service {service} is not in the answer table", status=404)
    lb = zone_of.service_address == "load-balancer"
    now = app.clock()
    decision = decide(node, place, lb=lb, now=now)
    return {
        "service": f"{key[0]}/{key[1]}",
        "name": name_from_wire(node.owner),
        "explain_name": name_from_wire(EXPLAIN + node.base),
        "place": {"cluster": place.cluster, "region": place.region, "zone": place.zone,
                  **placed},
        "tier": decision.tier,
        "tier_name": TIER_NAMES[decision.tier] if decision.tier is not None else None,
        "none_healthy": decision.none_healthy,
        "explain": decision.lines(),
        "clusters": [{"cluster": c.cluster, "region": c.region, "freshness": c.freshness,
                      "age_seconds": None if c.age is None else round(c.age, 3),
                      "summary": c.summary} for c in decision.clusters],
        "answers": {"A": _answer(node, wire.A, place, lb=lb, now=now),
                    "AAAA": _answer(node, wire.AAAA, place, lb=lb, now=now)},
    }
