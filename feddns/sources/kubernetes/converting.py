"""Convert Kubernetes API JSON into the registry's model, at the door.

Why it exists: API objects are large and loosely typed; the rest of feddns
wants small frozen values. Conversion happens in the watch threads on the raw
JSON (parsed by orjson when installed, else ``json.loads``: both far cheaper
than the client's ``V1*`` deserializer), and applies the EndpointSlice v1 nil
rules: ``ready`` nil means true, ``serving`` nil means true, ``terminating``
nil means false. FQDN slices are ignored (they carry no addresses DNS can
answer).

It runs once per endpoint on every (re-)list, in a thread that shares the GIL
with the serving loop, so the per-endpoint work is kept to C calls: an address
already in canonical form (what the API server writes) is checked with
``inet_pton``/``inet_ntop`` and kept as is; only another spelling goes through
``ipaddress`` to be normalised.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from feddns.model.services import (
    Endpoint,
    Port,
    Protocol,
    Service,
    ServiceKey,
    ServicePolicy,
    ServiceType,
    dedupe_endpoints,
    normalise_hostname,
)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


ANNOTATION_WEIGHTS = "feddns.io/weights"
ANNOTATION_REGIONS = "feddns.io/regions"
ANNOTATION_NONE_HEALTHY = "feddns.io/none-healthy"
NONE_HEALTHY_CHOICES = ("fail-closed", "fail-open", "servfail")
ANNOTATION_SHARES = "feddns.io/shares"
ANNOTATION_ANSWER_MODE = "feddns.io/answer-mode"
ANNOTATION_CAPACITY = "feddns.io/capacity-aware"
ANSWER_MODE_CHOICES = ("ordered", "subset")
ANNOTATION_TOPOLOGY_MODE = "service.kubernetes.io/topology-mode"
"""Kubernetes topology-aware routing; ``Auto`` allocates by capacity, which is what
feddns's capacity-aware locality does across clusters (KEP-2433)."""


def _shares(raw: str) -> list[tuple[str, float]] | None:
    """``"west-1=10,east-2=5"`` as (cluster, percent) pairs; None when malformed."""
    out: list[tuple[str, float]] = []
    for item in raw.split(","):
        cluster, sep, value = item.strip().partition("=")
        try:
            number = float(value.strip().removesuffix("%"))
        except ValueError:
            return None
        if not sep or not cluster.strip() or not 0 <= number <= 100:
            return None
        out.append((cluster.strip(), number))
    return out if sum(v for _, v in out) <= 100 else None


def _policy_extras(annotations: Mapping[str, Any]) -> tuple[
        tuple[tuple[str, float], ...], str | None, bool | None]:
    """Shares, answer mode and capacity-awareness from annotations (malformed: ignored)."""
    raw = annotations.get(ANNOTATION_SHARES)
    shares = _shares(raw) if isinstance(raw, str) and raw.strip() else None
    mode = annotations.get(ANNOTATION_ANSWER_MODE)
    capacity = {"true": True, "false": False}.get(
        str(annotations.get(ANNOTATION_CAPACITY, "")).strip().lower())
    if capacity is None and annotations.get(ANNOTATION_TOPOLOGY_MODE) == "Auto":
        capacity = True
    return (tuple(shares or ()), mode if mode in ANSWER_MODE_CHOICES else None, capacity)


def policy_from_annotations(annotations: Mapping[str, Any]) -> ServicePolicy | None:
    """Per-service DNS policy from ``feddns.io/*`` annotations (None when there is none).

    ``feddns.io/weights: "east-1=90,west-1=10"``, ``feddns.io/regions: "eu-west,eu-central"``,
    ``feddns.io/none-healthy: fail-open``, ``feddns.io/shares: "west-1=10"`` (percent of
    every client's answers), ``feddns.io/answer-mode: subset``,
    ``feddns.io/capacity-aware: "true"`` (or ``service.kubernetes.io/topology-mode: Auto``).
    Malformed values are ignored (and the config's ``services`` section always wins
    over annotations).
    """
    weights: list[tuple[str, float]] = []
    raw = annotations.get(ANNOTATION_WEIGHTS)
    if isinstance(raw, str):
        for item in raw.split(","):
            cluster, sep, value = item.strip().partition("=")
            try:
                weight = float(value)
            except ValueError:
                return None
            if not sep or not cluster or weight < 0:
                return None
            weights.append((cluster.strip(), weight))
    shares, mode, capacity = _policy_extras(annotations)
    regions = None
    raw = annotations.get(ANNOTATION_REGIONS)
    if isinstance(raw, str) and raw.strip():
        regions = tuple(r.strip() for r in raw.split(",") if r.strip())
    none_healthy = annotations.get(ANNOTATION_NONE_HEALTHY)
    if none_healthy not in NONE_HEALTHY_CHOICES:
        none_healthy = None
    if (not weights and regions is None and none_healthy is None and not shares
            and mode is None and capacity is None):
        return None
    return ServicePolicy(tuple(weights), regions, none_healthy, shares, mode, capacity)


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """What DNS needs from a v1 Service."""

    namespace: str
    name: str
    type: ServiceType
    cluster_ips: tuple[str, ...]
    load_balancer_ips: tuple[str, ...]
    ports: tuple[Port, ...]
    policy: ServicePolicy | None = None
    load_balancer_hostnames: tuple[str, ...] = ()
    external_name: str | None = None
    traffic_distribution: str | None = None

    @property
    def key(self) -> ServiceKey:
        """``(namespace, name)``."""
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class SliceInfo:
    """What DNS needs from a discovery.k8s.io/v1 EndpointSlice."""

    namespace: str
    name: str
    service: str
    endpoints: tuple[Endpoint, ...]
    ports: tuple[Port, ...]

    @property
    def key(self) -> tuple[str, str]:
        """``(namespace, slice name)``."""
        return (self.namespace, self.name)

    @property
    def service_key(self) -> ServiceKey:
        """The service this slice belongs to."""
        return (self.namespace, self.service)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata") or {}
    if not isinstance(meta, Mapping):
        raise ValueError("metadata is not an object")
    return meta


_pton = socket.inet_pton
_ntop = socket.inet_ntop
_V4, _V6 = socket.AF_INET, socket.AF_INET6


def canonical_address(value: str) -> str | None:
    """``value`` as ``ipaddress`` would print it, or None if it is no IP address.

    The usual case, an address already in that form, costs two C calls.
    """
    family = _V6 if ":" in value else _V4
    try:
        if _ntop(family, _pton(family, value)) == value:
            return value
    except (OSError, ValueError):  # not an address of that family (or a NUL in it)
        pass
    try:
        # Not interned: addresses are unique, interning them only costs memory.
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def ip_list(values: Iterable[Any]) -> tuple[str, ...]:
    """The IP addresses among ``values``, canonical and deduplicated in order."""
    out = []
    for v in values:
        if not isinstance(v, str) or not v or v == "None":
            continue
        address = canonical_address(v)
        if address is not None:
            out.append(address)
    return tuple(dict.fromkeys(out)) if len(out) > 1 else tuple(out)


def _hostnames(values: Iterable[Any]) -> tuple[str, ...]:
    """Valid host names, canonical and deduplicated (the rest are left out)."""
    out = []
    for v in values:
        if isinstance(v, str) and v:
            try:
                out.append(normalise_hostname(v))
            except ValueError:
                continue
    return tuple(dict.fromkeys(out))


def protocol_of(value: Any) -> Protocol:
    """A port's protocol; TCP when unset or unknown."""
    try:
        return Protocol(value or "TCP")
    except ValueError:
        return Protocol.TCP


def service_info(obj: Mapping[str, Any]) -> ServiceInfo | None:
    """A v1 Service as :class:`ServiceInfo`; None for an ExternalName without a valid name."""
    meta = _meta(obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    stype = spec.get("type") or "ClusterIP"
    if stype == "ExternalName":
        return _external_name_info(meta, spec)
    cluster_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    headless = spec.get("clusterIP") == "None" or cluster_ips == ["None"]
    ingress = (status.get("loadBalancer") or {}).get("ingress") or []
    lb_ips = [i.get("ip") for i in ingress if isinstance(i, Mapping)]
    lb_hosts = [i.get("hostname") for i in ingress if isinstance(i, Mapping) and not i.get("ip")]
    if headless:
        kind = ServiceType.HEADLESS
    elif stype == "LoadBalancer":
        kind = ServiceType.LOAD_BALANCER
    else:
        kind = ServiceType.CLUSTER_IP
    ports = tuple(
        Port(str(p.get("name") or ""), int(p["port"]), protocol_of(p.get("protocol")))
        for p in spec.get("ports") or []
        if isinstance(p, Mapping) and isinstance(p.get("port"), int)
    )
    return ServiceInfo(
        namespace=sys.intern(str(meta["namespace"])),
        name=sys.intern(str(meta["name"])),
        type=kind,
        cluster_ips=() if headless else ip_list(cluster_ips),
        load_balancer_ips=ip_list(lb_ips) if kind is ServiceType.LOAD_BALANCER else (),
        ports=ports,
        policy=policy_from_annotations(meta.get("annotations") or {}),
        load_balancer_hostnames=(_hostnames(lb_hosts) if kind is ServiceType.LOAD_BALANCER
                                 else ()),
        traffic_distribution=_traffic_distribution(spec),
    )


def _traffic_distribution(spec: Mapping[str, Any]) -> str | None:
    value = spec.get("trafficDistribution")
    return sys.intern(value) if isinstance(value, str) and 0 < len(value) <= 63 else None


def _external_name_info(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> ServiceInfo | None:
    """An ExternalName Service: answered with a CNAME to ``spec.externalName``."""
    try:
        target = normalise_hostname(str(spec.get("externalName") or ""))
    except ValueError:
        return None
    return ServiceInfo(
        namespace=sys.intern(str(meta["namespace"])), name=sys.intern(str(meta["name"])),
        type=ServiceType.EXTERNAL_NAME, cluster_ips=(), load_balancer_ips=(), ports=(),
        policy=policy_from_annotations(meta.get("annotations") or {}), external_name=target)


def slice_info(obj: Mapping[str, Any]) -> SliceInfo | None:
    """An EndpointSlice as :class:`SliceInfo`; None for FQDN or unowned slices."""
    meta = _meta(obj)
    labels = meta.get("labels") or {}
    service = labels.get(SERVICE_NAME_LABEL)
    if not service or obj.get("addressType") not in ("IPv4", "IPv6"):
        return None
    intern = sys.intern
    make = Endpoint._make
    endpoints = []
    # Parsed JSON objects are dicts: isinstance(x, dict) is a C check, Mapping an ABC's.
    for ep in obj.get("endpoints") or []:
        if not isinstance(ep, dict):
            continue
        conditions = ep.get("conditions") or {}
        if not isinstance(conditions, dict):
            conditions = {}
        ready = conditions.get("ready")
        serving = conditions.get("serving")
        terminating = conditions.get("terminating")
        target = ep.get("targetRef")
        hostname = ep.get("hostname")
        zone = ep.get("zone")
        node = ep.get("nodeName")
        # Endpoint's fields, in order (positional: a keyword call costs twice as much).
        rest = (
            True if ready is None else bool(ready),
            True if serving is None else bool(serving),
            False if terminating is None else bool(terminating),
            hostname if isinstance(hostname, str) and hostname else None,
            intern(zone) if isinstance(zone, str) and zone else None,
            intern(node) if isinstance(node, str) and node else None,
            target.get("name") if isinstance(target, dict) else None,
        )
        for address in ip_list(ep.get("addresses") or []):
            endpoints.append(make((address, *rest)))
    ports = tuple(
        Port(str(p.get("name") or ""), int(p["port"]), protocol_of(p.get("protocol")))
        for p in obj.get("ports") or []
        if isinstance(p, Mapping) and isinstance(p.get("port"), int)
    )
    return SliceInfo(
        namespace=intern(str(meta["namespace"])),
        name=str(meta["name"]),
        service=intern(str(service)),
        endpoints=tuple(endpoints),
        ports=ports,
    )


def build_service(info: ServiceInfo, slices: Iterable[SliceInfo]) -> Service:
    """Merge a Service with all its EndpointSlices (duplicates across slices removed).

    Non-headless services answer their own ports; headless services answer the
    endpoints' ports (what the pods listen on), falling back to the service's.
    """
    slice_list = list(slices)
    endpoints = dedupe_endpoints(ep for s in slice_list for ep in s.endpoints)
    ports = info.ports
    if info.type is ServiceType.HEADLESS:
        slice_ports = tuple(dict.fromkeys(p for s in slice_list for p in s.ports))
        ports = slice_ports or ports
    return Service(
        namespace=info.namespace,
        name=info.name,
        type=info.type,
        cluster_ips=info.cluster_ips,
        load_balancer_ips=info.load_balancer_ips,
        ports=ports,
        endpoints=() if info.type is ServiceType.EXTERNAL_NAME else endpoints,
        policy=info.policy,
        load_balancer_hostnames=info.load_balancer_hostnames,
        external_name=info.external_name,
        traffic_distribution=info.traffic_distribution,
    )
