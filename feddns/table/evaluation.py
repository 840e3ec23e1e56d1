"""Evaluating one name of a service for one question and one client place.

Why it exists: a plan says what a service *can* answer; what a given client
gets depends on where it is (tier), which family it asks for, and the
service's policy (residency, weights, none-healthy). This module turns a
:class:`~feddns.table.names.ServiceNode` and a question into an
:class:`Outcome` (records, or NODATA/SERVFAIL/CNAME), which the answer table
encodes and memoizes per client class. The explain record is rendered here
too, from the same selection, so it cannot disagree with the answer; :func:`decide`
keeps it structured for the status page (the same decision, not a second copy of it). Pure:
``now`` (for the explain record's ages) is a parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from feddns import wire
from feddns.model.registry import ClusterState
from feddns.model.services import Port
from feddns.policy.health import Level
from feddns.policy.locality import Place
from feddns.policy.selection import (
    TIER_NAMES,
    Candidate,
    NoneHealthy,
    Selection,
    choose,
    srv_targets,
)
from feddns.table.names import Role, ServiceNode
from feddns.table.origins import fits
from feddns.table.plans import ServicePlan
from feddns.wire import Record

SRV_PRIORITY = 0
SRV_WEIGHT = 100
"""Priority and weight of a non-headless service's SRV records: every cluster's service
has the same target (the service name), so there is one record per port."""
EXPLAIN_TTL = 0


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


def _family(c: Candidate, rtype: int, *, lb: bool) -> Candidate | None:
    """``c`` with only its addresses of the asked family, at that family's level.

    Under a load-balancer origin a cluster with ingress answers its ingress addresses:
    the IPs, and what its ingress hostnames resolve to (those are the cloud load
    balancer's, which translates families: judged by the service's health as a whole).
    """
    v6 = rtype == wire.AAAA
    external: tuple[str, ...] = ()
    if lb and (c.lb_addresses or c.lb_resolved or c.lb_only):
        source = c.lb_addresses
        external = tuple(a for a in c.lb_resolved if (":" in a) == v6)
    else:
        source = c.addresses
    addresses = tuple(a for a in source if (":" in a) == v6)
    if external:
        return replace(c, addresses=tuple(dict.fromkeys(addresses + external)))
    if not addresses:
        return None
    level = c.level if c.family_levels is None else c.family_levels[v6]
    return replace(c, addresses=addresses, level=level)


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
    if node.role in (Role.BASE, Role.EXPLAIN):
        # Shares, capacity and the subset mode shape the service's own name (which the
        # explain record explains); a pinned or Federation v1 name answers its cluster or
        # scope only, as it says.
        sel = choose(family, place, cap=plan.cap, regions=plan.regions,
                     none_healthy=plan.none_healthy, shares=plan.shares,
                     spread=plan.allocation_for(place) if plan.allocation else None,
                     subset=plan.subset)
    else:
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
    if plan.external:
        return _external(node, place)
    if node.role is Role.FEDV1 and node.wider is not None and _spills(node, place, lb=lb):
        # A CNAME owns the whole name (RFC 1034 §3.6.2, RFC 2181 §10.1): every type
        # is sent on, or a cached CNAME would contradict this name's own records.
        return Outcome(cname=node.wider, cname_ttl=plan.record_ttl)
    if qtype in (wire.A, wire.AAAA) and node.role in (Role.BASE, Role.PINNED, Role.FEDV1):
        sel, exists = address_selection(node, qtype, place, lb=lb)
        if not sel.variants:
            if _other_family_answers(node, qtype, place, lb=lb):
                # The service answers the other family (it has no address of this one, or
                # none with a ready endpoint of this family): plain NODATA, whatever the
                # none-healthy choice. The service is healthy, and musl's getaddrinfo
                # fails a whole lookup when either half of it gets SERVFAIL.
                return Outcome(nodata=True)
            return _none_outcome(plan) if exists or _any_family(node, lb=lb) else \
                Outcome(nodata=True)
        ttl = _ttl(plan, sel.stale)
        return Outcome(
            variants=tuple((_address_records(node.owner, qtype, v, ttl, plan.cap), ())
                           for v in sel.variants),
            stale=sel.stale,
        )
    if qtype == wire.SRV and node.role in (Role.BASE, Role.PORT):
        return _srv(node, place, lb=lb)
    return Outcome(nodata=True)


def external_selection(node: ServiceNode, place: Place) -> tuple[Selection, Candidate | None]:
    """An ExternalName service's choice for ``place``: the nearest fresh cluster's name.

    When clusters disagree on the name, the nearest tier decides, then the configured
    order of the clusters (never a rotation: one name answers one target).
    """
    plan = node.plan
    sel = choose(plan.candidates, place, cap=max(1, len(plan.candidates)),
                 regions=plan.regions, none_healthy=plan.none_healthy)
    chosen = {c for variant in sel.variants for c in variant}
    return sel, next((c for c in plan.candidates if c in chosen), None)


def _external(node: ServiceNode, place: Place) -> Outcome:
    sel, chosen = external_selection(node, place)
    if chosen is None or chosen.external_name is None:
        return _none_outcome(node.plan)
    return Outcome(cname=chosen.external_name, cname_ttl=_ttl(node.plan, sel.stale),
                   stale=sel.stale)


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
    targets = [t for t in targets if t[0].owner is not None and fits(t[0].owner + node.base)]
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


@dataclass(frozen=True, slots=True)
class ClusterVerdict:
    """One cluster's line of a decision: its freshness and what happened to it."""

    cluster: str
    region: str
    freshness: str
    """The cluster's state as the plan counted it (``fresh (readmitting)``, ``stale (in
    hold-down, counted fresh)``, ...)."""
    age: float | None
    """Seconds since its data was last received; None: never."""
    summary: str
    """``chosen tier 0 level ready weight 3``, or why not."""

    def line(self) -> str:
        """The explain record's line for this cluster (at most 255 octets)."""
        age = f"{self.age:.0f}s" if self.age is not None else "never"
        return (f"{self.cluster} region={self.region or '?'} {self.freshness} synced {age}"
                f" ago: {self.summary}")[:255]


@dataclass(frozen=True, slots=True)
class Decision:
    """Why a client at a place gets what it gets for one service.

    The explain record's content, kept structured so that the federation page shows
    the same decision as DNS.
    """

    place: Place
    tier: int | None
    """The tier the answer comes from; None: nothing answerable."""
    none_healthy: str
    clusters: tuple[ClusterVerdict, ...]
    note: str = ""
    """What shapes the answer beyond locality and weights ("; shares ..."), or empty."""

    def lines(self) -> list[str]:
        """The TXT strings of ``_explain.<service>``, in order."""
        place = self.place
        where = ", ".join(f"{k}={v}" for k, v in (("cluster", place.cluster),
                                                  ("region", place.region),
                                                  ("zone", place.zone)) if v) or "unknown"
        head = (f"client {where}; answer from tier {self.tier} ({TIER_NAMES[self.tier]})"
                if self.tier is not None else
                f"client {where}; nothing answerable ({self.none_healthy})")
        return [head + self.note, *(c.line() for c in self.clusters)]


def decide(node: ServiceNode, place: Place, *, lb: bool, now: float) -> Decision:
    """The decision the explain record shows for ``node``'s service, from ``place``."""
    plan = node.plan
    missing = "no address of this family"
    if plan.external:
        sel, chosen = external_selection(node, place)
        # The whole nearest tier is chosen by the selection; the name answers one of them.
        sel = replace(sel, verdicts=tuple(
            v if not v.chosen or v.candidate == chosen else
            replace(v, chosen=False, reason="a cluster listed earlier has the same tier")
            for v in sel.verdicts))
        missing = "not an ExternalName service there"
    else:
        sel, _ = address_selection(node, wire.A, place, lb=lb)
        if not sel.verdicts:
            sel, _ = address_selection(node, wire.AAAA, place, lb=lb)
    per_cluster: dict[str, list[str]] = {}
    for v in sel.verdicts:
        target = v.candidate.external_name
        what = f" CNAME {wire.wire_to_text(target)}" if target is not None else ""
        share = f" share {v.share:.0%}" if v.chosen and v.share is not None and (
            plan.shares or plan.allocation or plan.subset) else ""
        capacity = f" capacity {v.candidate.capacity:g}" if plan.capacity_aware else ""
        per_cluster.setdefault(v.candidate.cluster, []).append(
            f"{'chosen' if v.chosen else 'not chosen: ' + v.reason}{what} tier {v.tier}"
            f" level {v.candidate.level.name.lower()} weight {v.candidate.weight:g}"
            f"{capacity}{share}")
    clusters = []
    for info in plan.clusters:
        verdicts = per_cluster.get(info.name) or [missing]
        summary = verdicts[0] if len(set(verdicts)) == 1 else "; ".join(sorted(set(verdicts)))
        freshness = info.state if info.fresh or info.state != ClusterState.FRESH.value \
            else "fresh (readmitting)"
        if info.state == ClusterState.STALE.value and info.fresh:
            freshness = ("stale (held: self-isolation suspected, counted fresh)" if info.held
                         else "stale (in hold-down, counted fresh)")
        clusters.append(ClusterVerdict(
            info.name, info.region, freshness,
            now - info.last_sync if info.last_sync is not None else None, summary))
    return Decision(place, sel.tier, plan.none_healthy.value, tuple(clusters),
                    _policy_note(plan, place))


def _explain(node: ServiceNode, place: Place, *, lb: bool, now: float) -> Outcome:
    lines = decide(node, place, lb=lb, now=now).lines()
    records = tuple(Record(node.owner, wire.TXT, EXPLAIN_TTL, (wire.txt_rdata(line),))
                    for line in lines)
    return Outcome(variants=((records, ()),), memoize=False)


def _policy_note(plan: ServicePlan, place: Place) -> str:
    """What shapes the answer beyond locality and weights (the explain record's first line)."""
    notes = []
    if plan.shares:
        notes.append("shares " + ",".join(f"{c}={p:g}%" for c, p in plan.shares))
    if plan.capacity_aware:
        notes.append("capacity-aware, " + ("spread by demand" if plan.allocation_for(place)
                                           else "no demand measured for this client"))
    if plan.subset is not None:
        notes.append(f"answer mode subset ({plan.subset} record"
                     f"{'s' if plan.subset > 1 else ''} per answer)")
    return "; " + "; ".join(notes) if notes else ""
