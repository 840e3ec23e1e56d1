"""Which names a service has under an origin, and what each of them is (KEP-1645).

Why it exists: this is the one place that decides which names exist; the
answer table stores what :func:`service_nodes` returns and looks names up
whole, never parsing them. Names, for service ``<svc>`` in namespace ``<ns>``
under origin ``<origin>`` (plus the switches in ``names``):

* ``<svc>.<ns>.svc.<origin>``: A/AAAA (selection per client) and SRV per port
  (the mcs-api conformance suite queries SRV on this bare name);
* ``_<port>._<proto>.<svc>.<ns>.svc.<origin>``: SRV per named port;
* ``<hostname>.<clusterid>.<svc>.<ns>.svc.<origin>``: a headless endpoint
  (cluster ids may be two labels; names are looked up whole, not parsed);
* ``_explain.<svc>.<ns>.svc.<origin>``: TXT, why each cluster was (not) chosen;
* ``<clusterid>.<svc>.<ns>.svc.<origin>``: that cluster only (off by default);
* ``<svc>.<ns>.<federation>.svc[.<zone>].<region>.<origin>`` and the global
  ``<svc>.<ns>.<federation>.svc.<origin>``: Federation v1 names (off by default).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from feddns import wire
from feddns.policy.health import Level
from feddns.policy.selection import Candidate
from feddns.table.options import TableOptions
from feddns.table.origins import OriginZone, fits, port_name
from feddns.table.plans import ServicePlan

EXPLAIN = b"\x08_explain"
"""The label of the explain record, prepended to the service name."""


class Role(enum.Enum):
    """What a service name is."""

    BASE = "base"
    PORT = "port"
    ENDPOINT = "endpoint"
    EXPLAIN = "explain"
    PINNED = "pinned"
    FEDV1 = "fedv1"


@dataclass(frozen=True, slots=True)
class ServiceNode:
    """One name of a service: the plan, the role, and what the role needs."""

    plan: ServicePlan
    role: Role
    owner: bytes
    base: bytes
    port: tuple[str, str] | None = None
    candidate: Candidate | None = None
    cluster: str | None = None
    scope: tuple[str | None, str | None] | None = None
    """Federation v1 scope: (zone, region); (None, None) is the global name."""
    wider: bytes | None = None
    """Federation v1: the CNAME target when this scope has nothing healthy."""


def service_nodes(plan: ServicePlan, origin: OriginZone,
                  options: TableOptions) -> dict[bytes, ServiceNode]:
    """Every name of ``plan`` under ``origin``."""
    ns, svc = plan.key
    base = origin.child(svc, ns, "svc")
    if not fits(base):
        return {}  # too long for DNS under this origin (a long custom origin)
    out: dict[bytes, ServiceNode] = {base: ServiceNode(plan, Role.BASE, base, base)}
    if plan.external:
        # A CNAME and nothing else at the name (RFC 1034 §3.6.2); no names below it.
        if options.explain and fits(EXPLAIN + base):
            out[EXPLAIN + base] = ServiceNode(plan, Role.EXPLAIN, EXPLAIN + base, base)
        return out
    for port in plan.ports:
        if port.name:
            owner = port_name(base, port.name, port.protocol.value)
            if fits(owner):
                out[owner] = ServiceNode(plan, Role.PORT, owner, base,
                                         port=(port.name, port.protocol.value))
    allowed = plan.regions
    for c in plan.candidates:
        if c.owner is None or c.level is Level.UNHEALTHY:
            continue
        if allowed is not None and c.region not in allowed:
            continue
        owner = c.owner + base
        if fits(owner):
            out[owner] = ServiceNode(plan, Role.ENDPOINT, owner, base, candidate=c)
    if options.explain:
        owner = EXPLAIN + base
        if fits(owner):
            out[owner] = ServiceNode(plan, Role.EXPLAIN, owner, base)
    if options.cluster_pinned:
        for info in plan.clusters:
            owner = wire.labels(info.name) + base
            if fits(owner) and owner not in out:
                out[owner] = ServiceNode(plan, Role.PINNED, owner, base, cluster=info.name)
    if options.federation_v1:
        out.update(_federation_v1(plan, origin, options, base))
    return out


def _federation_v1(plan: ServicePlan, origin: OriginZone, options: TableOptions,
                   base: bytes) -> dict[bytes, ServiceNode]:
    ns, svc = plan.key
    out: dict[bytes, ServiceNode] = {}
    fed = origin.child(svc, ns, options.federation, "svc")
    if fits(fed):
        out[fed] = ServiceNode(plan, Role.FEDV1, fed, base, scope=(None, None))
    for region in sorted(set(options.regions.values())):
        rname = origin.child(svc, ns, options.federation, "svc", region)
        if fits(rname):
            out[rname] = ServiceNode(plan, Role.FEDV1, rname, base, scope=(None, region),
                                     wider=fed)
        zones = sorted({z for c, r in options.regions.items() if r == region
                        for z in options.zones.get(c, ())})
        for zone in zones:
            zname = origin.child(svc, ns, options.federation, "svc", zone, region)
            if fits(zname):
                out[zname] = ServiceNode(plan, Role.FEDV1, zname, base,
                                         scope=(zone, region), wider=rname)
    return out


def service_key_of(name: bytes, origin: OriginZone) -> tuple[str, str] | None:
    """The ``(namespace, name)`` a name under ``<svc>.<ns>.svc.<origin>`` belongs to."""
    labels = wire.split_labels(name, stop=len(name) - len(origin.wire))
    if len(labels) < 3 or labels[-1] != b"svc":
        return None
    try:
        return (labels[-2].decode("ascii"), labels[-3].decode("ascii"))
    except UnicodeDecodeError:
        return None


def record_types(node: ServiceNode, *, lb: bool) -> frozenset[int]:
    """The types ``node`` can ever answer with records (whatever the client and health)."""
    role = node.role
    types: set[int] = set()
    if role is Role.EXPLAIN:
        types.add(wire.TXT)
    elif role is Role.PORT:
        types.add(wire.SRV)
    else:
        cands = [node.candidate] if role is Role.ENDPOINT and node.candidate else \
            node.plan.candidates
        for c in cands:
            if c is None:
                continue
            ingress = lb and (c.lb_addresses or c.lb_resolved or c.lb_only)
            for a in ((*c.lb_addresses, *c.lb_resolved) if ingress else c.addresses):
                types.add(wire.AAAA if ":" in a else wire.A)
        if role is Role.BASE and node.plan.ports:
            types.add(wire.SRV)
    return frozenset(types)
