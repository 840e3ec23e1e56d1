"""Fake Kubernetes API servers in a child process, driven over stdin/stdout (JSON lines).

Why it exists: the Kubernetes benchmarks must not let the fake API server's
threads (tests/fakekube, one thread per connection) compete with feddns or
with the measuring client for one GIL. ``FakeApi`` starts this module as a
child process (``python -m bench.k8s_fakeapi``) that owns every
``FakeCluster``; the parent sends one JSON command per line and reads one
JSON reply per line. Times in replies are ``time.monotonic()`` seconds, which
on Linux is the system-wide CLOCK_MONOTONIC, comparable across processes.

Commands (``op`` plus arguments; every reply has ``ok``):

* ``start {names, directory, nodelay}``: start one FakeCluster per name, write
  one kubeconfig (a context per cluster); reply ``kubeconfig``. ``nodelay``
  sets TCP_NODELAY on the fake's sockets, as the real (Go) API server does;
  tests/fakekube itself leaves Nagle on, which delays watch events by up to
  the client's delayed-ACK time (about 40 ms);
* ``populate {cluster, services, endpoints, per_slice, headless, prefix,
  first_ip}``: create services ``<prefix>-NNNN`` in namespace ``bench``, each
  with ``endpoints`` endpoints in slices of at most ``per_slice``;
* ``set_slice {cluster, service, slice, endpoints: [[ip, ready], ...],
  headless?}``: build the slice, then stamp ``t0`` and call ``apply()``;
* ``service {cluster, service, ip, cluster_ip}`` / ``delete_service
  {cluster, service}``: one marker service with one ready endpoint, or its
  removal (service and slice);
* ``silent_change {cluster, create, delete, ip, cluster_ip}`` then a forced
  re-list: partition, apply the changes (no open watch sees them), expire the
  history, cut every watch, heal; reply ``t0`` (just before the cut);
* ``stats {cluster}``; ``stop``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import REPO

NAMESPACE = "bench"
ZONES = ("zone-a", "zone-b", "zone-c")


def endpoint_ip(base: int, index: int) -> str:
    """The ``index``-th address of a block starting at 10.<base>.0.0 (65,536 per block)."""
    return f"10.{base}.{(index >> 8) & 255}.{index & 255}"


def _endpoint(ip: str, ready: bool, pod: str, index: int) -> dict[str, Any]:
    """One endpoint as the EndpointSlice controller writes it (one address, a pod)."""
    return {
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": ready, "terminating": False},
        "nodeName": f"node-{index % 50:02d}",
        "zone": ZONES[index % len(ZONES)],
        "targetRef": {"kind": "Pod", "name": pod, "namespace": NAMESPACE},
    }


def _set_nodelay() -> None:
    """Make the fake API server set TCP_NODELAY on its connections, as Go's net/http does.

    tests/fakekube writes each watch event with one small ``send``; without
    TCP_NODELAY, Nagle's algorithm holds an event back while the previous
    segment is unacknowledged, and the client's delayed ACK can take 40 ms.
    The real kube-apiserver (Go) sets TCP_NODELAY on every TCP connection.
    """
    from tests.fakekube import server as fake_server

    handler = fake_server._Handler
    original = handler.setup

    def setup(self: Any) -> None:
        with contextlib.suppress(OSError):
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        original(self)

    handler.setup = setup  # type: ignore[method-assign]


class _Child:
    """The child side: owns the fake clusters and executes commands."""

    def __init__(self) -> None:
        from tests.fakekube import FakeFederation

        self.federation_cls = FakeFederation
        self.fed: Any = None

    def run(self) -> None:
        for line in sys.stdin:
            if not line.strip():
                continue
            msg = json.loads(line)
            op = msg.pop("op")
            try:
                reply = getattr(self, f"op_{op}")(**msg)
                reply["ok"] = True
            except Exception as exc:  # report to the parent, keep serving
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
            if op == "stop":
                return

    def op_start(self, names: list[str], directory: str, nodelay: bool) -> dict[str, Any]:
        if nodelay:
            _set_nodelay()
        self.fed = self.federation_cls(names, directory=directory, history_limit=10_000)
        self.fed.start()
        return {"kubeconfig": str(self.fed.kubeconfig),
                "urls": {c.name: c.url for c in self.fed}}

    def op_populate(self, *, cluster: str, services: int, endpoints: int, per_slice: int,
                    headless: bool, prefix: str, first_ip: int) -> dict[str, Any]:
        from tests.fakekube import make_endpointslice, make_service

        c = self.fed[cluster]
        started = time.monotonic()
        index = 0
        for s in range(services):
            name = f"{prefix}-{s:04d}"
            c.apply_service(make_service(NAMESPACE, name, headless=headless,
                                         cluster_ips=None if headless else
                                         [endpoint_ip(first_ip + 100, s)],
                                         ports=[{"name": "http", "port": 80}]))
            for k in range(0, endpoints, per_slice):
                eps = []
                for e in range(k, min(endpoints, k + per_slice)):
                    eps.append(_endpoint(endpoint_ip(first_ip, index), True,
                                         f"{name}-7d9f8c6b5-{e:05d}", index))
                    index += 1
                c.apply(
                    "endpointslices",
                    make_endpointslice(NAMESPACE, f"{name}-{k // per_slice}", name,
                                       endpoints=eps, ports=[{"name": "http", "port": 8080}]),
                )
        return {"endpoints": index, "seconds": time.monotonic() - started}

    def op_set_slice(self, cluster: str, service: str, slice: str,
                     endpoints: list[list[Any]]) -> dict[str, Any]:
        from tests.fakekube import make_endpointslice

        obj = make_endpointslice(
            NAMESPACE, slice, service,
            endpoints=[_endpoint(ip, bool(ready), f"{service}-p{i}", i)
                       for i, (ip, ready) in enumerate(endpoints)],
            ports=[{"name": "http", "port": 8080}])
        c = self.fed[cluster]
        t0 = time.monotonic()
        c.apply("endpointslices", obj)
        return {"t0": t0}

    def _create(self, c: Any, service: str, ip: str, cluster_ip: str) -> None:
        from tests.fakekube import make_endpointslice, make_service

        c.apply_service(make_service(NAMESPACE, service, cluster_ips=[cluster_ip],
                                     ports=[{"name": "http", "port": 80}]))
        c.apply("endpointslices", make_endpointslice(
            NAMESPACE, f"{service}-0", service, endpoints=[_endpoint(ip, True, service, 0)],
            ports=[{"name": "http", "port": 8080}]))

    def _delete(self, c: Any, service: str) -> None:
        c.delete_service(NAMESPACE, service, missing_ok=True)
        c.delete_endpointslice(NAMESPACE, f"{service}-0", missing_ok=True)

    def op_service(self, cluster: str, service: str, ip: str, cluster_ip: str) -> dict[str, Any]:
        self._create(self.fed[cluster], service, ip, cluster_ip)
        return {}

    def op_delete_service(self, cluster: str, service: str) -> dict[str, Any]:
        self._delete(self.fed[cluster], service)
        return {}

    def op_silent_change(self, cluster: str, create: str, delete: str, ip: str,
                         cluster_ip: str) -> dict[str, Any]:
        c = self.fed[cluster]
        lists = dict(c.list_requests)
        c.partition()  # open watches now receive nothing: the changes reach only a re-list
        try:
            self._create(c, create, ip, cluster_ip)
            self._delete(c, delete)
            c.expire_history()
            t0 = time.monotonic()
            dropped = c.drop_watches()
        finally:
            c.heal()
        return {"t0": t0, "dropped": dropped, "lists_before": lists}

    def op_stats(self, cluster: str) -> dict[str, Any]:
        return {"stats": self.fed[cluster].stats()}

    def op_stop(self) -> dict[str, Any]:
        if self.fed is not None:
            self.fed.stop()
        return {}


class FakeApi:
    """Parent side: a child process holding fake clusters; ``call(op, **args)`` -> reply."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.k8s_fakeapi"], cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one command and wait for its reply (raises on a failed command)."""
        self.send(op, **args)
        return self.reply()

    def send(self, op: str, **args: Any) -> None:
        """Send one command without waiting (read it later with ``reply``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()

    def reply(self) -> dict[str, Any]:
        """The next reply."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fake API process exited (code {self.proc.poll()})")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise RuntimeError(f"fake API: {reply['error']}")
        return reply

    def close(self) -> None:
        """Stop the clusters and the child process (bounded: kill after 15 s)."""
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.send("stop")
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> FakeApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_fake(names: list[str], directory: Path, *,
               nodelay: bool = True) -> tuple[FakeApi, Path]:
    """A started fake API child with ``names`` clusters, and its kubeconfig.

    ``nodelay`` (default) sets TCP_NODELAY on the fake's connections like the
    real API server; False keeps tests/fakekube's own behaviour (Nagle on).
    """
    api = FakeApi()
    try:
        reply = api.call("start", names=names, directory=str(directory), nodelay=nodelay)
    except BaseException:
        api.close()
        raise
    return api, Path(reply["kubeconfig"])


if __name__ == "__main__":
    _Child().run()
