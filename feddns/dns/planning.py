"""Service plans: what each federated service can answer, and its names per origin.

Why it exists: answers depend on who asks (locality) and on health, so a
service is compiled in two steps. :func:`plan_service` turns the registry's
per-cluster views into a frozen :class:`ServicePlan` (candidates with their
health level and weight, ports, policy) whenever the data or a cluster's
freshness changes; :func:`service_nodes` lays out the plan's names under an
origin; :func:`evaluate` then produces the records of one name for one
client place, on first use, and the answer table memoizes them per place
class. Everything here is pure: ``now`` is a parameter.

Names (KEP-1645, plus the switches in ``names``):

* ``<svc>.<ns>.svc.<origin>``: A/AAAA (selection per client) and SRV per port;
* ``_<port>._<proto>.<svc>.<ns>.svc.<origin>``: SRV per named port;
* ``<hostname>.<clusterid>.<svc>.<ns>.svc.<origin>``: a headless endpoint;
* ``_explain.<svc>.<ns>.svc.<origin>``: TXT, why each cluster was (not) chosen;
* ``<clusterid>.<svc>.<ns>.svc.<origin>``: that cluster only (off by default);
* ``<svc>.<ns>.<federation>.svc[.<zone>].<region>.<origin>`` and the global
  ``<svc>.<ns>.<federation>.svc.<origin>``: Federation v1 names (off by default).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from feddns.config import ServicePolicyConfig, Settings
from feddns.dns import wire
from feddns.dns.compiling import OriginZone, _fits, base_port_name, endpoint_label
from feddns.dns.wire import Record
from feddns.model.registry import ClusterEntry, ClusterState
from feddns.model.services import Endpoint, Port, Service, ServiceKey, ServicePolicy
from feddns.policy.health import Damping, Freshness, Level, endpoint_level, is_fresh
from feddns.policy.locality import Place
from feddns.policy.selection import (
    TIER_NAMES,
    Candidate,
    NoneHealthy,
    Selection,
    choose,
    srv_targets,
)

SRV_PRIORITY = 0
SRV_WEIGHT = 100
EXPLAIN_TTL = 0


class Role(enum.Enum):
    """What a service name is."""

    BASE = "base"
    PORT = "port"
    ENDPOINT = "endpoint"
    EXPLAIN = "explain"
    PINNED = "pinned"
    FEDV1 = "fedv1"


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """A cluster's freshness as the plan saw it (for the explain record)."""

    name: str
    region: str
    state: str
    fresh: bool
    last_sync: float | None = field(compare=False)
    """Shown by the explain record; not part of plan equality (it moves on every sync)."""
    held: bool = False
    """Counted fresh only because a self-isolation episode holds it (answers signalled
    stale)."""


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """Everything needed to answer any name of one service, for any client."""

    key: ServiceKey
    headless: bool
    candidates: tuple[Candidate, ...]
    ports: tuple[Port, ...]
    """Every port seen in any cluster (names of ``_port._proto`` exist for these)."""
    regions: frozenset[str] | None
    none_healthy: NoneHealthy
    record_ttl: int
    stale_ttl: int
    cap: int
    clusters: tuple[ClusterInfo, ...] = ()
    expired: bool = False
    """Known only from clusters whose data expired: every name answers SERVFAIL."""


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


@dataclass(frozen=True, slots=True)
class Outcome:
    """The records of one name for one question and place."""

    rcode: int = wire.NOERROR
    variants: tuple[tuple[tuple[Record, ...], tuple[Record, ...]], ...] = ()
    """(answer, additional) record tuples; several rotate across queries."""
    stale: bool = False
    nodata: bool = False
    cname: bytes | None = None
    cname_ttl: int = 0
    memoize: bool = True
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Topology:
    """Cluster regions and zones from the config."""

    regions: dict[str, str]
    zones: dict[str, tuple[str, ...]]

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        """The configured topology."""
        return cls(
            regions={c.name: c.region for c in settings.clusters},
            zones={c.name: tuple(c.zones) for c in settings.clusters},
        )


# --- planning ------------------------------------------------------------------


def _policy_for(key: ServiceKey, views: Sequence[tuple[ClusterEntry, Service]],
                overrides: Sequence[ServicePolicyConfig]) -> ServicePolicy:
    """Config overrides (service, then namespace) win over data annotations."""
    ns, name = key
    for match_name in (name, None):
        for o in overrides:
            if o.namespace == ns and o.name == match_name:
                return ServicePolicy(
                    weights=tuple(o.weights.items()) if o.weights is not None else (),
                    regions=tuple(o.regions) if o.regions is not None else None,
                    none_healthy=o.none_healthy,
                )
    for _, svc in views:
        if svc.policy is not None:
            return svc.policy
    return ServicePolicy()


def plan_service(
    key: ServiceKey,
    views: Sequence[tuple[ClusterEntry, Service]],
    *,
    settings: Settings,
    topology: Topology,
    now: float,
    expired: bool = False,
    freshness: Mapping[str, Freshness] | None = None,
) -> ServicePlan | None:
    """The plan of one federated service (None when no cluster has it).

    ``freshness`` is how each cluster counts at ``now`` (computed once per compile
    batch: self-isolation looks at every cluster); None judges each alone.
    """
    sel = settings.selection
    if not views:
        if not expired:
            return None
        return ServicePlan(key, False, (), (), None, NoneHealthy.SERVFAIL,
                           settings.dns.record_ttl, sel.stale_ttl, settings.dns.max_records,
                           expired=True)
    policy = _policy_for(key, views, settings.services)
    weights = dict(policy.weights) if policy.weights else None
    damping = Damping(sel.hold_down, sel.readmit_after)
    # KEP-1645: conflicting headlessness is settled by one cluster; here the first in
    # configured order, which every replica agrees on.
    headless = views[0][1].is_headless
    candidates: list[Candidate] = []
    infos: list[ClusterInfo] = []
    ports: dict[Port, None] = {}
    for entry, svc in views:
        counted = freshness.get(entry.name) if freshness is not None else None
        if counted is None:
            counted = Freshness(is_fresh(entry, now=now, damping=damping))
        fresh, held = counted
        region = topology.regions.get(entry.name, "")
        zones = topology.zones.get(entry.name, ())
        infos.append(ClusterInfo(entry.name, region, entry.state.value, fresh, entry.last_sync,
                                 held))
        for p in svc.ports:
            ports.setdefault(p, None)
        if headless:
            candidates.extend(_endpoint_candidates(entry.name, region, svc, fresh=fresh,
                                                   weights=weights, held=held))
        else:
            candidates.append(_cluster_candidate(entry.name, region, zones, svc, fresh=fresh,
                                                 weights=weights, held=held))
    return ServicePlan(
        key=key,
        headless=headless,
        candidates=tuple(candidates),
        ports=tuple(ports),
        regions=frozenset(policy.regions) if policy.regions is not None else None,
        none_healthy=NoneHealthy(policy.none_healthy or sel.none_healthy),
        record_ttl=settings.dns.record_ttl,
        stale_ttl=sel.stale_ttl,
        cap=settings.dns.max_records,
        clusters=tuple(infos),
        expired=expired,
    )


def _cluster_candidate(cluster: str, region: str, zones: tuple[str, ...], svc: Service, *,
                       fresh: bool, weights: dict[str, float] | None,
                       held: bool = False) -> Candidate:
    ready = sum(1 for e in svc.endpoints if e.ready)
    last_resort = sum(1 for e in svc.endpoints if not e.ready and e.serving and e.terminating)
    if ready:
        level = Level.READY if fresh else Level.STALE
    elif last_resort:
        level = Level.LAST_RESORT if fresh else Level.STALE_LAST_RESORT
    else:
        level = Level.UNHEALTHY
    weight = float(weights.get(cluster, 0.0)) if weights is not None else \
        float(ready or last_resort or 1)
    # Both address kinds are kept; the origin's service_address picks one when answering.
    return Candidate(
        cluster=cluster, region=region, zones=zones,
        addresses=svc.cluster_ips, level=level, weight=weight, ports=svc.ports,
        lb_addresses=svc.load_balancer_ips, held=held,
    )


def _endpoint_candidates(cluster: str, region: str, svc: Service, *, fresh: bool,
                         weights: dict[str, float] | None,
                         held: bool = False) -> list[Candidate]:
    # Group one pod's IPv4 and IPv6 endpoints (same hostname or target) so that A
    # and AAAA cover the same subset (KEP-1645). Sorted, not in arrival order: a
    # source that re-lists the same endpoints in another order changes nothing.
    groups: dict[str, list[Endpoint]] = {}
    for ep in sorted(svc.endpoints, key=_endpoint_order):
        groups.setdefault(ep.hostname or ep.target or ep.address, []).append(ep)
    out = []
    for eps in groups.values():
        level = min(endpoint_level(ready=e.ready, serving=e.serving, terminating=e.terminating,
                                   fresh=fresh) for e in eps)
        usable = [e for e in eps if endpoint_level(ready=e.ready, serving=e.serving,
                                                   terminating=e.terminating,
                                                   fresh=fresh) == level]
        zone = next((e.zone for e in usable if e.zone), None)
        out.append(Candidate(
            cluster=cluster, region=region, zones=(zone,) if zone else (),
            addresses=tuple(dict.fromkeys(e.address for e in usable)), level=level, weight=1.0,
            owner=_relative(endpoint_label(eps[0]), cluster), ports=svc.ports, endpoint=True,
            held=held,
        ))
    if weights is not None:
        # The cluster's share is split among its endpoints of the same level, so that
        # whichever level answers, the cluster's endpoints together weigh its share
        # (unready endpoints of the cluster must not dilute it).
        share = float(weights.get(cluster, 0.0))
        count = Counter(c.level for c in out)
        out = [replace(c, weight=share / count[c.level]) for c in out]
    return out


def _endpoint_order(ep: Endpoint) -> tuple[str, bool, str]:
    """Group identity first, then IPv4 before IPv6, then the address."""
    return (ep.hostname or ep.target or ep.address, ep.is_ipv6, ep.address)


def _relative(label: str, cluster: str) -> bytes:
    """``<label>.<cluster>`` as wire labels without the root (prepended to a base name)."""
    out = bytearray()
    for part in (label, *cluster.split(".")):
        raw = part.encode("ascii")
        out.append(len(raw))
        out += raw
    return bytes(out)


# --- names -------------------------------------------------------------------


def service_nodes(plan: ServicePlan, origin: OriginZone, settings: Settings,
                  topology: Topology) -> dict[bytes, ServiceNode]:
    """Every name of ``plan`` under ``origin``."""
    ns, svc = plan.key
    base = origin.child(svc, ns, "svc")
    if not _fits(base):
        return {}  # too long for DNS under this origin (a long custom origin)
    out: dict[bytes, ServiceNode] = {base: ServiceNode(plan, Role.BASE, base, base)}
    for port in plan.ports:
        if port.name:
            owner = base_port_name(base, port.name, port.protocol.value)
            if _fits(owner):
                out[owner] = ServiceNode(plan, Role.PORT, owner, base,
                                         port=(port.name, port.protocol.value))
    allowed = plan.regions
    for c in plan.candidates:
        if c.owner is None or c.level is Level.UNHEALTHY:
            continue
        if allowed is not None and c.region not in allowed:
            continue
        owner = c.owner + base
        if _fits(owner):
            out[owner] = ServiceNode(plan, Role.ENDPOINT, owner, base, candidate=c)
    names = settings.names
    if names.explain:
        owner = b"\x08_explain" + base
        if _fits(owner):
            out[owner] = ServiceNode(plan, Role.EXPLAIN, owner, base)
    if names.cluster_pinned:
        for info in plan.clusters:
            owner = _relative_cluster(info.name) + base
            if _fits(owner) and owner not in out:
                out[owner] = ServiceNode(plan, Role.PINNED, owner, base, cluster=info.name)
    if names.federation_v1:
        fed = origin.child(svc, ns, settings.federation, "svc")
        if _fits(fed):
            out[fed] = ServiceNode(plan, Role.FEDV1, fed, base, scope=(None, None))
        for region in sorted(set(topology.regions.values())):
            rname = origin.child(svc, ns, settings.federation, "svc", region)
            if _fits(rname):
                out[rname] = ServiceNode(plan, Role.FEDV1, rname, base, scope=(None, region),
                                         wider=fed)
            zones = sorted({z for c, r in topology.regions.items() if r == region
                            for z in topology.zones.get(c, ())})
            for zone in zones:
                zname = origin.child(svc, ns, settings.federation, "svc", zone, region)
                if _fits(zname):
                    out[zname] = ServiceNode(plan, Role.FEDV1, zname, base,
                                             scope=(zone, region), wider=rname)
    return out


def _relative_cluster(cluster: str) -> bytes:
    out = bytearray()
    for part in cluster.split("."):
        raw = part.encode("ascii")
        out.append(len(raw))
        out += raw
    return bytes(out)


# --- evaluation (per question and client place) --------------------------------


def _family(c: Candidate, rtype: int, *, lb: bool) -> Candidate | None:
    v6 = rtype == wire.AAAA
    source = c.lb_addresses if lb and c.lb_addresses else c.addresses
    addresses = tuple(a for a in source if (":" in a) == v6)
    if not addresses:
        return None
    return replace(c, addresses=addresses)


def _address_records(owner: bytes, rtype: int, cands: Sequence[Candidate], ttl: int,
                     cap: int) -> tuple[Record, ...]:
    seen: dict[str, None] = {}
    for c in cands:
        for a in c.addresses:
            seen.setdefault(a, None)
    return tuple(Record(owner, rtype, ttl, (wire.a_rdata(a),)) for a in list(seen)[:cap])


def _ttl(plan: ServicePlan, stale: bool) -> int:
    return plan.stale_ttl if stale else plan.record_ttl


def _pool(node: ServiceNode) -> list[Candidate]:
    plan = node.plan
    if node.role is Role.PINNED:
        return [c for c in plan.candidates if c.cluster == node.cluster]
    if node.role is Role.FEDV1 and node.scope is not None:
        zone, region = node.scope
        return [c for c in plan.candidates
                if (region is None or c.region == region) and (zone is None or zone in c.zones)]
    return list(plan.candidates)


def _none_outcome(plan: ServicePlan) -> Outcome:
    if plan.none_healthy is NoneHealthy.SERVFAIL:
        return Outcome(rcode=wire.SERVFAIL)
    return Outcome(nodata=True)


def address_selection(node: ServiceNode, rtype: int, place: Place, *,
                      lb: bool) -> tuple[Selection, bool]:
    """The selection for A or AAAA at ``node``; the flag says whether the family exists."""
    plan = node.plan
    family = [f for c in _pool(node) if (f := _family(c, rtype, lb=lb)) is not None]
    sel = choose(family, place, cap=plan.cap, regions=plan.regions,
                 none_healthy=plan.none_healthy)
    return sel, bool(family)


def evaluate(node: ServiceNode, qtype: int, place: Place, *, lb: bool,
             now: float) -> Outcome:
    """The records of ``node`` for ``qtype`` asked from ``place``."""
    plan = node.plan
    if plan.expired:
        return Outcome(rcode=wire.SERVFAIL)
    if node.role is Role.EXPLAIN:
        if qtype != wire.TXT:
            return Outcome(nodata=True)
        return _explain(node, place, lb=lb, now=now)
    if node.role is Role.ENDPOINT:
        return _endpoint(node, qtype)
    if node.role is Role.FEDV1 and node.wider is not None and _spills(node, place, lb=lb):
        # A CNAME owns the whole name (RFC 1034 §3.6.2, RFC 2181 §10.1): every type
        # is sent on, or a cached CNAME would contradict this name's own records.
        return Outcome(cname=node.wider, cname_ttl=plan.record_ttl)
    if qtype in (wire.A, wire.AAAA) and node.role in (Role.BASE, Role.PINNED, Role.FEDV1):
        sel, exists = address_selection(node, qtype, place, lb=lb)
        if not sel.variants:
            if exists or not _other_family_answers(node, qtype, place, lb=lb):
                return _none_outcome(plan) if exists or _any_family(node, lb=lb) else \
                    Outcome(nodata=True)
            # The service has no address of this family but answers the other one:
            # plain NODATA, whatever the none-healthy choice (the service is healthy).
            return Outcome(nodata=True)
        ttl = _ttl(plan, sel.stale)
        return Outcome(
            variants=tuple((_address_records(node.owner, qtype, v, ttl, plan.cap), ())
                           for v in sel.variants),
            stale=sel.stale,
        )
    if qtype == wire.SRV and node.role in (Role.BASE, Role.PORT):
        return _srv(node, place, lb=lb)
    return Outcome(nodata=True)


def _spills(node: ServiceNode, place: Place, *, lb: bool) -> bool:
    """A Federation v1 zone or region name with nothing fresh and ready to answer."""
    for rtype in (wire.A, wire.AAAA):
        sel, _ = address_selection(node, rtype, place, lb=lb)
        if sel.variants and sel.level is Level.READY:
            return False
    return True


def _other_family_answers(node: ServiceNode, qtype: int, place: Place, *, lb: bool) -> bool:
    other = wire.AAAA if qtype == wire.A else wire.A
    return bool(address_selection(node, other, place, lb=lb)[0].variants)


def _any_family(node: ServiceNode, *, lb: bool) -> bool:
    return any(_family(c, t, lb=lb) for c in _pool(node) for t in (wire.A, wire.AAAA))


def _endpoint(node: ServiceNode, qtype: int) -> Outcome:
    c = node.candidate
    assert c is not None
    if qtype not in (wire.A, wire.AAAA):
        return Outcome(nodata=True)
    fam = _family(c, qtype, lb=False)
    if fam is None:
        return Outcome(nodata=True)
    stale = c.level in (Level.STALE, Level.STALE_LAST_RESORT) or c.held
    ttl = _ttl(node.plan, stale)
    return Outcome(variants=((_address_records(node.owner, qtype, [fam], ttl, node.plan.cap),
                              ()),), stale=stale)


def _ports_for(node: ServiceNode, ports: Sequence[Port]) -> list[Port]:
    if node.port is None:
        return list(ports)
    name, proto = node.port
    return [p for p in ports if p.name == name and p.protocol.value == proto]


def _srv(node: ServiceNode, place: Place, *, lb: bool) -> Outcome:
    plan = node.plan
    if not plan.headless:
        # Every cluster's service has the same target (the service name): one SRV per
        # port, answered only while the service answers some address for this client.
        a, _ = address_selection(node, wire.A, place, lb=lb)
        aaaa, _ = address_selection(node, wire.AAAA, place, lb=lb)
        chosen = [v for v in (a, aaaa) if v.variants]
        if not chosen:
            return _none_outcome(plan)
        ports: dict[int, Port] = {}
        for sel in chosen:
            for c in {c for v in sel.variants for c in v}:
                for p in _ports_for(node, c.ports):
                    ports.setdefault(p.port, p)
        stale = any(s.stale for s in chosen)
        ttl = _ttl(plan, stale)
        records = tuple(Record(node.owner, wire.SRV, ttl,
                               (wire.srv_rdata(SRV_PRIORITY, SRV_WEIGHT, n, node.base),))
                        for n in ports)
        if not records:
            return Outcome(nodata=True)
        additional = tuple(
            r for sel, t in ((a, wire.A), (aaaa, wire.AAAA)) if sel.variants
            for r in _address_records(node.base, t, sel.variants[0], ttl, plan.cap))
        return Outcome(variants=((records, additional),), stale=stale)
    targets, level = srv_targets(plan.candidates, place, cap=plan.cap, regions=plan.regions,
                                 none_healthy=plan.none_healthy)
    targets = [t for t in targets if t[0].owner is not None and _fits(t[0].owner + node.base)]
    if not targets:
        return _none_outcome(plan)
    stale = level in (Level.STALE, Level.STALE_LAST_RESORT) or any(t[0].held for t in targets)
    ttl = _ttl(plan, stale)
    recs: dict[Record, None] = {}
    extra: dict[Record, None] = {}
    for c, priority, weight in targets:
        assert c.owner is not None
        target = c.owner + node.base
        for p in _ports_for(node, c.ports):
            recs.setdefault(Record(node.owner, wire.SRV, ttl,
                                   (wire.srv_rdata(priority, weight, p.port, target),)), None)
        for address in c.addresses:
            rtype = wire.AAAA if ":" in address else wire.A
            extra.setdefault(Record(target, rtype, ttl, (wire.a_rdata(address),)), None)
    if not recs:
        return Outcome(nodata=True)
    return Outcome(variants=((tuple(recs), tuple(extra)),), stale=stale)


def _explain(node: ServiceNode, place: Place, *, lb: bool, now: float) -> Outcome:
    plan = node.plan
    sel, _ = address_selection(node, wire.A, place, lb=lb)
    if not sel.verdicts:
        sel, _ = address_selection(node, wire.AAAA, place, lb=lb)
    where = ", ".join(f"{k}={v}" for k, v in (("cluster", place.cluster),
                                              ("region", place.region),
                                              ("zone", place.zone)) if v) or "unknown"
    lines = [f"client {where}; answer from tier {sel.tier} ({TIER_NAMES[sel.tier]})"
             if sel.tier is not None else f"client {where}; nothing answerable"
             f" ({plan.none_healthy.value})"]
    infos = {i.name: i for i in plan.clusters}
    per_cluster: dict[str, list[str]] = {}
    for v in sel.verdicts:
        per_cluster.setdefault(v.candidate.cluster, []).append(
            f"{'chosen' if v.chosen else 'not chosen: ' + v.reason} tier {v.tier}"
            f" level {v.candidate.level.name.lower()} weight {v.candidate.weight:g}")
    for name, info in infos.items():
        age = f"{now - info.last_sync:.0f}s" if info.last_sync is not None else "never"
        verdicts = per_cluster.get(name) or ["no address of this family"]
        summary = verdicts[0] if len(set(verdicts)) == 1 else "; ".join(sorted(set(verdicts)))
        freshness = info.state if info.fresh or info.state != ClusterState.FRESH.value \
            else "fresh (readmitting)"
        if info.state == ClusterState.STALE.value and info.fresh:
            freshness = ("stale (held: self-isolation suspected, counted fresh)" if info.held
                         else "stale (in hold-down, counted fresh)")
        lines.append(f"{name} region={info.region or '?'} {freshness} synced {age} ago:"
                     f" {summary}"[:255])
    records = tuple(Record(node.owner, wire.TXT, EXPLAIN_TTL, (wire.txt_rdata(line),))
                    for line in lines)
    return Outcome(variants=((records, ()),), memoize=False)
