"""Service plans: what each federated service can answer, for any client.

Why it exists: answers depend on who asks (locality) and on health, so a
service is compiled in two steps. :func:`plan_service` turns the registry's
per-cluster views of one service into a frozen :class:`ServicePlan`
(candidates with their health level and weight, ports, policy) whenever the
data or a cluster's freshness changes; :mod:`.names` lays out its names and
:mod:`.evaluation` produces the records of one name for one client place.
Plans compare by value, so a recompile that changes nothing visible keeps the
SOA serial (CoreDNS's ``endpointsEquivalent``). Pure: ``now`` is a parameter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from feddns import wire
from feddns.model.registry import ClusterEntry
from feddns.model.services import Endpoint, Port, Service, ServiceKey, ServicePolicy, ServiceType
from feddns.policy.candidates import ClusterTraits
from feddns.policy.health import Freshness, Level, endpoint_level, is_fresh, level_of
from feddns.policy.locality import Place
from feddns.policy.selection import Candidate, NoneHealthy
from feddns.policy.spreading import Allocation, Demand, allocate
from feddns.table.options import TableOptions
from feddns.table.origins import endpoint_label


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
    external: bool = False
    """An ExternalName service: its name is a CNAME to one cluster's external name."""
    shares: tuple[tuple[str, float], ...] = ()
    """(cluster, percent): the answers each cluster leads for every client, any tier."""
    subset: int | None = None
    """The ``subset`` answer mode: records per answer (None: ``ordered``, all of them)."""
    capacity_aware: bool = False
    allocation: tuple[tuple[Place, Allocation], ...] = ()
    """Capacity-aware locality: per client place with demand, its candidates' shares."""

    def allocation_for(self, place: Place) -> dict[tuple[str, bytes | None], float] | None:
        """The capacity-aware allocation of ``place`` (None: plain locality)."""
        for p, alloc in self.allocation:
            if p == place:
                return dict(alloc)
        return None


PREFER_CLOSE = frozenset({"PreferClose", "PreferSameZone", "PreferSameNode"})
"""``spec.trafficDistribution`` values that ask for the nearest endpoints whatever the
load: across clusters, the nearest tier without capacity spill (README, "How feddns
chooses an answer")."""


def _policy_for(key: ServiceKey, views: Sequence[tuple[ClusterEntry, Service]],
                options: TableOptions) -> ServicePolicy:
    """Key by key: the service's config override, the namespace's, then annotations.

    The annotations are those of the first cluster (in configured order) that has any.
    """
    ns, name = key
    layers = [ServicePolicy(weights=o.weights or (), regions=o.regions,
                            none_healthy=o.none_healthy, shares=o.shares or (),
                            answer_mode=o.answer_mode, capacity_aware=o.capacity_aware)
              for match_name in (name, None) for o in options.overrides
              if o.namespace == ns and o.name == match_name]
    annotated = next((svc.policy for _, svc in views if svc.policy is not None), None)
    if annotated is not None:
        layers.append(annotated)
    return ServicePolicy(
        weights=next((p.weights for p in layers if p.weights), ()),
        regions=next((p.regions for p in layers if p.regions is not None), None),
        none_healthy=next((p.none_healthy for p in layers if p.none_healthy is not None),
                          None),
        shares=next((p.shares for p in layers if p.shares), ()),
        answer_mode=next((p.answer_mode for p in layers if p.answer_mode is not None), None),
        capacity_aware=next((p.capacity_aware for p in layers
                             if p.capacity_aware is not None), None),
    )


def plan_service(
    key: ServiceKey,
    views: Sequence[tuple[ClusterEntry, Service]],
    *,
    options: TableOptions,
    now: float,
    expired: bool = False,
    freshness: Mapping[str, Freshness] | None = None,
    resolved: Mapping[str, tuple[str, ...]] | None = None,
    demand: Demand | None = None,
) -> ServicePlan | None:
    """The plan of one federated service (None when no cluster has it).

    ``freshness`` is how each cluster counts at ``now`` (computed once per compile
    batch: self-isolation looks at every cluster); None judges each alone.
    ``resolved`` maps load-balancer hostnames to their addresses (the registry's);
    ``demand`` is where the queries come from, for capacity-aware locality.
    """
    if not views:
        if not expired:
            return None
        return ServicePlan(key, False, (), (), None, NoneHealthy.SERVFAIL,
                           options.record_ttl, options.stale_ttl, options.max_records,
                           expired=True)
    policy = _policy_for(key, views, options)
    weights = dict(policy.weights) if policy.weights else None
    # KEP-1645: conflicting headlessness is settled by one cluster; here the first in
    # configured order, which every replica agrees on. The same cluster says whether the
    # service is an ExternalName one: a CNAME owns its name (RFC 1034 §3.6.2), so the
    # other kind's data of other clusters is left out, never mixed in.
    headless = views[0][1].is_headless
    external = views[0][1].type is ServiceType.EXTERNAL_NAME
    candidates: list[Candidate] = []
    infos: list[ClusterInfo] = []
    ports: dict[Port, None] = {}
    for entry, svc in views:
        counted = freshness.get(entry.name) if freshness is not None else None
        if counted is None:
            counted = Freshness(is_fresh(entry, now=now, damping=options.damping))
        fresh, held = counted
        region = options.regions.get(entry.name, "")
        zones = options.zones.get(entry.name, ())
        infos.append(ClusterInfo(entry.name, region, entry.state.value, fresh, entry.last_sync,
                                 held))
        if external or svc.type is ServiceType.EXTERNAL_NAME:
            if external and svc.external_name:
                candidates.append(_external_candidate(entry.name, region, zones, svc,
                                                      fresh=fresh, held=held))
            continue
        for p in svc.ports:
            ports.setdefault(p, None)
        if headless:
            candidates.extend(_endpoint_candidates(entry.name, region, svc, fresh=fresh,
                                                   weights=weights, held=held))
        else:
            candidates.append(_cluster_candidate(entry.name, region, zones, svc, fresh=fresh,
                                                 weights=weights, held=held,
                                                 resolved=resolved or {}))
    regions = frozenset(policy.regions) if policy.regions is not None else None
    capacity = not external and _is_capacity_aware(policy, views, options)
    allocation = _allocation(candidates, regions, demand, options) if capacity else ()
    mode = policy.answer_mode or options.answer_mode
    return ServicePlan(
        key=key,
        headless=headless,
        candidates=tuple(candidates),
        ports=tuple(ports),
        regions=regions,
        none_healthy=NoneHealthy(policy.none_healthy or options.none_healthy),
        record_ttl=options.record_ttl,
        stale_ttl=options.stale_ttl,
        cap=options.max_records,
        clusters=tuple(infos),
        expired=expired,
        external=external,
        shares=policy.shares,
        subset=options.subset_size if mode == "subset" else None,
        capacity_aware=capacity,
        allocation=allocation,
    )


def _is_capacity_aware(policy: ServicePolicy, views: Sequence[tuple[ClusterEntry, Service]],
                       options: TableOptions) -> bool:
    """Config or annotation first; then ``trafficDistribution``; then the global choice.

    ``PreferClose`` (and ``PreferSameZone``, ``PreferSameNode``) ask for the nearest
    endpoints whatever the load, which across clusters is the nearest tier without
    spill. Like headlessness, the first cluster in configured order that sets it decides.
    """
    if policy.capacity_aware is not None:
        return policy.capacity_aware
    said = next((svc.traffic_distribution for _, svc in views if svc.traffic_distribution),
                None)
    if said in PREFER_CLOSE:
        return False
    return options.capacity_aware


def _allocation(candidates: Sequence[Candidate], regions: frozenset[str] | None,
                demand: Demand | None, options: TableOptions
                ) -> tuple[tuple[Place, Allocation], ...]:
    """Capacity-aware shares per client place, over the healthiest allowed candidates."""
    if demand is None or not demand.places:
        return ()
    allowed = [c for c in candidates if (regions is None or c.region in regions)
               and c.level is not Level.UNHEALTHY and c.weight > 0]
    if not allowed:
        return ()
    best = min(int(c.level) for c in allowed)
    pool = [c for c in allowed if int(c.level) == best]
    return tuple(sorted(allocate(pool, demand, overload=options.capacity_overload).items(),
                        key=lambda item: (item[0].cluster or "", item[0].region or "",
                                          item[0].zone or "")))


def _external_candidate(cluster: str, region: str, zones: tuple[str, ...], svc: Service, *,
                        fresh: bool, held: bool) -> Candidate:
    # An ExternalName service has no endpoints: only its cluster's freshness counts.
    assert svc.external_name is not None
    return Candidate(cluster=cluster, region=region, zones=zones, addresses=(),
                     level=level_of(ready=True, last_resort=False, fresh=fresh), weight=1.0,
                     held=held,
                     traits=ClusterTraits(external_name=wire.name_to_wire(svc.external_name)))


def _cluster_candidate(cluster: str, region: str, zones: tuple[str, ...], svc: Service, *,
                       fresh: bool, weights: dict[str, float] | None,
                       held: bool = False,
                       resolved: Mapping[str, tuple[str, ...]]) -> Candidate:
    # Counted per family (once per Service object): IPv4 and IPv6 ready, then last resort.
    ready4, ready6, last4, last6 = svc.endpoint_counts()
    ready, last_resort = ready4 + ready6, last4 + last6
    level = level_of(ready=ready > 0, last_resort=last_resort > 0, fresh=fresh)
    families = None
    if ready6 or last6 or any(":" in a for a in svc.cluster_ips):
        # Only then can a family's level differ from the service's (the IPv4-only
        # majority skips this).
        families = (level_of(ready=ready4 > 0, last_resort=last4 > 0, fresh=fresh),
                    level_of(ready=ready6 > 0, last_resort=last6 > 0, fresh=fresh))
    weight = float(weights.get(cluster, 0.0)) if weights is not None else \
        float(ready or last_resort or 1)
    # Both address kinds are kept; the origin's service_address picks one when answering.
    return Candidate(
        cluster=cluster, region=region, zones=zones,
        addresses=svc.cluster_ips, level=level, weight=weight, ports=svc.ports,
        lb_addresses=svc.load_balancer_ips, held=held, traits=ClusterTraits(
            family_levels=families,
            lb_resolved=tuple(dict.fromkeys(a for name in svc.load_balancer_hostnames
                                            for a in resolved.get(name, ()))),
            lb_only=bool(svc.load_balancer_hostnames),
            capacity=float(ready or last_resort)),
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
            owner=wire.labels(endpoint_label(eps[0]), cluster), ports=svc.ports,
            endpoint=True, held=held,
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


__all__ = ["ClusterInfo", "Level", "ServicePlan", "plan_service"]
