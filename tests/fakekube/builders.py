"""Builders for realistic Kubernetes JSON objects used with the fake API server.

The fake API server (``tests.fakekube.server``) stores plain dicts and serves them
verbatim, so whatever these builders produce is exactly what the official
``kubernetes`` client will deserialise.  They therefore use the real Kubernetes
JSON (camelCase) field names and fill in the defaults a real control plane
would add (``clusterIPs``, ``ipFamilies``, endpoint ``conditions``, the
``kubernetes.io/service-name`` label, ...), so tests do not have to spell out
every field and cannot accidentally use snake_case names the client would ignore.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MCS_GROUP = "multicluster.x-k8s.io"
MCS_VERSION = "v1alpha1"

__all__ = [
    "MANAGED_BY_LABEL",
    "MCS_GROUP",
    "MCS_VERSION",
    "SERVICE_NAME_LABEL",
    "make_endpoint",
    "make_endpointslice",
    "make_namespace",
    "make_service",
    "make_serviceexport",
]


def _ip_family(address: str) -> str:
    return "IPv6" if ipaddress.ip_address(address).version == 6 else "IPv4"


def _default_cluster_ip(ns: str, name: str) -> str:
    """Return a deterministic, plausible ClusterIP in 10.96.0.0/12 for ns/name."""
    digest = hashlib.sha256(f"{ns}/{name}".encode()).digest()
    return f"10.{96 + digest[0] % 16}.{digest[1]}.{1 + digest[2] % 254}"


def _normalise_port(port: Mapping[str, Any], *, service: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if port.get("name") is not None:
        out["name"] = port["name"]
    out["protocol"] = port.get("protocol", "TCP")
    out["port"] = int(port["port"])
    if service:
        out["targetPort"] = port.get("targetPort", port["port"])
        if port.get("nodePort") is not None:
            out["nodePort"] = int(port["nodePort"])
    if port.get("appProtocol") is not None:
        out["appProtocol"] = port["appProtocol"]
    return out


def make_namespace(name: str, *, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build a v1 Namespace object in the Active phase."""
    all_labels = {"kubernetes.io/metadata.name": name, **(labels or {})}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": all_labels},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def make_service(
    ns: str,
    name: str,
    *,
    type: str = "ClusterIP",
    cluster_ips: Sequence[str] | None = None,
    ports: Iterable[Mapping[str, Any]] | None = None,
    lb_ips: Sequence[str] | None = None,
    lb_hostnames: Sequence[str] | None = None,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    headless: bool = False,
    selector: Mapping[str, str] | None = None,
    external_name: str | None = None,
    ip_family_policy: str | None = None,
    traffic_distribution: str | None = None,
) -> dict[str, Any]:
    """Build a v1 Service as the API server would return it.

    ``cluster_ips`` defaults to one deterministic IPv4 address; ``headless``
    sets ``clusterIP``/``clusterIPs`` to ``"None"``; ``lb_ips``/``lb_hostnames``
    fill ``status.loadBalancer.ingress``; ``type="ExternalName"`` takes
    ``external_name`` and gets no cluster IP.  Each entry of ``ports`` is a dict
    with ``port`` and optional ``name``, ``protocol`` (default TCP),
    ``targetPort``, ``nodePort``, ``appProtocol``. ``traffic_distribution`` sets
    ``spec.trafficDistribution`` (``PreferClose``, ``PreferSameZone``, ...).
    """
    spec: dict[str, Any] = {"type": type}
    if type == "ExternalName":
        spec["externalName"] = external_name or f"{name}.example.com"
    else:
        if headless:
            spec["clusterIP"] = "None"
            spec["clusterIPs"] = ["None"]
            families = ["IPv4"]
        else:
            ips = list(cluster_ips) if cluster_ips else [_default_cluster_ip(ns, name)]
            spec["clusterIP"] = ips[0]
            spec["clusterIPs"] = ips
            families = [_ip_family(ip) for ip in ips]
        spec["ipFamilies"] = families
        spec["ipFamilyPolicy"] = ip_family_policy or (
            "RequireDualStack" if len(families) > 1 else "SingleStack"
        )
        spec["internalTrafficPolicy"] = "Cluster"
        spec["sessionAffinity"] = "None"
        spec["selector"] = dict(selector) if selector is not None else {"app": name}
    spec["ports"] = [_normalise_port(p, service=True) for p in (ports or [])]
    if traffic_distribution is not None:
        spec["trafficDistribution"] = traffic_distribution
    if type in ("LoadBalancer", "NodePort"):
        spec["externalTrafficPolicy"] = "Cluster"
    ingress: list[dict[str, Any]] = [{"ip": ip, "ipMode": "VIP"} for ip in lb_ips or []]
    ingress += [{"hostname": h} for h in lb_hostnames or []]
    metadata: dict[str, Any] = {"name": name, "namespace": ns}
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": spec,
        "status": {"loadBalancer": {"ingress": ingress} if ingress else {}},
    }


def make_endpoint(
    *addresses: str,
    ready: bool = True,
    serving: bool | None = None,
    terminating: bool = False,
    hostname: str | None = None,
    zone: str | None = None,
    node_name: str | None = None,
    pod: str | None = None,
    pod_namespace: str | None = None,
) -> dict[str, Any]:
    """Build one ``endpoints[]`` entry of an EndpointSlice (``serving`` defaults to ``ready``)."""
    ep: dict[str, Any] = {
        "addresses": list(addresses),
        "conditions": {
            "ready": ready,
            "serving": ready if serving is None else serving,
            "terminating": terminating,
        },
    }
    if hostname is not None:
        ep["hostname"] = hostname
    if node_name is not None:
        ep["nodeName"] = node_name
    if zone is not None:
        ep["zone"] = zone
    if pod is not None:
        ep["targetRef"] = {"kind": "Pod", "name": pod, "namespace": pod_namespace or "default"}
    return ep


def _normalise_endpoint(ep: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(ep, str):
        return make_endpoint(ep)
    out = dict(ep)
    out["addresses"] = list(out["addresses"])
    conditions = dict(out.get("conditions") or {})
    conditions.setdefault("ready", True)
    conditions.setdefault("serving", conditions["ready"])
    conditions.setdefault("terminating", False)
    out["conditions"] = conditions
    return out


def make_endpointslice(
    ns: str,
    name: str,
    service: str,
    *,
    address_type: str = "IPv4",
    endpoints: Iterable[Mapping[str, Any] | str] | None = None,
    ports: Iterable[Mapping[str, Any]] | None = None,
    labels: Mapping[str, str] | None = None,
    managed_by: str = "endpointslice-controller.k8s.io",
) -> dict[str, Any]:
    """Build a discovery.k8s.io/v1 EndpointSlice belonging to ``service``.

    ``endpoints`` entries are either full dicts (``addresses``, ``conditions``,
    ``hostname``, ``zone``, ``nodeName``, ``targetRef``; missing conditions are
    defaulted to ready/serving/not terminating) or bare address strings.
    ``ports`` entries take ``port`` and optional ``name``/``protocol``/``appProtocol``.
    """
    all_labels = {SERVICE_NAME_LABEL: service, MANAGED_BY_LABEL: managed_by, **(labels or {})}
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": all_labels},
        "addressType": address_type,
        "endpoints": [_normalise_endpoint(ep) for ep in endpoints or []],
        "ports": [_normalise_port(p, service=False) for p in ports or []],
    }


def make_serviceexport(
    ns: str,
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    conditions: Iterable[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Build a multicluster.x-k8s.io/v1alpha1 ServiceExport (optionally with status.conditions)."""
    metadata: dict[str, Any] = {"name": name, "namespace": ns}
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    obj: dict[str, Any] = {
        "apiVersion": f"{MCS_GROUP}/{MCS_VERSION}",
        "kind": "ServiceExport",
        "metadata": metadata,
    }
    if conditions is not None:
        obj["status"] = {"conditions": [dict(c) for c in conditions]}
    return obj
