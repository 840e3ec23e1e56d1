"""Services, their ports and endpoints, and one cluster's snapshot of them.

Why it exists: every source produces exactly these frozen, slotted objects, so
the registry can compare old and new data by value (the SOA serial only moves
when something visible changes) and memory per endpoint stays small.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

ServiceKey = tuple[str, str]
"""``(namespace, name)``: identifies a service across the whole federation."""


class ServiceType(enum.StrEnum):
    """How a service is addressed (Kubernetes ``spec.type`` plus headlessness)."""

    CLUSTER_IP = "ClusterIP"
    """Answered with the cluster IP of each cluster that has ready endpoints."""
    LOAD_BALANCER = "LoadBalancer"
    """Answered with each cluster's load-balancer ingress IP (or its cluster IP)."""
    HEADLESS = "Headless"
    """Answered with the ready endpoints' own addresses (``clusterIP: None``)."""
    EXTERNAL_NAME = "ExternalName"
    """Answered with a CNAME to ``external_name`` (no addresses, no endpoints)."""


class Protocol(enum.StrEnum):
    """Transport protocol of a service port (becomes ``_tcp``/``_udp``/``_sctp``)."""

    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


@dataclass(frozen=True, slots=True)
class Port:
    """A service port. ``name`` is empty for an unnamed port (no ``_port._proto`` SRV)."""

    name: str
    port: int
    protocol: Protocol = Protocol.TCP


class Endpoint(NamedTuple):
    """One address of a service backend, with its EndpointSlice conditions.

    ``ready`` nil in the API means true; ``serving`` nil means true;
    ``terminating`` nil means false (EndpointSlice v1 semantics); converters
    apply those defaults so this object always holds plain booleans.

    A named tuple rather than a frozen dataclass: equally immutable, and built
    five times faster, which matters at a million endpoints (re-lists, warm start).
    """

    address: str
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    hostname: str | None = None
    zone: str | None = None
    node: str | None = None
    target: str | None = None
    """The backing object's name (a pod), which ties the IPv4 and IPv6 endpoints of
    one dual-stack pod together so A and AAAA answer the same subset."""

    @property
    def is_ipv6(self) -> bool:
        """True for an IPv6 address."""
        return ":" in self.address


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    """Per-service DNS policy carried with the data (e.g. from Service annotations).

    ``weights`` maps cluster ids to relative weights (0 drains a cluster);
    ``regions`` restricts answers to those regions (residency); ``none_healthy``
    is ``fail-closed``, ``fail-open`` or ``servfail``; ``shares`` maps cluster ids
    to the percent of every client's answers they get whatever the client's tier;
    ``answer_mode`` is ``ordered`` or ``subset``; ``capacity_aware`` keeps clients in
    their tier only while it has the capacity for them (None: not said).
    """

    weights: tuple[tuple[str, float], ...] = ()
    regions: tuple[str, ...] | None = None
    none_healthy: str | None = None
    shares: tuple[tuple[str, float], ...] = ()
    answer_mode: str | None = None
    capacity_aware: bool | None = None


@dataclass(frozen=True, slots=True)
class Service:
    """One cluster's view of a service: addresses, ports and endpoints."""

    namespace: str
    name: str
    type: ServiceType = ServiceType.CLUSTER_IP
    cluster_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    ports: tuple[Port, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    policy: ServicePolicy | None = None
    load_balancer_hostnames: tuple[str, ...] = ()
    """Load-balancer ingress hostnames (EKS style), lowercase, without the final dot; the
    addresses they resolve to are answered like ingress IPs (``sources.hostnames``)."""
    external_name: str | None = None
    """The CNAME target of an ExternalName service (lowercase, without the final dot)."""
    traffic_distribution: str | None = None
    """The Service's ``spec.trafficDistribution`` (``PreferClose``, ``PreferSameZone``...)."""
    _counts: tuple[int, int, int, int] | None = field(
        default=None, init=False, repr=False, compare=False, hash=False)

    @property
    def key(self) -> ServiceKey:
        """The federation-wide identity of this service."""
        return (self.namespace, self.name)

    def endpoint_counts(self) -> tuple[int, int, int, int]:
        """``(IPv4 ready, IPv6 ready, IPv4 last resort, IPv6 last resort)`` endpoints.

        Counted on first use and kept: a service's plan is recompiled whenever any
        cluster's view of it changes, and every compile needs these counts for every
        cluster, so without the memo one cluster's change re-walked the endpoints of
        all the others (measured: a fifth of the initial sync's compiles).
        """
        counts = self._counts
        if counts is None:
            ready = [0, 0]
            last = [0, 0]
            for e in self.endpoints:
                if e.ready:
                    ready[":" in e.address] += 1
                elif e.serving and e.terminating:
                    last[":" in e.address] += 1
            counts = (ready[0], ready[1], last[0], last[1])
            object.__setattr__(self, "_counts", counts)  # a memo: not part of the value
        return counts

    @property
    def is_headless(self) -> bool:
        """True when the service is answered with endpoint addresses."""
        return self.type is ServiceType.HEADLESS


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """Everything one cluster currently exports, keyed by ``(namespace, name)``."""

    cluster: str
    services: Mapping[ServiceKey, Service] = field(default_factory=dict)

    @classmethod
    def from_services(cls, cluster: str, services: Iterable[Service]) -> ClusterSnapshot:
        """Build a snapshot; a later duplicate of the same key replaces an earlier one."""
        return cls(cluster, {s.key: s for s in services})

    @property
    def endpoint_count(self) -> int:
        """Number of endpoints across all services (for status and metrics)."""
        return sum(len(s.endpoints) for s in self.services.values())


def normalise_address(value: str) -> str:
    """Return the canonical text form of an IPv4/IPv6 address (raises ValueError)."""
    return sys.intern(str(ipaddress.ip_address(value)))


_HOST_LABEL = re.compile(r"^[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9])?$")


def normalise_hostname(value: str) -> str:
    """A DNS host name in canonical form: lowercase, no final dot (raises ValueError).

    Load-balancer hostnames and ExternalName targets come from data, so they are
    checked like any name feddns puts on the wire: LDH labels of at most 63 octets,
    at most 253 in all, at least two labels (a bare label is no external name).
    """
    name = value.strip().lower().removesuffix(".")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_HOST_LABEL.fullmatch(x) for x in labels):
        raise ValueError(f"{value!r} is not a DNS host name")
    return sys.intern(name)


def dedupe_endpoints(endpoints: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    """Merge endpoints by address, keeping the most available condition seen.

    The same endpoint may appear in two EndpointSlices during an update
    (Kubernetes EndpointSlice docs); the union is what kube-proxy uses.
    """
    merged: dict[str, Endpoint] = {}
    for ep in endpoints:
        old = merged.get(ep.address)
        if old is None or (ep.ready, ep.serving, not ep.terminating) > (
            old.ready,
            old.serving,
            not old.terminating,
        ):
            merged[ep.address] = ep
    return tuple(merged.values())
