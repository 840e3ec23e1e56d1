"""A fake Kubernetes API server, one per ``FakeCluster``, for feddns integration tests.

Why it exists: feddns talks to every member cluster through the real,
unmodified ``kubernetes`` Python client (list + watch of Services,
EndpointSlices and MCS ServiceExports).  To test its behaviour when a cluster
misbehaves (expired resource versions, dropped or silent watch connections,
refused connections, rotated tokens, RBAC denials, 5xx) without a real cluster,
this module serves just enough of the API server's HTTP protocol over real
HTTP on 127.0.0.1, and lets a test inject those faults deterministically.

Design: a ``ThreadingHTTPServer`` runs in a background thread; every
connection gets its own thread.  All state lives behind one
``threading.Condition``, so the Python API (``apply_service``,
``drop_watches``, ``partition`` ...) is thread-safe and may be called from
synchronous fixtures, worker threads or async tests (it never blocks for long;
the only blocking helpers are the ``wait_*`` functions, which have
``*_async`` twins).  Objects are stored as dicts with their JSON encoding
cached, so large LISTs and watch fan-out are cheap.

Protocol fidelity (what the official client relies on):

* One monotonically increasing resourceVersion counter per cluster (string
  ints, like etcd); LIST returns it in ``metadata.resourceVersion``.
* LIST items omit ``kind``/``apiVersion`` for built-in types (as the real
  server does) and keep them for the ServiceExport custom resource.
* WATCH is an HTTP/1.1 chunked ``application/json`` stream, one event per line
  per chunk.  ``resourceVersion`` missing or ``"0"`` → synthetic ADDED events
  for the current objects, then live events; otherwise events after that RV are
  replayed from a bounded per-resource history.  An RV older than the history
  (or older than the last ``expire_history()``) gets a 200 response carrying a
  single ``ERROR`` event with a 410 ``Expired`` Status, then the stream ends.
* ``timeoutSeconds`` ends the stream cleanly (terminating zero chunk).
* ``allowWatchBookmarks=true`` enables BOOKMARK events (on ``send_bookmark()``
  or every ``bookmark_interval`` seconds).
* Bearer-token auth (401 Status), per-resource 403 switch, Status bodies for
  every error, ``/version``, ``/api``, ``/apis`` discovery.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hmac
import json
import os
import secrets
import select
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakekube.builders import (
    MCS_GROUP,
    MCS_VERSION,
    make_namespace,
)

__all__ = ["RESOURCE_TYPES", "FakeCluster", "ResourceType", "status_body", "write_kubeconfig"]

_JSON_SEPARATORS = (",", ":")

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

_IDLE_CHECK_INTERVAL = 0.1  # seconds between "did the client hang up?" checks

_PUBLIC_PATHS = frozenset({"/version", "/healthz", "/livez", "/readyz"})


def status_body(code: int, message: str, reason: str | None = None) -> dict[str, Any]:
    """Return a ``meta/v1 Status`` failure object like the API server sends."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
        "code": code,
    }


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=_JSON_SEPARATORS).encode()


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ResourceType:
    """Static description of one served resource (plural name, group, kind, scope)."""

    name: str
    group: str
    version: str
    kind: str
    namespaced: bool
    builtin: bool = True

    @property
    def api_version(self) -> str:
        """Return the ``apiVersion`` string (``v1`` or ``group/version``)."""
        return self.version if not self.group else f"{self.group}/{self.version}"

    @property
    def list_kind(self) -> str:
        """Return the kind of the LIST response (e.g. ``ServiceList``)."""
        return f"{self.kind}List"


RESOURCE_TYPES: dict[str, ResourceType] = {
    "services": ResourceType("services", "", "v1", "Service", namespaced=True),
    "endpointslices": ResourceType(
        "endpointslices", "discovery.k8s.io", "v1", "EndpointSlice", namespaced=True
    ),
    "serviceexports": ResourceType(
        "serviceexports", MCS_GROUP, MCS_VERSION, "ServiceExport", namespaced=True, builtin=False
    ),
    "namespaces": ResourceType("namespaces", "", "v1", "Namespace", namespaced=False),
}
_BY_PATH = {(rt.group, rt.version, rt.name): rt for rt in RESOURCE_TYPES.values()}


def _resource_type(resource: str) -> ResourceType:
    try:
        return RESOURCE_TYPES[resource]
    except KeyError:
        raise ValueError(
            f"unknown resource {resource!r}; expected one of {sorted(RESOURCE_TYPES)}"
        ) from None


@dataclass
class _Stored:
    obj: dict[str, Any]
    full: bytes  # JSON with kind/apiVersion (GET, watch events)
    item: bytes  # JSON as a LIST item


@dataclass
class _Event:
    rv: int
    ns: str | None
    name: str
    labels: dict[str, str]
    line: bytes  # one watch-event JSON document followed by "\n"


class _Selector:
    """Minimal label/field selector: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k`` (AND-ed)."""

    def __init__(self, label_selector: str = "", field_selector: str = "") -> None:
        self.labels: list[tuple[str, str, str]] = []
        self.fields: list[tuple[str, str, str]] = []
        for part in filter(None, (p.strip() for p in label_selector.split(","))):
            if "(" in part or " in " in part or " notin " in part:
                raise ValueError(f"set-based label selectors are not supported: {part!r}")
            self.labels.append(self._term(part, allow_exists=True))
        for part in filter(None, (p.strip() for p in field_selector.split(","))):
            op, key, value = self._term(part, allow_exists=False)
            if key not in ("metadata.name", "metadata.namespace"):
                raise ValueError(f'field label not supported: "{key}"')
            self.fields.append((op, key, value))

    @staticmethod
    def _term(part: str, *, allow_exists: bool) -> tuple[str, str, str]:
        for op in ("!=", "==", "="):
            if op in part:
                key, value = part.split(op, 1)
                return ("!=" if op == "!=" else "=", key.strip(), value.strip())
        if allow_exists:
            if part.startswith("!"):
                return ("!exists", part[1:].strip(), "")
            return ("exists", part, "")
        raise ValueError(f"invalid selector term {part!r}")

    @property
    def empty(self) -> bool:
        return not self.labels and not self.fields

    def matches(self, ns: str | None, name: str, labels: Mapping[str, str]) -> bool:
        for op, key, value in self.labels:
            if op == "=" and labels.get(key) != value:
                return False
            if op == "!=" and labels.get(key) == value:
                return False
            if op == "exists" and key not in labels:
                return False
            if op == "!exists" and key in labels:
                return False
        for op, key, value in self.fields:
            actual = name if key == "metadata.name" else (ns or "")
            if (actual == value) != (op == "="):
                return False
        return True


@dataclass(eq=False)
class _Watcher:
    resource: str
    ns: str | None
    selector: _Selector
    bookmarks: bool
    epoch: int
    last_rv: int = 0
    pending_bookmark: bool = False
    dropped: bool = False
    expire: bool = False
    next_periodic_bookmark: float = 0.0

    def wants(self, ev: _Event) -> bool:
        if self.ns is not None and ev.ns != self.ns:
            return False
        return self.selector.empty or self.selector.matches(ev.ns, ev.name, ev.labels)


@dataclass
class _Failure:
    remaining: int
    status: int
    resource: str | None
    retry_after: int | None


@dataclass
class _Snapshot:
    resource: str
    rv: int
    items: list[bytes] = field(default_factory=list)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # FakeCluster joins its own connection threads
    allow_reuse_address = True
    request_queue_size = 128
    cluster: FakeCluster

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a (possibly slow) reverse DNS lookup; skip it.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Swallow per-connection errors (clients vanish mid-request all the time here)."""


class FakeCluster:
    """One fake Kubernetes API server with in-memory state and fault switches.

    Create, ``start()`` (or use as a context manager), point a kubeconfig at
    ``url`` (see ``write_kubeconfig``), mutate state with ``apply_*``/``delete_*``
    and inject faults with ``drop_watches``/``partition``/``refuse``/``fail_next``/
    ``expire_history``/``forbid``/``rotate_token``.  All methods are thread-safe.
    """

    def __init__(
        self,
        name: str = "cluster",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        history_limit: int = 1000,
        bookmark_interval: float | None = None,
        default_watch_timeout: float | None = None,
        first_resource_version: int = 1,
        namespaces: Iterable[str] = ("default", "kube-system", "kube-public"),
        server_version: str = "v1.31.0",
    ) -> None:
        if history_limit < 1:
            raise ValueError("history_limit must be >= 1")
        self.name = name
        self.host = host
        self._port = port
        self.token = token or secrets.token_urlsafe(24)
        self.token_file: Path | None = Path(token_file) if token_file is not None else None
        self.kubeconfig: Path | None = None  # last kubeconfig written that includes this cluster
        self.history_limit = history_limit
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.server_version = server_version

        self._cond = threading.Condition(threading.RLock())
        self._life = threading.Lock()
        self._rv = first_resource_version - 1
        self._objects: dict[str, dict[tuple[str | None, str], _Stored]] = {
            r: {} for r in RESOURCE_TYPES
        }
        self._history: dict[str, deque[_Event]] = {r: deque() for r in RESOURCE_TYPES}
        self._evicted_rv: dict[str, int] = dict.fromkeys(RESOURCE_TYPES, 0)
        self._expired_rv = 0
        self._snapshots: dict[str, _Snapshot] = {}
        self._watchers: set[_Watcher] = set()
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._previous_token: str | None = None
        self._previous_token_deadline = 0.0
        self._forbidden: set[str] = set()
        self._failures: deque[_Failure] = deque()
        self._partitioned = False
        self._refused = False
        self._stopping = False
        self._epoch = 0  # bumped by refuse()/stop(): connections from older epochs die
        self._server: _HTTPServer | None = None
        self._server_thread: threading.Thread | None = None

        self.list_requests: Counter[str] = Counter()
        self.watch_requests: Counter[str] = Counter()
        self.get_requests: Counter[str] = Counter()
        self.requests_total = 0
        self.auth_failures = 0
        self.request_log: deque[tuple[str, str]] = deque(maxlen=500)

        for ns in namespaces:
            self.apply_namespace(ns)
        if self.token_file is not None:
            _atomic_write(self.token_file, self.token)

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """TCP port (the ephemeral one chosen at first ``start()`` when created with 0)."""
        if self._port == 0:
            raise RuntimeError(f"fake cluster {self.name!r} has not been started yet")
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the API server, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while started and not stopped (also while ``refuse()``-ing)."""
        return not self._stopping and (self._server is not None or self._refused)

    def start(self) -> FakeCluster:
        """Bind (to the same port as before, if restarted) and start serving."""
        with self._life:
            if self._server is not None:
                return self
            with self._cond:
                self._stopping = False
                self._refused = False
            self._listen()
        return self

    def stop(self) -> None:
        """Stop serving, unblock every hung/partitioned request and join all server threads."""
        with self._life:
            with self._cond:
                self._stopping = True
                self._refused = False
                self._epoch += 1
                self._cond.notify_all()
            self._unlisten()
            self._abort_connections(join_timeout=5.0)

    def __enter__(self) -> FakeCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self) -> None:
        srv = _HTTPServer((self.host, self._port), _Handler)
        srv.cluster = self
        self._port = srv.server_address[1]
        thread = threading.Thread(
            target=srv.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"fakekube-{self.name}-accept",
            daemon=True,
        )
        thread.start()
        self._server, self._server_thread = srv, thread

    def _unlisten(self) -> None:
        srv, thread = self._server, self._server_thread
        self._server = self._server_thread = None
        if srv is not None:
            srv.shutdown()
            srv.server_close()
        if thread is not None:
            thread.join(timeout=5.0)

    def _abort_connections(self, join_timeout: float) -> None:
        with self._cond:
            conns = list(self._conns.items())
        for sock, _thread in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + join_timeout
        for _sock, thread in conns:
            if thread is not threading.current_thread():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def server_threads(self) -> list[threading.Thread]:
        """Return the live connection-handler threads (for leak checks)."""
        with self._cond:
            return [t for t in self._conns.values() if t.is_alive()]

    # ------------------------------------------------------------------ kubeconfig

    def write_kubeconfig(
        self,
        path: str | os.PathLike[str],
        *,
        context_name: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
    ) -> Path:
        """Write a single-context kubeconfig for this cluster; see module ``write_kubeconfig``."""
        return write_kubeconfig(
            path,
            [self],
            context_names={self.name: context_name} if context_name else None,
            token_files={self.name: token_file} if token_file is not None else None,
        )

    def _adopt_token_file(self, token_file: str | os.PathLike[str]) -> Path:
        path = Path(token_file)
        with self._cond:
            self.token_file = path
            _atomic_write(path, self.token)
        return path

    # ------------------------------------------------------------------ objects

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    @property
    def resource_version(self) -> int:
        """Current (latest) resourceVersion of this cluster, as an int."""
        with self._cond:
            return self._rv

    def _record(self, resource: str, ev_type: str, stored: _Stored, rv: int) -> None:
        meta = stored.obj["metadata"]
        line = b'{"type":"' + ev_type.encode() + b'","object":' + stored.full + b"}\n"
        hist = self._history[resource]
        hist.append(
            _Event(rv, meta.get("namespace"), meta["name"], dict(meta.get("labels") or {}), line)
        )
        while len(hist) > self.history_limit:
            self._evicted_rv[resource] = hist.popleft().rv
        self._cond.notify_all()

    @staticmethod
    def _encode(rt: ResourceType, obj: dict[str, Any]) -> _Stored:
        full = _dumps(obj)
        if rt.builtin:
            item = _dumps({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})
        else:
            item = full
        return _Stored(obj, full, item)

    def apply(self, resource: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace an object of ``resource``; return the stored copy.

        Sets ``kind``/``apiVersion``, ``metadata.resourceVersion`` (new cluster RV),
        ``uid`` and ``creationTimestamp`` (kept across replaces), defaults the
        namespace to ``default`` (auto-creating the Namespace) and emits an
        ADDED or MODIFIED watch event.
        """
        rt = _resource_type(resource)
        src = copy.deepcopy(dict(obj))
        meta = dict(src.pop("metadata", None) or {})
        src.pop("kind", None)
        src.pop("apiVersion", None)
        name = meta.get("name")
        if not name:
            raise ValueError("object has no metadata.name")
        if rt.namespaced:
            meta["namespace"] = meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        new = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta, **src}
        with self._cond:
            ns = meta.get("namespace")
            if ns is not None and (None, ns) not in self._objects["namespaces"]:
                self._apply_locked(RESOURCE_TYPES["namespaces"], make_namespace(ns))
            return copy.deepcopy(self._apply_locked(rt, new))

    def _apply_locked(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (meta.get("namespace"), meta["name"])
        existing = self._objects[rt.name].get(key)
        rv = self._next_rv()
        if existing is not None:
            meta["uid"] = existing.obj["metadata"]["uid"]
            meta["creationTimestamp"] = existing.obj["metadata"]["creationTimestamp"]
        else:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now_rfc3339())
        meta["resourceVersion"] = str(rv)
        stored = self._encode(rt, obj)
        self._objects[rt.name][key] = stored
        self._record(rt.name, "MODIFIED" if existing is not None else "ADDED", stored, rv)
        return obj

    def delete(
        self, resource: str, ns: str | None, name: str, *, missing_ok: bool = False
    ) -> dict[str, Any] | None:
        """Delete an object and emit DELETED (object carries the deletion RV).

        Raises ``KeyError`` if absent unless ``missing_ok``.
        """
        rt = _resource_type(resource)
        key = (ns if rt.namespaced else None, name)
        with self._cond:
            stored = self._objects[rt.name].pop(key, None)
            if stored is None:
                if missing_ok:
                    return None
                raise KeyError(f"{resource} {ns}/{name} not found in cluster {self.name!r}")
            rv = self._next_rv()
            obj = copy.deepcopy(stored.obj)
            obj["metadata"]["resourceVersion"] = str(rv)
            self._record(rt.name, "DELETED", self._encode(rt, obj), rv)
            return obj

    def get(self, resource: str, ns: str | None, name: str) -> dict[str, Any] | None:
        """Return a copy of the stored object, or None."""
        rt = _resource_type(resource)
        with self._cond:
            stored = self._objects[rt.name].get((ns if rt.namespaced else None, name))
            return copy.deepcopy(stored.obj) if stored is not None else None

    def objects(self, resource: str, ns: str | None = None) -> list[dict[str, Any]]:
        """Return copies of all stored objects of ``resource`` (optionally one namespace)."""
        rt = _resource_type(resource)
        with self._cond:
            objs = self._objects[rt.name]
            keys = sorted(objs, key=lambda k: (k[0] or "", k[1]))
            return [copy.deepcopy(objs[k].obj) for k in keys if ns is None or k[0] == ns]

    def apply_service(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace a v1 Service (see ``apply``)."""
        return self.apply("services", obj)

    def delete_service(
        self, ns: str, name: str, *, missing_ok: bool = False
    ) -> dict[str, Any] | None:
        """Delete a v1 Service (see ``delete``)."""
        return self.delete("services", ns, name, missing_ok=missing_ok)

    def apply_endpointslice(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace a discovery.k8s.io/v1 EndpointSlice (see ``apply``)."""
        return self.apply("endpointslices", obj)

    def delete_endpointslice(
        self, ns: str, name: str, *, missing_ok: bool = False
    ) -> dict[str, Any] | None:
        """Delete an EndpointSlice (see ``delete``)."""
        return self.delete("endpointslices", ns, name, missing_ok=missing_ok)

    def apply_serviceexport(
        self, obj_or_ns: Mapping[str, Any] | str, name: str | None = None
    ) -> dict[str, Any]:
        """Create or replace a ServiceExport: pass an object dict, or ``(ns, name)``."""
        if isinstance(obj_or_ns, str):
            if name is None:
                raise TypeError("apply_serviceexport(ns, name) needs a name")
            obj: Mapping[str, Any] = {"metadata": {"namespace": obj_or_ns, "name": name}}
        else:
            obj = obj_or_ns
        return self.apply("serviceexports", obj)

    def delete_serviceexport(
        self, ns: str, name: str, *, missing_ok: bool = False
    ) -> dict[str, Any] | None:
        """Delete a ServiceExport (see ``delete``)."""
        return self.delete("serviceexports", ns, name, missing_ok=missing_ok)

    def apply_namespace(self, obj_or_name: Mapping[str, Any] | str) -> dict[str, Any]:
        """Create or replace a Namespace (object dict or bare name)."""
        obj = make_namespace(obj_or_name) if isinstance(obj_or_name, str) else obj_or_name
        return self.apply("namespaces", obj)

    # ------------------------------------------------------------------ faults

    def drop_watches(self, resource: str | None = None) -> int:
        """Abruptly cut every open watch (of ``resource``, or all) mid-chunk; return how many."""
        with self._cond:
            hit = [w for w in self._watchers if resource is None or w.resource == resource]
            for w in hit:
                w.dropped = True
            self._cond.notify_all()
            return len(hit)

    def partition(self) -> None:
        """Go silent: open connections get nothing more, new requests are read but not answered."""
        with self._cond:
            self._partitioned = True
            self._cond.notify_all()

    def heal(self) -> None:
        """End a ``partition()``: pending requests are answered and watches resume."""
        with self._cond:
            self._partitioned = False
            self._cond.notify_all()

    @property
    def partitioned(self) -> bool:
        """Whether ``partition()`` is in effect."""
        return self._partitioned

    def refuse(self) -> None:
        """Close the listening socket and every open connection (clients get ECONNREFUSED)."""
        with self._life:
            if self._server is None:
                return
            with self._cond:
                self._refused = True
                self._epoch += 1
                self._cond.notify_all()
            self._unlisten()
            self._abort_connections(join_timeout=5.0)

    def accept(self) -> None:
        """Listen again, on the same port, after ``refuse()``."""
        with self._life:
            if self._stopping or self._server is not None:
                return
            with self._cond:
                self._refused = False
            self._listen()

    @property
    def refusing(self) -> bool:
        """Whether ``refuse()`` is in effect."""
        return self._refused

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        resource: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next ``n`` requests (for ``resource`` only, if given) with ``status``.

        The body is a Status object; ``retry_after`` adds a ``Retry-After`` header.
        """
        if resource is not None:
            _resource_type(resource)
        with self._cond:
            self._failures.append(_Failure(n, status, resource, retry_after))

    def expire_history(self, *, terminate_watches: bool = False) -> int:
        """Make every resourceVersion issued so far "too old" for new watches and continues.

        Consumes one resourceVersion (like an etcd compaction), so a fresh LIST
        returns an RV that is valid again; returns that RV.  Open watches keep
        streaming unless ``terminate_watches``, in which case each gets an ERROR
        event with a 410 Status and its stream ends.
        """
        with self._cond:
            self._expired_rv = self._next_rv()
            if terminate_watches:
                for w in self._watchers:
                    w.expire = True
            self._snapshots.clear()
            self._cond.notify_all()
            return self._expired_rv

    def forbid(self, resource: str) -> None:
        """Make LIST/WATCH/GET of ``resource`` answer 403 Forbidden."""
        _resource_type(resource)
        with self._cond:
            self._forbidden.add(resource)

    def allow(self, resource: str) -> None:
        """Undo ``forbid(resource)``."""
        with self._cond:
            self._forbidden.discard(resource)

    def rotate_token(self, new_token: str | None = None, *, grace_seconds: float = 0.0) -> str:
        """Change the accepted bearer token and return it.

        Rewrites ``token_file`` atomically if the cluster has one.  With
        ``grace_seconds`` > 0 the previous token stays valid that long.
        """
        with self._cond:
            old = self.token
            self.token = new_token or secrets.token_urlsafe(24)
            self._previous_token = old if grace_seconds > 0 else None
            self._previous_token_deadline = time.monotonic() + grace_seconds
            if self.token_file is not None:
                _atomic_write(self.token_file, self.token)
            return self.token

    def send_bookmark(self, resource: str | None = None) -> int:
        """Queue a BOOKMARK for each open watch that asked for bookmarks; return how many."""
        with self._cond:
            hit = [
                w
                for w in self._watchers
                if w.bookmarks and (resource is None or w.resource == resource)
            ]
            for w in hit:
                w.pending_bookmark = True
            self._cond.notify_all()
            return len(hit)

    # ------------------------------------------------------------------ observation

    def open_watches(self, resource: str | None = None) -> int:
        """Return the number of open watch streams (of ``resource``, or all)."""
        with self._cond:
            return sum(1 for w in self._watchers if resource is None or w.resource == resource)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Block until ``predicate()`` (re-checked on state changes) holds, else TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met within {timeout}s on {self.name!r}")
                self._cond.wait(timeout=min(remaining, 0.05))

    def wait_for_watchers(
        self, resource: str | None, n: int = 1, timeout: float = 5.0, *, exact: bool = False
    ) -> None:
        """Wait until at least ``n`` (exactly ``n`` if ``exact``) watches of ``resource`` are open.

        A watch counts as open once its starting point is fixed, so mutations
        made after this returns are guaranteed to reach it.
        """

        def ok() -> bool:
            count = self.open_watches(resource)
            return count == n if exact else count >= n

        try:
            self.wait_until(ok, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{self.name}: wanted {'exactly' if exact else 'at least'} {n} open "
                f"{resource or 'any'} watches, have {self.open_watches(resource)}"
            ) from None

    async def wait_for_watchers_async(
        self,
        resource: str | None,
        n: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - same signature as wait_for_watchers
        *,
        exact: bool = False,
    ) -> None:
        """``wait_for_watchers`` for async tests (polls without blocking the event loop)."""
        deadline = time.monotonic() + timeout
        while True:
            count = self.open_watches(resource)
            if count == n if exact else count >= n:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.name}: wanted {n} open {resource or 'any'} watches, have {count}"
                )
            await asyncio.sleep(0.01)

    def stats(self) -> dict[str, Any]:
        """Snapshot of the request counters and open watches, for assertions and debugging."""
        with self._cond:
            return {
                "requests_total": self.requests_total,
                "auth_failures": self.auth_failures,
                "list_requests": dict(self.list_requests),
                "watch_requests": dict(self.watch_requests),
                "get_requests": dict(self.get_requests),
                "open_watches": dict(Counter(w.resource for w in self._watchers)),
                "resource_version": self._rv,
            }

    # ------------------------------------------------------------------ server internals

    def _conn_opened(self, sock: socket.socket) -> int | None:
        with self._cond:
            if self._stopping or self._refused:
                return None
            self._conns[sock] = threading.current_thread()
            return self._epoch

    def _conn_closed(self, sock: socket.socket) -> None:
        with self._cond:
            self._conns.pop(sock, None)
            self._cond.notify_all()

    def _wait_while_partitioned(self, epoch: int, client_gone: Callable[[], bool]) -> bool:
        with self._cond:
            while self._partitioned and not self._stopping and epoch == self._epoch:
                if client_gone():
                    return False
                self._cond.wait(timeout=_IDLE_CHECK_INTERVAL)
            return not self._stopping and epoch == self._epoch

    def _take_failure(self, resource: str | None) -> _Failure | None:
        with self._cond:
            for f in self._failures:
                if f.resource is None or f.resource == resource:
                    f.remaining -= 1
                    if f.remaining <= 0:
                        self._failures.remove(f)
                    return f
            return None

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        presented = header[len("Bearer ") :].strip().encode()
        with self._cond:
            if hmac.compare_digest(presented, self.token.encode()):
                return True
            prev = self._previous_token
            return (
                prev is not None
                and time.monotonic() < self._previous_token_deadline
                and hmac.compare_digest(presented, prev.encode())
            )

    def _oldest_valid_rv(self, resource: str) -> int:
        return max(self._evicted_rv[resource], self._expired_rv)

    def _too_old_line(self, rv: int, oldest: int) -> bytes:
        status = status_body(410, f"too old resource version: {rv} ({oldest})", "Expired")
        return b'{"type":"ERROR","object":' + _dumps(status) + b"}\n"

    def _list(
        self, rt: ResourceType, ns: str | None, sel: _Selector, limit: int, cont: str
    ) -> tuple[int, bytes]:
        """Build a LIST response body; returns (http_status, body)."""
        with self._cond:
            if cont:
                try:
                    token = json.loads(base64.urlsafe_b64decode(cont.encode()))
                    snap_id, offset, rv = str(token["id"]), int(token["off"]), int(token["rv"])
                except (ValueError, KeyError, TypeError):
                    return 400, _dumps(status_body(400, "continue key is not valid"))
                snap = self._snapshots.get(snap_id)
                if snap is None or rv < self._oldest_valid_rv(rt.name) or snap.resource != rt.name:
                    msg = (
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter."
                    )
                    return 410, _dumps(status_body(410, msg, "Expired"))
                items, list_rv = snap.items[offset:], snap.rv
            else:
                list_rv = self._rv
                objs = self._objects[rt.name]
                keys = sorted(objs, key=lambda k: (k[0] or "", k[1]))
                items = []
                for key in keys:
                    if ns is not None and key[0] != ns:
                        continue
                    stored = objs[key]
                    if not sel.empty:
                        labels = stored.obj["metadata"].get("labels") or {}
                        if not sel.matches(key[0], key[1], labels):
                            continue
                    items.append(stored.item)
                snap_id, offset = secrets.token_hex(8), 0
            meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
            if limit > 0 and len(items) > limit:
                if not cont:
                    self._snapshots[snap_id] = _Snapshot(rt.name, list_rv, items)
                    while len(self._snapshots) > 64:
                        del self._snapshots[next(iter(self._snapshots))]
                next_off = offset + limit
                token_json = _dumps({"id": snap_id, "off": next_off, "rv": list_rv})
                meta["continue"] = base64.urlsafe_b64encode(token_json).decode()
                meta["remainingItemCount"] = len(items) - limit
                items = items[:limit]
        head = _dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta})
        return 200, head[:-1] + b',"items":[' + b",".join(items) + b"]}"

    def _open_watch(self, w: _Watcher, rv_param: str) -> tuple[list[bytes], bytes | None]:
        """Register a watcher; return (initial event lines, error line if RV too old)."""
        with self._cond:
            if rv_param in ("", "0"):
                initial = []
                objs = self._objects[w.resource]
                for key in sorted(objs, key=lambda k: (k[0] or "", k[1])):
                    stored = objs[key]
                    meta = stored.obj["metadata"]
                    ev = _Event(0, key[0], key[1], meta.get("labels") or {}, b"")
                    if w.wants(ev):
                        initial.append(b'{"type":"ADDED","object":' + stored.full + b"}\n")
                w.last_rv = self._rv
            else:
                rv = int(rv_param)
                oldest = self._oldest_valid_rv(w.resource)
                if rv < oldest:
                    return [], self._too_old_line(rv, oldest)
                initial, w.last_rv = [], rv
            if self.bookmark_interval:
                w.next_periodic_bookmark = time.monotonic() + self.bookmark_interval
            self._watchers.add(w)
            self._cond.notify_all()
            return initial, None

    def _close_watch(self, w: _Watcher) -> None:
        with self._cond:
            self._watchers.discard(w)
            self._cond.notify_all()

    def _next_watch_batch(
        self, w: _Watcher, deadline: float | None, client_gone: Callable[[], bool]
    ) -> tuple[str, list[bytes]]:
        """Block until the watcher has something to do.

        Returns (action, lines) with action in send/timeout/expired/drop/kill.
        Wakes at least every ``_IDLE_CHECK_INTERVAL`` to notice clients that
        hung up, so ``open_watches()`` stays accurate.
        """
        with self._cond:
            while True:
                if self._stopping or w.epoch != self._epoch or client_gone():
                    return "kill", []
                if w.dropped:
                    return "drop", []
                if self._partitioned:
                    self._cond.wait(timeout=_IDLE_CHECK_INTERVAL)
                    continue
                oldest = self._oldest_valid_rv(w.resource)
                if w.expire or w.last_rv < self._evicted_rv[w.resource]:
                    return "expired", [self._too_old_line(w.last_rv, oldest)]
                lines: list[bytes] = []
                for ev in reversed(self._history[w.resource]):
                    if ev.rv <= w.last_rv:
                        break
                    if w.wants(ev):
                        lines.append(ev.line)
                lines.reverse()
                w.last_rv = max(w.last_rv, self._rv)  # an RV from the future waits for it
                now = time.monotonic()
                periodic = (
                    w.bookmarks
                    and self.bookmark_interval is not None
                    and now >= w.next_periodic_bookmark
                )
                if w.bookmarks and (w.pending_bookmark or periodic):
                    rt = RESOURCE_TYPES[w.resource]
                    bookmark = {
                        "kind": rt.kind,
                        "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": str(self._rv)},
                    }
                    lines.append(b'{"type":"BOOKMARK","object":' + _dumps(bookmark) + b"}\n")
                    if self.bookmark_interval:
                        w.next_periodic_bookmark = now + self.bookmark_interval
                w.pending_bookmark = False
                if lines:
                    return "send", lines
                if deadline is not None and now >= deadline:
                    return "timeout", []
                waits = [_IDLE_CHECK_INTERVAL]
                if deadline is not None:
                    waits.append(deadline - now)
                if w.bookmarks and self.bookmark_interval:
                    waits.append(w.next_periodic_bookmark - now)
                self._cond.wait(timeout=max(0.001, min(waits)))


def _group_version(rt: ResourceType) -> dict[str, str]:
    return {"groupVersion": rt.api_version, "version": rt.version}


def _chunk(line: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(line), line)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakekube/1.0"
    sys_version = ""
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Like the real (Go) API server: without TCP_NODELAY, Nagle plus delayed ACKs
        # add about 40 ms to every watch event.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.cluster = self.server.cluster
        self.epoch = self.cluster._conn_opened(self.connection)

    def handle(self) -> None:
        if self.epoch is None:
            return
        try:
            super().handle()
        except (OSError, ValueError):
            self.close_connection = True

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            if self.epoch is not None:
                self.cluster._conn_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    # -------------------------------------------------------------- responses

    def _send(self, code: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_status(
        self, code: int, message: str, reason: str | None = None, **headers: str
    ) -> None:
        self._send(code, _dumps(status_body(code, message, reason)), headers)

    def _reject_method(self) -> None:
        self.close_connection = True
        self._send_status(405, f"the fake API server does not implement {self.command}")

    do_POST = do_PUT = do_PATCH = do_DELETE = _reject_method

    # -------------------------------------------------------------- routing

    def do_GET(self) -> None:
        c = self.cluster
        assert self.epoch is not None
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        route = self._route(path)
        rt = route[0] if route else None
        is_watch = query.get("watch", "").lower() in ("true", "1")
        with c._cond:
            c.requests_total += 1
            c.request_log.append(("GET", self.path))
            if route is not None and rt is not None:
                name = route[2]
                if name:
                    c.get_requests[rt.name] += 1
                elif is_watch:
                    c.watch_requests[rt.name] += 1
                else:
                    c.list_requests[rt.name] += 1
            c._cond.notify_all()
        # Requests are counted on arrival, so tests can see ones a partition swallows.
        if not c._wait_while_partitioned(self.epoch, self._client_gone):
            self.close_connection = True
            return
        failure = c._take_failure(rt.name if rt else None)
        if failure is not None:
            extra = {"Retry-After": str(failure.retry_after)} if failure.retry_after else {}
            self._send_status(failure.status, f"injected failure {failure.status}", **extra)
            return
        if path not in _PUBLIC_PATHS and not c._authorized(self.headers.get("Authorization")):
            with c._cond:
                c.auth_failures += 1
            self._send_status(401, "Unauthorized", "Unauthorized")
            return
        if path in _PUBLIC_PATHS:
            if path == "/version":
                self._send(200, _dumps(self._version_doc()))
            else:
                self._send(200, b"ok")
            return
        discovery = self._discovery(path)
        if discovery is not None:
            self._send(200, _dumps(discovery))
            return
        if route is None or rt is None:
            self._send_status(404, "the server could not find the requested resource", "NotFound")
            return
        _, ns, name = route
        if rt.name in c._forbidden:
            verb = "get" if name else "watch" if is_watch else "list"
            scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
            self._send_status(
                403,
                f'{rt.name}.{rt.group} is forbidden: User "system:serviceaccount:feddns:feddns" '
                f'cannot {verb} resource "{rt.name}" in API group "{rt.group}" {scope}',
                "Forbidden",
            )
            return
        if name:
            obj = c.get(rt.name, ns, name)
            if obj is None:
                self._send_status(404, f'{rt.name} "{name}" not found', "NotFound")
            else:
                self._send(200, _dumps(obj))
            return
        try:
            sel = _Selector(query.get("labelSelector", ""), query.get("fieldSelector", ""))
        except ValueError as exc:
            self._send_status(400, str(exc), "BadRequest")
            return
        if is_watch:
            self._serve_watch(rt, ns, sel, query)
            return
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            self._send_status(400, "limit must be an integer", "BadRequest")
            return
        code, body = c._list(rt, ns, sel, limit, query.get("continue", ""))
        self._send(code, body)

    @staticmethod
    def _route(path: str) -> tuple[ResourceType, str | None, str | None] | None:
        """Map a path to (resource type, namespace, object name) or None."""
        segs = [s for s in path.split("/") if s]
        if len(segs) >= 2 and segs[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", segs[2:]
        elif len(segs) >= 3 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            return None
        ns: str | None = None
        if len(rest) in (3, 4) and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        if len(rest) not in (1, 2):
            return None
        rt = _BY_PATH.get((group, version, rest[0]))
        if rt is None or (ns is not None and not rt.namespaced):
            return None
        name = rest[1] if len(rest) == 2 else None
        if name is not None and rt.namespaced and ns is None:
            return None
        return rt, ns, name

    def _version_doc(self) -> dict[str, Any]:
        ver = self.cluster.server_version.lstrip("v").split(".")
        return {
            "major": ver[0],
            "minor": ver[1] if len(ver) > 1 else "0",
            "gitVersion": self.cluster.server_version,
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2024-01-01T00:00:00Z",
            "goVersion": "go1.22.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _discovery(self, path: str) -> dict[str, Any] | None:
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {
                        "clientCIDR": "0.0.0.0/0",
                        "serverAddress": f"{self.cluster.host}:{self.cluster.port}",
                    }
                ],
            }
        groups: dict[str, list[ResourceType]] = {}
        for rt in RESOURCE_TYPES.values():
            if rt.group:
                groups.setdefault(rt.group, []).append(rt)
        if path == "/apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": group,
                        "versions": [_group_version(rts[0])],
                        "preferredVersion": _group_version(rts[0]),
                    }
                    for group, rts in sorted(groups.items())
                ],
            }
        gv = path.removeprefix("/api/").removeprefix("/apis/")
        rts = [rt for rt in RESOURCE_TYPES.values() if rt.api_version == gv]
        if not rts or path not in (f"/api/{gv}", f"/apis/{gv}"):
            return None
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": [
                {
                    "name": rt.name,
                    "singularName": rt.kind.lower(),
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "list", "watch"],
                }
                for rt in rts
            ],
        }

    # -------------------------------------------------------------- watch

    def _serve_watch(
        self, rt: ResourceType, ns: str | None, sel: _Selector, query: Mapping[str, str]
    ) -> None:
        c = self.cluster
        assert self.epoch is not None
        rv_param = query.get("resourceVersion", "")
        timeout_param = query.get("timeoutSeconds", "")
        if rv_param not in ("", "0") and not rv_param.isdigit():
            self._send_status(400, f"invalid resourceVersion {rv_param!r}", "BadRequest")
            return
        try:
            timeout = float(timeout_param) if timeout_param else c.default_watch_timeout
        except ValueError:
            self._send_status(400, "timeoutSeconds must be a number", "BadRequest")
            return
        w = _Watcher(
            resource=rt.name,
            ns=ns,
            selector=sel,
            bookmarks=query.get("allowWatchBookmarks", "").lower() in ("true", "1"),
            epoch=self.epoch,
        )
        initial, error_line = c._open_watch(w, rv_param)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-cache, private")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if error_line is not None:
                self.wfile.write(_chunk(error_line) + b"0\r\n\r\n")
                return
            if initial:
                self.wfile.write(b"".join(_chunk(line) for line in initial))
            deadline = time.monotonic() + timeout if timeout else None
            while True:
                action, lines = c._next_watch_batch(w, deadline, self._client_gone)
                if action == "send":
                    self.wfile.write(b"".join(_chunk(line) for line in lines))
                elif action in ("timeout", "expired"):
                    self.wfile.write(b"".join(_chunk(line) for line in lines) + b"0\r\n\r\n")
                    return
                elif action == "drop":
                    # Announce a 4 KiB chunk, send a few bytes of it, then hang up.
                    self.wfile.write(b'1000\r\n{"type":"MODIF')
                    self._hang_up()
                    return
                else:  # kill
                    self._hang_up()
                    return
        except OSError:
            self.close_connection = True
        finally:
            c._close_watch(w)

    def _client_gone(self) -> bool:
        """Return True if the peer closed its side (EOF pending on the socket)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _yaml_str(value: object) -> str:
    # A JSON string literal is a valid YAML double-quoted scalar.
    return json.dumps(str(value))


def write_kubeconfig(
    path: str | os.PathLike[str],
    clusters: Iterable[FakeCluster],
    *,
    current_context: str | None = None,
    context_names: Mapping[str, str | None] | None = None,
    token_files: Mapping[str, str | os.PathLike[str] | None] | None = None,
    namespace: str = "default",
) -> Path:
    """Write a kubeconfig with one cluster/user/context per fake cluster (atomically).

    Context, cluster and user entries are named after ``FakeCluster.name``
    (dotted names such as ``west.prod`` are fine) unless ``context_names`` maps
    a cluster name to another context name.  The user carries an inline
    ``token``, or a ``tokenFile`` when the cluster was created with
    ``token_file`` or one is given in ``token_files`` (the cluster then adopts
    that file and ``rotate_token()`` rewrites it).  ``current-context`` defaults
    to the first cluster.  Standard library only: values are emitted as JSON
    string literals, which YAML parses as double-quoted scalars.
    """
    cluster_list = list(clusters)
    if not cluster_list:
        raise ValueError("write_kubeconfig needs at least one cluster")
    names = [c.name for c in cluster_list]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate cluster names: {names}")
    context_names = context_names or {}
    token_files = token_files or {}
    lines = ["apiVersion: v1", "kind: Config", "preferences: {}", "clusters:"]
    for c in cluster_list:
        lines += [f"- name: {_yaml_str(c.name)}", "  cluster:", f"    server: {_yaml_str(c.url)}"]
    lines.append("users:")
    for c in cluster_list:
        tf = token_files.get(c.name)
        token_path = c._adopt_token_file(tf) if tf is not None else c.token_file
        lines += [f"- name: {_yaml_str(c.name)}", "  user:"]
        if token_path is not None:
            lines.append(f"    tokenFile: {_yaml_str(Path(token_path).resolve())}")
        else:
            lines.append(f"    token: {_yaml_str(c.token)}")
    lines.append("contexts:")
    contexts = []
    for c in cluster_list:
        ctx = context_names.get(c.name) or c.name
        contexts.append(ctx)
        lines += [
            f"- name: {_yaml_str(ctx)}",
            "  context:",
            f"    cluster: {_yaml_str(c.name)}",
            f"    user: {_yaml_str(c.name)}",
            f"    namespace: {_yaml_str(namespace)}",
        ]
    lines.append(f"current-context: {_yaml_str(current_context or contexts[0])}")
    out = Path(path)
    _atomic_write(out, "\n".join(lines) + "\n")
    for c in cluster_list:
        c.kubeconfig = out
    return out
