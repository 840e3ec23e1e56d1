"""A real DNS server on loopback holding chosen names: dnsmasq with a hosts file.

Why it exists: feddns resolves load-balancer ingress hostnames itself, and the
tests must resolve them against a real server without leaving the machine.
dnsmasq answers the names of a hosts file (``--addn-hosts``) with a fixed TTL,
re-reads the file on SIGHUP (so a test can move a name to new addresses), and
answers NODATA for their other types (``--local``), and has no upstream
(``--no-resolv``). Every wait is a bounded
poll; the process is ended by its own PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.ports import free_port
from tests.support import wait_until


def program(name: str, package: str) -> str:
    """The path of an installed program; skip the test when it is missing."""
    exe = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), None)
    if exe is None:
        pytest.skip(f"{name} is not installed (Debian package {package}; make system-deps)")
    return exe


class LocalDns:
    """dnsmasq on 127.0.0.1:``port`` answering the names of ``hosts``."""

    def __init__(self, folder: Path, hosts: Mapping[str, Sequence[str]], *, ttl: int) -> None:
        self.folder = folder
        self.hosts_file = folder / "hosts"
        self.ttl = ttl
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._write(hosts)

    def _write(self, hosts: Mapping[str, Sequence[str]]) -> None:
        self.hosts = dict(hosts)
        self.hosts_file.write_text("".join(f"{a} {name}\n" for name, addrs in hosts.items()
                                           for a in addrs))

    def start(self) -> LocalDns:
        """Start dnsmasq and wait until it answers the first name."""
        exe = program("dnsmasq", "dnsmasq-base")
        args = [exe, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                "--no-hosts", f"--addn-hosts={self.hosts_file}", f"--local-ttl={self.ttl}",
                f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                f"--pid-file={self.folder / 'dnsmasq.pid'}", "--log-facility=-"]
        # Authoritative for the names' domains: a name without AAAA is NODATA, as a real
        # load balancer's is, not a failed forward to an upstream that does not exist.
        args += sorted({f"--local=/{name.split('.', 1)[1]}/" for name in self.hosts})
        if os.geteuid() == 0:
            args.append("--user=root")
        log = (self.folder / "dnsmasq.log").open("wb")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        first = next(iter(self.hosts))
        wait_until(lambda: bool(self.answer(first)), timeout=10)
        return self

    def answer(self, name: str, rdtype: str = "A") -> list[str]:
        """What the server answers for ``name`` now ([] on any failure)."""
        with contextlib.suppress(OSError, dns.exception.DNSException):
            reply = dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1",
                                  port=self.port, timeout=0.5)
            if reply.rcode() == dns.rcode.NOERROR:
                return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)
        return []

    def move(self, hosts: Mapping[str, Sequence[str]]) -> None:
        """Serve ``hosts`` from now on (SIGHUP re-reads the file)."""
        assert self.proc is not None
        self._write(hosts)
        self.proc.send_signal(signal.SIGHUP)
        name, addrs = next(iter(hosts.items()))
        want = sorted(a for a in addrs if ":" not in a)
        wait_until(lambda: self.answer(name) == want, timeout=10)

    def stop(self) -> None:
        """End dnsmasq (its PID only)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def local_dns(folder: Path, hosts: Mapping[str, Sequence[str]], *,
              ttl: int = 30) -> Iterator[LocalDns]:
    """A started :class:`LocalDns`, stopped when the block ends."""
    server = LocalDns(folder, hosts, ttl=ttl)
    try:
        yield server.start()
    finally:
        server.stop()
