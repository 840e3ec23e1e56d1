"""The bus's wire schema of a service, and its conversion to and from the model.

Why it exists: what a peer may send is one schema, checked by pydantic before a
byte of it reaches the registry (sizes bounded, names and addresses validated,
unknown keys refused), and the codec (:mod:`.codec`) keeps only the signing,
verifying and ordering. New fields are optional and sent only when set, so a
message of an older peer decodes as before and a service that does not use them
stays readable by an older peer.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from feddns.config import ClusterId, HostName, IpAddress, Label
from feddns.model.registry import ClusterState
from feddns.model.services import (
    Endpoint,
    Port,
    Protocol,
    Service,
    ServicePolicy,
    ServiceType,
    dedupe_endpoints,
)

Text = Annotated[str, Field(max_length=253)]


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PortData(_Wire):
    """A service port on the wire."""

    name: str = Field(default="", max_length=63)
    port: int = Field(ge=0, le=65535)
    protocol: Protocol = Protocol.TCP


class EndpointData(_Wire):
    """An endpoint on the wire; absent conditions take EndpointSlice v1 defaults."""

    address: IpAddress
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    hostname: Label | None = None
    zone: Text | None = None
    node: Text | None = None
    target: Text | None = None


Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]


class PolicyData(_Wire):
    """A service's policy from its annotations (absent in messages of older peers)."""

    weights: list[tuple[ClusterId, Annotated[float, Field(ge=0, allow_inf_nan=False)]]] = \
        Field(default_factory=list, max_length=1024)
    regions: list[Label] | None = Field(default=None, max_length=1024)
    none_healthy: Literal["fail-closed", "fail-open", "servfail"] | None = None
    shares: list[tuple[ClusterId, Percent]] = Field(default_factory=list, max_length=1024)
    answer_mode: Literal["ordered", "subset"] | None = None
    capacity_aware: bool | None = None


class ServiceData(_Wire):
    """A service on the wire.

    The fields after ``endpoints`` came later (issue #13): messages without them
    decode as before, and they are sent only when set, so a service that does not
    use them stays readable by an older peer.
    """

    namespace: Label
    name: Label
    type: ServiceType = ServiceType.CLUSTER_IP
    cluster_ips: list[IpAddress] = Field(default_factory=list, max_length=16)
    load_balancer_ips: list[IpAddress] = Field(default_factory=list, max_length=256)
    ports: list[PortData] = Field(default_factory=list, max_length=1024)
    endpoints: list[EndpointData] = Field(default_factory=list, max_length=100_000)
    load_balancer_hostnames: list[HostName] = Field(default_factory=list, max_length=64)
    external_name: HostName | None = None
    traffic_distribution: str | None = Field(default=None, max_length=63)
    policy: PolicyData | None = None


class _Body(_Wire):
    v: Literal[1] = 1
    origin: ClusterId
    instance: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    gen: int = Field(ge=0, lt=2**63)
    ts: float = Field(allow_inf_nan=False)


class ServiceBody(_Body):
    """One service of the origin cluster."""

    kind: Literal["service"]
    service: ServiceData


class SnapshotBody(_Body):
    """The origin cluster's manifest: every service key it has now."""

    kind: Literal["snapshot"]
    services: list[tuple[Label, Label]] = Field(max_length=1_000_000)


class StatusBody(_Body):
    """Online/offline for one publishing session (the last will is an offline status)."""

    kind: Literal["status"]
    online: bool
    session: int = Field(ge=0, lt=2**63)
    state: ClusterState
    clusters: list[ClusterId] = Field(default_factory=list, max_length=1024)
    """On offline: every cluster this session published (one last will covers them all)."""


BODY: TypeAdapter[ServiceBody | SnapshotBody | StatusBody] = TypeAdapter(
    Annotated[ServiceBody | SnapshotBody | StatusBody, Field(discriminator="kind")]
)


def service_from_data(data: ServiceData) -> Service:
    """Convert a validated wire service into the model (addresses canonical, deduped).

    The schema's ``IpAddress`` already gave every address its canonical text form, so
    it is only interned here, not parsed a third time (the address policy parses it
    too): a receiver checks 10,000 services in a join (issue #17).
    """
    return Service(
        namespace=data.namespace,
        name=data.name,
        type=data.type,
        cluster_ips=tuple(sys.intern(a) for a in data.cluster_ips),
        load_balancer_ips=tuple(sys.intern(a) for a in data.load_balancer_ips),
        ports=tuple(Port(p.name, p.port, p.protocol) for p in data.ports),
        endpoints=dedupe_endpoints(
            Endpoint(sys.intern(e.address), ready=e.ready, serving=e.serving,
                     terminating=e.terminating, hostname=e.hostname, zone=e.zone,
                     node=e.node, target=e.target)
            for e in data.endpoints
        ),
        policy=_policy_from_data(data.policy),
        load_balancer_hostnames=tuple(dict.fromkeys(data.load_balancer_hostnames)),
        external_name=data.external_name,
        traffic_distribution=data.traffic_distribution,
    )


def _policy_from_data(data: PolicyData | None) -> ServicePolicy | None:
    if data is None:
        return None
    return ServicePolicy(tuple(data.weights), tuple(data.regions) if data.regions is not None
                         else None, data.none_healthy, tuple(data.shares), data.answer_mode,
                         data.capacity_aware)


def _policy_data(policy: ServicePolicy) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if policy.weights:
        out["weights"] = [list(w) for w in policy.weights]
    if policy.regions is not None:
        out["regions"] = list(policy.regions)
    if policy.shares:
        out["shares"] = [list(s) for s in policy.shares]
    for name in ("none_healthy", "answer_mode", "capacity_aware"):
        value = getattr(policy, name)
        if value is not None:
            out[name] = value
    return out


def data_from_service(service: Service) -> dict[str, Any]:
    """The wire form of a model service (defaults left out to keep messages small)."""
    out: dict[str, Any] = {"namespace": service.namespace, "name": service.name}
    if service.type is not ServiceType.CLUSTER_IP:
        out["type"] = service.type.value
    if service.cluster_ips:
        out["cluster_ips"] = list(service.cluster_ips)
    if service.load_balancer_ips:
        out["load_balancer_ips"] = list(service.load_balancer_ips)
    if service.ports:
        out["ports"] = [_port_data(p) for p in service.ports]
    if service.endpoints:
        out["endpoints"] = [_endpoint_data(e) for e in service.endpoints]
    if service.load_balancer_hostnames:
        out["load_balancer_hostnames"] = list(service.load_balancer_hostnames)
    if service.external_name is not None:
        out["external_name"] = service.external_name
    if service.traffic_distribution is not None:
        out["traffic_distribution"] = service.traffic_distribution
    if service.policy is not None:
        out["policy"] = _policy_data(service.policy)
    return out


def _port_data(port: Port) -> dict[str, Any]:
    out: dict[str, Any] = {"port": port.port}
    if port.name:
        out["name"] = port.name
    if port.protocol is not Protocol.TCP:
        out["protocol"] = port.protocol.value
    return out


def _endpoint_data(ep: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {"address": ep.address}
    if not ep.ready:
        out["ready"] = False
    if not ep.serving:
        out["serving"] = False
    if ep.terminating:
        out["terminating"] = True
    for name in ("hostname", "zone", "node", "target"):
        value = getattr(ep, name)
        if value is not None:
            out[name] = value
    return out
