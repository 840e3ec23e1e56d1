"""One member cluster's API client, rebuilt whenever its credentials change.

Why it exists: the official client's kubeconfig loader reads a token once
and caches it for ever (kubernetes-client/python #1768, #741), and bound
service-account tokens expire; a DNS server must not need a restart for a
token rotation. This wrapper re-reads the kubeconfig (and the token file it
names) whenever either file changes, before every list or watch request, and
on any 401. A change is noticed by the files' stat (their contents are read,
parsed and hashed only when a stat moved, or while a file is younger than
``RACY_SECONDS``: re-parsing the kubeconfig's YAML before every request and
every liveness probe was a quarter of the CPU of an initial sync, and went on
every two seconds per cluster after it). TLS verification stays on unless the kubeconfig itself says
``insecure-skip-tls-verify``. A kubeconfig that turns unreadable or broken
after start (a botched rotation) keeps the last good client, and the error
names the file. This module is the only importer of the ``kubernetes`` package.

Two things the client does not offer are added here. A liveness probe
(``GET /version``, answered by the API server from memory) on a client of its
own, with one short timeout for the whole request, so that a silent partition
is seen within seconds instead of a watch's read timeout (client-go gets the
same from HTTP/2 health checks). And :meth:`ClusterClient.interrupt`, which
shuts the socket a given watch thread is blocked on, so that a watch hanging
on a silent connection is restarted as soon as the probe says so: the
connection pool records which thread holds which connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from feddns.errors import FeddnsError

log = logging.getLogger(__name__)

INCLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""LibYAML's safe loader when PyYAML has it (ten times faster than the pure-Python one)."""
RACY_SECONDS = 2.0
"""A credential file modified this recently may change again within one timestamp tick:
its contents are read again on every request until it is older than that."""

Stamp = tuple[int, int, int, int, int] | None
"""A file's modification and change times (ns), size, inode and device; None: missing."""


def _stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)

__all__ = ["ApiException", "ClusterClient", "CredentialError", "Resource", "describe_error"]


class CredentialError(FeddnsError):
    """The kubeconfig (or in-cluster account) cannot be loaded; the message names it."""


class Resource:
    """Names of the watched resource kinds."""

    SERVICES = "services"
    ENDPOINTSLICES = "endpointslices"
    SERVICEEXPORTS = "serviceexports"


MCS_GROUP = "multicluster.x-k8s.io"
MCS_VERSION = "v1alpha1"


class _Connections:
    """The connection each thread is using now (recorded by :func:`_tracking_pools`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_thread: dict[int, Any] = {}

    def note(self, conn: Any) -> None:
        with self.lock:
            self.by_thread[threading.get_ident()] = conn

    def shut(self, threads: Iterable[int]) -> int:
        """Shut the sockets ``threads`` are using; return how many were open."""
        with self.lock:
            conns = [self.by_thread.get(t) for t in threads]
        shut = 0
        for conn in conns:
            sock = getattr(conn, "sock", None)
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
                shut += 1
        return shut


def _tracking_pools(connections: _Connections) -> dict[str, type[Any]]:
    """Connection pool classes that record which thread takes which connection."""

    class HTTPPool(urllib3.HTTPConnectionPool):
        def _get_conn(self, timeout: float | None = None) -> Any:
            conn = super()._get_conn(timeout)
            connections.note(conn)
            return conn

    class HTTPSPool(urllib3.HTTPSConnectionPool):
        def _get_conn(self, timeout: float | None = None) -> Any:
            conn = super()._get_conn(timeout)
            connections.note(conn)
            return conn

    return {"http": HTTPPool, "https": HTTPSPool}


def describe_error(exc: BaseException) -> str:
    """A one-line description of a request failure (type and first line, bounded)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


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
        self._probe_api: k8s_client.ApiClient | None = None
        self._fingerprint: bytes | None = None
        self._files: list[Path] = []
        self._stamps: tuple[Stamp, ...] = ()
        self._digest = b""
        """The credential files' digest as of :attr:`_stamps` (when those are settled)."""
        self._connections = _Connections()
        self.credential_error: str | None = None
        """Why the current credentials could not be loaded (None: they could), naming
        the file; the last good client stays in use meanwhile."""

    def _credential_files(self) -> list[Path]:
        if self.in_cluster:
            return [INCLUSTER_TOKEN]
        assert self.kubeconfig is not None
        files = [self.kubeconfig]
        try:
            doc = yaml.load(self.kubeconfig.read_text(), Loader=_SafeLoader) or {}  # noqa: S506 (a safe loader)
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
        """A digest of the credential files; re-read only when their stat moved."""
        if self._digest and tuple(_stamp(p) for p in self._files) == self._stamps:
            return self._digest
        files = self._credential_files()
        stamps = tuple(_stamp(p) for p in files)  # before reading: a change after it shows
        digest = hashlib.sha256()
        for path in files:
            try:
                digest.update(path.read_bytes())
            except OSError:
                digest.update(b"<missing>")
        now = time.time()
        settled = all(s is None or now - max(s[0], s[1]) / 1e9 >= RACY_SECONDS for s in stamps)
        self._files, self._stamps = files, stamps
        self._digest = digest.digest() if settled else b""
        return digest.digest()

    def _configuration(self) -> k8s_client.Configuration:
        """Load the credentials; raise :class:`CredentialError` naming the file."""
        configuration = k8s_client.Configuration()
        where = ("the in-cluster service account" if self.in_cluster
                 else f"kubeconfig {self.kubeconfig}")
        try:
            if self.in_cluster:
                k8s_config.load_incluster_config(client_configuration=configuration)
            else:
                k8s_config.load_kube_config(
                    config_file=str(self.kubeconfig),
                    context=self.context,
                    client_configuration=configuration,
                    persist_config=False,
                )
        except Exception as exc:  # the loader raises many types (YAML, OSError, its own)
            raise CredentialError(f"{where}: {describe_error(exc)}") from exc
        # urllib3 retries a read timeout three times by default, which would quadruple the
        # time to notice a silent partition; this source owns its retry loop instead.
        configuration.retries = False
        return configuration

    def _build(self, configuration: k8s_client.Configuration) -> k8s_client.ApiClient:
        api = k8s_client.ApiClient(configuration)
        # Pools are created on the first request, so the classes can still be swapped.
        api.rest_client.pool_manager.pool_classes_by_scheme = _tracking_pools(
            self._connections)
        return api

    def _refresh(self) -> None:
        """Rebuild the clients when the credential files changed (lock held).

        A change that cannot be loaded keeps the last good clients and records
        why (``credential_error``); with no client yet, it raises.
        """
        fingerprint = self._current_fingerprint()
        if self._api is not None and fingerprint == self._fingerprint:
            return
        try:
            configuration = self._configuration()
        except CredentialError as exc:
            self.credential_error = str(exc)
            if self._api is None:
                raise
            log.error("%s; keeping the last good credentials until it is fixed", exc)
            self._fingerprint = fingerprint  # reported once; retried when it changes again
            return
        old, old_probe = self._api, self._probe_api
        self._api = self._build(configuration)
        self._probe_api = k8s_client.ApiClient(configuration)
        self._fingerprint = fingerprint
        if self.credential_error is not None and old is not None:
            log.info("credentials of %s usable again", self.kubeconfig or "the pod")
        self.credential_error = None
        for client in (old, old_probe):
            if client is not None:
                client.close()

    def api(self) -> k8s_client.ApiClient:
        """The API client, rebuilt first if the kubeconfig or token changed on disk."""
        with self._lock:
            self._refresh()
            assert self._api is not None
            return self._api

    def probe(self, timeout: float) -> str | None:
        """One liveness check: ``GET /version`` within ``timeout`` s in all.

        Returns None when the API server answered (any status below 500: a 401 or
        403 is an answer, and the watches report those), else why not.
        """
        with self._lock:
            try:
                self._refresh()
            except CredentialError as exc:
                return str(exc)
            api = self._probe_api
        assert api is not None
        try:
            response = _get(api, "/version", [], timeout)
            response.read()
            response.release_conn()
        except ApiException as exc:
            if (exc.status or 0) >= 500 or not exc.status:
                return f"HTTP {exc.status} {exc.reason}"
        except Exception as exc:  # any failure to get an answer counts, never a crash
            return describe_error(exc)
        return None

    def interrupt(self, threads: Iterable[int]) -> int:
        """Shut the connections ``threads`` are blocked on (their request fails at once)."""
        return self._connections.shut(threads)

    def invalidate(self) -> None:
        """Forget the client (after a 401): the next request re-reads credentials."""
        with self._lock:
            self._fingerprint = None

    def close(self) -> None:
        """Release connection pools."""
        with self._lock:
            for client in (self._api, self._probe_api):
                if client is not None:
                    client.close()
            self._api = self._probe_api = None

    def list_call(self, resource: str, namespace: str | None) -> Callable[..., Any]:
        """A list (or watch) function for ``resource`` (all namespaces when None).

        It takes the keyword arguments of the generated ``list_*`` functions (``limit``,
        ``_continue``, ``watch``, ``resource_version``, ``allow_watch_bookmarks``,
        ``timeout_seconds``, ``_request_timeout``) and returns the raw response,
        unread, as they do with ``_preload_content=False``; a status other than 2xx
        raises :class:`ApiException`, as theirs does. The request itself is built and
        sent by the official client (``ApiClient.param_serialize`` and ``call_api``:
        its authentication, TLS and kubeconfig handling); only the generated API
        classes are skipped, whose argument validation (pydantic, per request) and
        lazy imports (a megabyte of code, imported under a lock by twenty watch threads
        at start) cost more than the LIST pages of a small cluster.
        """
        api = self.api()
        path = _PATHS[resource] if namespace is None else _NAMESPACED_PATHS[resource].format(
            namespace=namespace)

        def call(**kwargs: Any) -> Any:
            timeout = kwargs.pop("_request_timeout", None)
            kwargs.pop("_preload_content", None)
            query = [(_QUERY[k], v) for k, v in kwargs.items() if v is not None]
            return _get(api, path, query, timeout)

        return call


_PATHS = {
    Resource.SERVICES: "/api/v1/services",
    Resource.ENDPOINTSLICES: "/apis/discovery.k8s.io/v1/endpointslices",
    Resource.SERVICEEXPORTS: f"/apis/{MCS_GROUP}/{MCS_VERSION}/serviceexports",
}
_NAMESPACED_PATHS = {
    Resource.SERVICES: "/api/v1/namespaces/{namespace}/services",
    Resource.ENDPOINTSLICES: "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
    Resource.SERVICEEXPORTS: f"/apis/{MCS_GROUP}/{MCS_VERSION}/namespaces/{{namespace}}"
                             "/serviceexports",
}
_QUERY = {"limit": "limit", "_continue": "continue", "watch": "watch",
          "resource_version": "resourceVersion", "allow_watch_bookmarks": "allowWatchBookmarks",
          "timeout_seconds": "timeoutSeconds", "label_selector": "labelSelector",
          "field_selector": "fieldSelector"}
"""The generated functions' argument names -> the API's query parameters."""


def _get(api: k8s_client.ApiClient, path: str, query: list[tuple[str, Any]],
         timeout: Any) -> Any:
    """GET ``path`` as the generated functions do with ``_preload_content=False``."""
    request = api.param_serialize(method="GET", resource_path=path, query_params=query,
                                  header_params={"Accept": "application/json"},
                                  auth_settings=["BearerToken"])
    response = api.call_api(*request, _request_timeout=timeout)
    if not 200 <= response.status <= 299:
        response.read()
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    return response.response
