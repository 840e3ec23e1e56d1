"""One member cluster's API client, rebuilt whenever its credentials change.

Why it exists: the official client's kubeconfig loader reads a token once
and caches it for ever (kubernetes-client/python #1768, #741), and bound
service-account tokens expire; a DNS server must not need a restart for a
token rotation. This wrapper re-reads the kubeconfig (and the token file it
names) whenever either file changes, before every list or watch request, and
on any 401. TLS verification stays on unless the kubeconfig itself says
``insecure-skip-tls-verify``. This module is the only importer of the
``kubernetes`` package.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

INCLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

__all__ = ["ApiException", "ClusterClient", "Resource"]


class Resource:
    """Names of the watched resource kinds."""

    SERVICES = "services"
    ENDPOINTSLICES = "endpointslices"
    SERVICEEXPORTS = "serviceexports"


MCS_GROUP = "multicluster.x-k8s.io"
MCS_VERSION = "v1alpha1"


class ClusterClient:
    """Builds list/watch requests for one cluster with always-current credentials."""

    def __init__(
        self,
        *,
        kubeconfig: Path | None,
        context: str | None,
        in_cluster: bool,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.in_cluster = in_cluster
        self._lock = threading.Lock()
        self._api: k8s_client.ApiClient | None = None
        self._fingerprint: bytes | None = None

    def _credential_files(self) -> list[Path]:
        if self.in_cluster:
            return [INCLUSTER_TOKEN]
        assert self.kubeconfig is not None
        files = [self.kubeconfig]
        try:
            doc = yaml.safe_load(self.kubeconfig.read_text()) or {}
            ctx_name = self.context or doc.get("current-context")
            ctx = next(c["context"] for c in doc.get("contexts", []) if c["name"] == ctx_name)
            user = next(u["user"] for u in doc.get("users", []) if u["name"] == ctx.get("user"))
            token_file = user.get("tokenFile")
            if token_file:
                path = Path(token_file)
                files.append(path if path.is_absolute() else self.kubeconfig.parent / path)
        except Exception:  # a broken kubeconfig is reported when it is loaded
            return files
        return files

    def _current_fingerprint(self) -> bytes:
        digest = hashlib.sha256()
        for path in self._credential_files():
            try:
                digest.update(path.read_bytes())
            except OSError:
                digest.update(b"<missing>")
        return digest.digest()

    def _build(self) -> k8s_client.ApiClient:
        configuration = k8s_client.Configuration()
        if self.in_cluster:
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            k8s_config.load_kube_config(
                config_file=str(self.kubeconfig),
                context=self.context,
                client_configuration=configuration,
                persist_config=False,
            )
        # urllib3 retries a read timeout three times by default, which would quadruple the
        # time to notice a silent partition; this source owns its retry loop instead.
        configuration.retries = False
        return k8s_client.ApiClient(configuration)

    def api(self) -> k8s_client.ApiClient:
        """The API client, rebuilt first if the kubeconfig or token changed on disk."""
        with self._lock:
            fingerprint = self._current_fingerprint()
            if self._api is None or fingerprint != self._fingerprint:
                old = self._api
                self._api = self._build()
                self._fingerprint = fingerprint
                if old is not None:
                    old.close()
            return self._api

    def invalidate(self) -> None:
        """Forget the client (after a 401): the next request re-reads credentials."""
        with self._lock:
            self._fingerprint = None

    def close(self) -> None:
        """Release connection pools."""
        with self._lock:
            if self._api is not None:
                self._api.close()
                self._api = None

    def list_call(self, resource: str, namespace: str | None) -> Callable[..., Any]:
        """The generated list function for ``resource`` (all namespaces when None)."""
        api = self.api()
        if resource == Resource.SERVICES:
            core = k8s_client.CoreV1Api(api)
            if namespace is None:
                return core.list_service_for_all_namespaces
            return lambda **kw: core.list_namespaced_service(namespace, **kw)
        if resource == Resource.ENDPOINTSLICES:
            disc = k8s_client.DiscoveryV1Api(api)
            if namespace is None:
                return disc.list_endpoint_slice_for_all_namespaces
            return lambda **kw: disc.list_namespaced_endpoint_slice(namespace, **kw)
        if resource == Resource.SERVICEEXPORTS:
            custom = k8s_client.CustomObjectsApi(api)
            if namespace is None:
                return lambda **kw: custom.list_cluster_custom_object(
                    MCS_GROUP, MCS_VERSION, "serviceexports", **kw)
            return lambda **kw: custom.list_namespaced_custom_object(
                MCS_GROUP, MCS_VERSION, namespace, "serviceexports", **kw)
        raise ValueError(f"unknown resource {resource!r}")
