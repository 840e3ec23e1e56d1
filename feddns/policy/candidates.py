"""The candidates of an answer, and how far each is from a client (its tier).

Why it exists: the selection (:mod:`.selection`) and the ways answers spread
beyond the nearest tier (:mod:`.spreading`) both rank candidates by the same
tiers; the type and the distance live here, below both, so neither imports the
other's users.
"""

from __future__ import annotations

from dataclasses import dataclass

from feddns.model.services import Port
from feddns.policy.health import Level
from feddns.policy.locality import Place

TIER_NAMES = ("same zone", "same cluster or zone", "same region", "other region")

CandidateKey = tuple[str, "bytes | None"]
"""A candidate's identity across address families: its cluster and endpoint name."""


@dataclass(frozen=True, slots=True)
class ClusterTraits:
    """What only a cluster-level candidate has.

    Kept in one object apart from :class:`Candidate`: a million endpoint candidates
    (headless services) would otherwise pay a slot for each of these fields.
    """

    family_levels: tuple[Level, Level] | None = None
    """Its level per address family (IPv4, IPv6): its IPv4 service address answers only
    while it has a ready IPv4 endpoint, and likewise for IPv6 (EndpointSlices, and so
    kube-proxy's rules, are per family)."""
    lb_resolved: tuple[str, ...] = ()
    """What its load-balancer ingress hostnames resolve to (the cloud load balancer's own
    addresses: not subject to the per-family rule, the load balancer translates)."""
    lb_only: bool = False
    """It has load-balancer ingress hostnames: under a load-balancer origin only ingress
    addresses answer for it, never its cluster IP (which other clusters seldom reach),
    even while the hostnames are not resolved yet."""
    external_name: bytes | None = None
    """An ExternalName service's CNAME target in this cluster (wire form)."""
    capacity: float = 0.0
    """Ready endpoints behind it (capacity-aware locality)."""


NO_TRAITS = ClusterTraits()


@dataclass(frozen=True, slots=True)
class Candidate:
    """One answerable target: a cluster's service address(es), or one endpoint group."""

    cluster: str
    region: str
    zones: tuple[str, ...]
    """For a cluster-level candidate the cluster's zones; for an endpoint its own zone."""
    addresses: tuple[str, ...]
    level: Level
    weight: float
    owner: bytes | None = None
    """The endpoint's own DNS name (headless): SRV target and per-endpoint name."""
    ports: tuple[Port, ...] = ()
    endpoint: bool = False
    """True when the candidate is an endpoint (ranked by its own zone)."""
    lb_addresses: tuple[str, ...] = ()
    """A cluster-level candidate's load-balancer ingress IPs."""
    held: bool = False
    """Its cluster counts as fresh only because self-isolation is suspected: answered as
    before, but signalled stale (stale TTL, EDE 3)."""
    traits: ClusterTraits = NO_TRAITS
    """A cluster-level candidate's per-family levels, resolved ingress, ExternalName
    target and capacity."""

    @property
    def key(self) -> CandidateKey:
        """Who this is, whatever its addresses of one family (see :data:`CandidateKey`)."""
        return (self.cluster, self.owner)

    @property
    def family_levels(self) -> tuple[Level, Level] | None:
        """See :attr:`ClusterTraits.family_levels`."""
        return self.traits.family_levels

    @property
    def lb_resolved(self) -> tuple[str, ...]:
        """See :attr:`ClusterTraits.lb_resolved`."""
        return self.traits.lb_resolved

    @property
    def lb_only(self) -> bool:
        """See :attr:`ClusterTraits.lb_only`."""
        return self.traits.lb_only

    @property
    def external_name(self) -> bytes | None:
        """See :attr:`ClusterTraits.external_name`."""
        return self.traits.external_name

    @property
    def capacity(self) -> float:
        """Ready endpoints behind it: a cluster's (:attr:`ClusterTraits.capacity`), or 1."""
        return 1.0 if self.endpoint else self.traits.capacity


def tier(candidate: Candidate, place: Place) -> int:
    """0 same zone of the same cluster; 1 same cluster or zone; 2 same region; 3 the rest."""
    if place.cluster is None and place.zone is None and place.region is None:
        return 0
    same_cluster = candidate.cluster == place.cluster
    same_zone = place.zone is not None and place.zone in candidate.zones
    if same_cluster and (same_zone or (not candidate.endpoint and place.zone is None)):
        return 0 if same_zone else 1
    if same_cluster or same_zone:
        return 1
    if place.region is not None and candidate.region == place.region:
        return 2
    return 3
