"""A pod's view of DNS in a network namespace: its resolv.conf, its cluster DNS, and feddns.

Why it exists: most programs reach feddns through their C library's stub resolver, and
a stub resolver can only be pointed at port 53 of an address in ``/etc/resolv.conf``.
A network namespace gives a test its own loopback, where port 53 is free and nothing
of the host is reachable, and ``ip netns exec`` bind-mounts
``/etc/netns/<name>/resolv.conf`` over ``/etc/resolv.conf``, so a real program
resolves there exactly as it would in a pod. Everything started inside is a real
subprocess, stopped by its PID; at teardown the namespace, its folder under
``/etc/netns`` (and ``/etc/netns`` itself when this module created it) are removed.

Network namespaces need root: without it (or where the kernel refuses one) the tests
are skipped, with that reason. A missing program is a failure naming its Debian
package, never a skip: ``make test`` installs them all (Makefile ``TEST_DEBS``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# What the kubelet writes for a pod in namespace "shop" with the default ClusterFirst
# DNS policy (the cluster DNS service's address is 127.0.0.1 in here).
POD_RESOLV_CONF = (
    "search shop.svc.cluster.local svc.cluster.local cluster.local\n"
    "nameserver 127.0.0.1\n"
    "options ndots:5\n"
)

# dig's status line, e.g. ";; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 4242".
_STATUS = re.compile(r"status: ([A-Z]+)")

# Run inside the namespace: GET a URL, print "<status> <body>" (urllib: no curl needed).
_HTTP_GET = """\
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        print(r.status, r.read().decode().strip())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode().strip())
except OSError as e:
    print(0, e)
"""


def require(name: str, package: str) -> str:
    """The path of program ``name``; fail (never skip) when its Debian package is missing."""
    exe = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), None)
    if exe is None:
        pytest.fail(f"{name} is not installed: Debian package {package}"
                    " (`make system-deps` installs every package the tests use)")
    return exe


@dataclass(frozen=True)
class Answer:
    """What dig printed for one query: the rcode (or "no reply") and the answer's rdata."""

    status: str
    rdata: tuple[str, ...]


@dataclass(frozen=True)
class Namespace:
    """A network namespace, and the ``ip`` program that runs commands in it."""

    name: str
    ip: str

    def command(self, *args: str) -> list[str]:
        return [self.ip, "netns", "exec", self.name, *args]

    def run(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def dig(self, qname: str, qtype: str = "A", *, port: int = 53) -> Answer:
        """Ask 127.0.0.1:port in here once (one try of one second), like ``dig`` prints it."""
        out = self.run("dig", "@127.0.0.1", "-p", str(port), "+time=1", "+tries=1",
                       "+noall", "+comments", "+answer", qname, qtype).stdout
        status = _STATUS.search(out)
        rdata = sorted(line.split()[-1] for line in out.splitlines()
                       if line and not line.startswith(";"))
        return Answer(status.group(1) if status else "no reply", tuple(rdata))

    def http_get(self, url: str) -> tuple[int, str]:
        """GET ``url`` from inside the namespace: (HTTP status, body); status 0 if unreachable."""
        out = self.run(sys.executable, "-c", _HTTP_GET, url).stdout.strip()
        code, _, body = out.partition(" ")
        return int(code or 0), body


@contextlib.contextmanager
def pod_namespace(resolv_conf: str = POD_RESOLV_CONF) -> Iterator[Namespace]:
    """A network namespace with only a loopback (up) and ``resolv_conf`` as its resolv.conf."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    ip = require("ip", "iproute2")
    require("dig", "bind9-dnsutils")
    name = f"feddns-{uuid.uuid4().hex[:8]}"
    etc = Path("/etc/netns")
    created_etc = not etc.exists()
    added = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True,
                           check=False)
    if added.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {added.stderr.strip()}")
    try:
        (etc / name).mkdir(parents=True)
        (etc / name / "resolv.conf").write_text(resolv_conf)
        subprocess.run([ip, "netns", "exec", name, ip, "link", "set", "lo", "up"], check=True)
        yield Namespace(name, ip)
    finally:
        # Only processes inside this namespace, all started by the test: none may outlive it.
        for pid in subprocess.run([ip, "netns", "pids", name], capture_output=True, text=True,
                                  check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run([ip, "netns", "del", name], check=False)
        shutil.rmtree(etc / name, ignore_errors=True)
        if created_etc:
            with contextlib.suppress(OSError):  # another namespace may be using it now
                etc.rmdir()


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    """A pod-like network namespace (see :func:`pod_namespace`)."""
    with pod_namespace() as ns:
        yield ns


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                 timeout: float = 10) -> int:
    """Send ``sig`` to ``proc`` (by its PID), wait for it to exit, SIGKILL it if it does not."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


class FeddnsProcess:
    """``python -m feddns serve`` as a real process inside a namespace, restartable.

    Every run appends to the same log file (each after a ``--- start N ---`` line), so
    a failure message can show the whole story across restarts.
    """

    def __init__(self, namespace: Namespace, config: Path, log: Path, *,
                 listen: str = "127.0.0.1:53") -> None:
        self.namespace = namespace
        self.config = config
        self.log = log
        self.port = int(listen.rpartition(":")[2])
        self.listen = listen
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, *, probe: str = "clusterset.local.", timeout: float = 20) -> float:
        """Start feddns; return the seconds until it first answered ``probe`` SOA at all.

        Fails at once, with the log, when the process exits before answering (an
        invalid config, a port in use).
        """
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts} ---\n".encode())
            out.flush()
            began = time.monotonic()
            self.proc = subprocess.Popen(
                self.namespace.command(sys.executable, "-m", "feddns", "serve",
                                       "-c", str(self.config), "--listen", self.listen),
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"feddns exited with status {self.proc.returncode}"
                                     f" before answering:\n{self.log_text()}")
            if self.namespace.dig(probe, "SOA", port=self.port).status != "no reply":
                return time.monotonic() - began
            time.sleep(0.05)
        raise AssertionError(f"feddns did not answer within {timeout} s:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop feddns with ``sig``; return its exit status (negative: killed by a signal)."""
        assert self.proc is not None, "feddns was never started"
        return stop_process(self.proc, sig)

    def log_text(self, limit: int = 12000) -> str:
        """The log so far (its last ``limit`` characters)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def __enter__(self) -> FeddnsProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)


@contextlib.contextmanager
def cluster_dns(namespace: Namespace, *, feddns_port: int, log: Path,
                zone: str = "clusterset.local") -> Iterator[subprocess.Popen[bytes]]:
    """The pod's cluster DNS on 127.0.0.1:53: dnsmasq standing in for CoreDNS.

    As CoreDNS does in a cluster, it answers ``cluster.local`` itself (NXDOMAIN here:
    no service of that zone exists) and forwards ``zone`` to feddns (docs/operations.md,
    "CoreDNS"). So the stub resolver's search-list expansions get NXDOMAIN, not
    feddns's REFUSED. It keeps no cache, so every query reaches feddns and shows its
    answer of the moment.
    """
    exe = require("dnsmasq", "dnsmasq-base")
    args = [exe, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            f"--server=/{zone}/127.0.0.1#{feddns_port}", "--address=/cluster.local/",
            "--port=53", "--listen-address=127.0.0.1", "--bind-interfaces", "--cache-size=0",
            f"--pid-file={log.with_suffix('.pid')}", "--log-facility=-", "--log-queries",
            "--user=root"]  # stay root: the user dnsmasq switches to may not exist here
    with log.open("wb") as out:
        proc = subprocess.Popen(namespace.command(*args), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while namespace.dig("probe.svc.cluster.local").status != "NXDOMAIN":
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dnsmasq never answered:\n{log.read_text()}")
            time.sleep(0.05)
        yield proc
    finally:
        stop_process(proc)
