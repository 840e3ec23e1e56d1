"""Shared plumbing of the Kubernetes-source benchmarks: config, feddns process, DNS client.

Why it exists: the three Kubernetes benchmarks (programming latency, re-list,
memory) configure feddns the same way (one ``kubernetes`` source per fake
cluster, one kubeconfig with a context each), run it the same way (the real
CLI as a subprocess, stopped with SIGTERM) and ask it the same way (one UDP
socket, one query outstanding, bounded timeouts), so that lives here once.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import yaml

from bench.harness import REPO, stop_process, taskset
from tests.ports import free_port

ORIGIN = "clusterset.local"
UNKNOWN = f"no-such-service.bench.svc.{ORIGIN}"


def service_name(service: str, namespace: str = "bench") -> str:
    """The federated DNS name of a service."""
    return f"{service}.{namespace}.svc.{ORIGIN}"


def write_config(directory: Path, kubeconfig: Path, clusters: Sequence[str], *,
                 max_records: int = 16, **source: Any) -> Path:
    """A feddns config with one kubernetes-sourced cluster per name (context == name)."""
    cfg = {
        "federation": "bench",
        "dns": {"listen": ["127.0.0.1:0"], "max_records": max_records},
        "clusters": [
            {"name": name, "region": "r1", "zones": ["zone-a", "zone-b", "zone-c"],
             "source": {"type": "kubernetes", "kubeconfig": str(kubeconfig),
                        "context": name, **source}}
            for name in clusters
        ],
    }
    path = directory / "feddns.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Resolver:
    """A blocking UDP client with one query outstanding (no retries, bounded timeout)."""

    def __init__(self, port: int, *, timeout: float = 1.0) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))

    def ask(self, name: str, qtype: str = "A") -> tuple[str, tuple[str, ...]]:
        """``(rcode text, sorted answer rdata)``; rcode ``TIMEOUT`` when nothing came back."""
        q = dns.message.make_query(name, qtype)
        q.id = random.randrange(65536)
        self.sock.send(q.to_wire())
        deadline = time.monotonic() + (self.sock.gettimeout() or 1.0)
        while True:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                return "TIMEOUT", ()
            except ConnectionRefusedError:  # not listening (yet)
                time.sleep(0.05)
                return "REFUSED", ()
            reply = dns.message.from_wire(data)
            if reply.id == q.id:
                break
            if time.monotonic() > deadline:
                return "TIMEOUT", ()
        rdata = sorted(rd.to_text() for rrset in reply.answer for rd in rrset)
        return dns.rcode.to_text(reply.rcode()), tuple(rdata)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def __enter__(self) -> Resolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_answer(resolver: Resolver, name: str, predicate: Any, *, timeout: float,
                interval: float = 0.05) -> float:
    """Poll ``name`` until ``predicate(rcode, rdata)``; return the monotonic time it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rcode, rdata = resolver.ask(name)
        if predicate(rcode, rdata):
            return time.monotonic()
        time.sleep(interval)
    raise TimeoutError(f"{name}: condition not met within {timeout} s")


def poll_until(resolver: Resolver, name: str, want: Any, *, timeout: float,
               gap: float = 0.0) -> tuple[float | None, int]:
    """Ask ``name`` back to back (``gap`` s apart) until it answers NOERROR with ``want``.

    Returns the monotonic time it first did (None after ``timeout``) and the number of
    queries asked: the programming-latency benchmarks time a change with it.
    """
    deadline = time.monotonic() + timeout
    polls = 0
    while time.monotonic() < deadline:
        polls += 1
        rcode, rdata = resolver.ask(name)
        if rcode == "NOERROR" and rdata == want:
            return time.monotonic(), polls
        if gap:
            time.sleep(gap)
    return None, polls


@contextlib.contextmanager
def feddns_process(config: Path, *, cpu: int | None = None, log_level: str = "warning",
                   list_page: int | None = None, gc_freeze: bool = False,
                   env: dict[str, str] | None = None,
                   ) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run the real CLI (``python -m feddns serve``) on a free port; SIGTERM at the end.

    What-ifs: ``list_page`` sets feddns's LIST page size before the CLI starts;
    ``gc_freeze`` calls ``gc.freeze()`` once feddns's modules are imported (the
    objects of the imports are then never scanned by the cyclic GC again);
    ``env`` adds environment variables (e.g. allocator settings).
    """
    port = free_port()
    args = ["serve", "-c", str(config), "--listen", f"127.0.0.1:{port}",
            "--log-level", log_level]
    if list_page is None and not gc_freeze:
        entry = ["-m", "feddns"]
    else:
        code = ["import gc, sys", "import feddns.sources.kubernetes.watching as w",
                "import feddns.app", "from feddns.cli import main"]
        if list_page is not None:
            code.append(f"w.LIST_PAGE = w.FIRST_LIST_PAGE = {int(list_page)}")
        if gc_freeze:
            code.append("gc.collect(); gc.freeze()")
        code.append("sys.exit(main(sys.argv[1:]))")
        entry = ["-c", "; ".join(code)]
    proc = subprocess.Popen([*taskset(cpu), sys.executable, *entry, *args], cwd=REPO,
                            env={**os.environ, **(env or {})})
    try:
        yield proc, port
    finally:
        stop_process(proc, timeout=15)


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` field in KiB (e.g. VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0-100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def environment() -> str:
    """One comment line describing the machine (for RESULTS.md)."""
    load = os.getloadavg()
    return (f"# {platform.python_implementation()} {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}")

