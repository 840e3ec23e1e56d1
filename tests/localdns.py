"""Real DNS servers on loopback: dnsmasq holding chosen names, Unbound caching feddns.

Why it exists: feddns resolves load-balancer ingress hostnames itself, and the
tests must resolve them against a real server without leaving the machine.
dnsmasq answers the names of a hosts file (``--addn-hosts``) with a fixed TTL,
re-reads the file on SIGHUP (so a test can move a name to new addresses), and
answers NODATA for their other types (``--local``), and has no upstream
(``--no-resolv``). Every wait is a bounded
poll; the process is ended by its own PID. :class:`UnboundForwarder` is a caching
resolver in front of feddns whose cache a test can empty, to count what the
clients of many caches get (the answer mode that survives caches).
"""

from __future__ import annotations

import contextlib
import os
import random
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
        _end(self.proc)


def _end(proc: subprocess.Popen[bytes] | None) -> None:
    """Terminate ``proc`` (its PID only), killing it if it does not end within 5 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def local_dns(folder: Path, hosts: Mapping[str, Sequence[str]], *,
              ttl: int = 30) -> Iterator[LocalDns]:
    """A started :class:`LocalDns`, stopped when the block ends."""
    server = LocalDns(folder, hosts, ttl=ttl)
    try:
        yield server.start()
    finally:
        server.stop()



def unbound_config(folder: Path, port: int, upstream: int, *, zone: str = "clusterset.local.",
                   logfile: str = "", extra: str = "", tail: str = "") -> Path:
    """An Unbound config in ``folder`` on 127.0.0.1:``port``, forwarding ``zone`` to feddns.

    feddns is on 127.0.0.1:``upstream``; ``extra`` lines go into ``server:``, ``tail``
    sections before the forward zone.
    """
    conf = folder / "unbound.conf"
    conf.write_text(f"""\
server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-daemonize: no
    use-syslog: no
    logfile: "{logfile}"
    username: ""
    chroot: ""
    pidfile: ""
    directory: "{folder}"
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    # feddns listens on loopback; Unbound refuses to query localhost by default.
    do-not-query-localhost: no
    # The zone is not signed: no DNSSEC validation for it.
    domain-insecure: "{zone}"
    module-config: "iterator"
{extra}{tail}forward-zone:
    name: "{zone}"
    forward-addr: 127.0.0.1@{upstream}
""")
    return conf


class UnboundForwarder:
    """A real Unbound on 127.0.0.1:``port`` forwarding ``zone`` to feddns, with a cache.

    ``flush`` empties its cache of one name (``unbound-control`` over a local socket),
    which is what a TTL running out does: the next query is asked of feddns again.
    Each fill of the cache is then one more cache in front of feddns, as far as the
    answers its clients get are concerned.
    """

    def __init__(self, folder: Path, feddns_port: int, *,
                 zone: str = "clusterset.local.") -> None:
        self.folder = folder
        self.port = free_port()
        self.conf = unbound_config(folder, self.port, feddns_port, zone=zone,
                                   logfile=str(folder / "unbound.log"), tail=f"""\
remote-control:
    control-enable: yes
    control-interface: "{folder / 'unbound.ctl'}"
    control-use-cert: no
""")
        self.proc: subprocess.Popen[bytes] | None = None
        self.control = program("unbound-control", "unbound")

    def start(self, probe: str) -> UnboundForwarder:
        """Start Unbound and wait until it answers ``probe`` (a name feddns has)."""
        exe = program("unbound", "unbound")
        self.proc = subprocess.Popen([exe, "-d", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers() -> bool:
            with contextlib.suppress(OSError, dns.exception.DNSException):
                reply = dns.query.udp(dns.message.make_query(probe, "A"), "127.0.0.1",
                                      port=self.port, timeout=0.5)
                return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)
            return False

        wait_until(answers, timeout=15)
        return self

    def flush(self, name: str) -> None:
        """Forget ``name`` (every type): the next query for it goes to feddns."""
        subprocess.run([self.control, "-c", str(self.conf), "flush", name], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)

    def stop(self) -> None:
        """End Unbound (its PID only)."""
        _end(self.proc)


@contextlib.contextmanager
def unbound_forwarder(folder: Path, feddns_port: int, *, probe: str) -> Iterator[UnboundForwarder]:
    """A started :class:`UnboundForwarder`, stopped when the block ends."""
    server = UnboundForwarder(folder, feddns_port)
    try:
        yield server.start(probe)
    finally:
        server.stop()


def shares_through_cache(resolver: UnboundForwarder, name: str, *, fills: int,
                         clients_per_fill: int, seed: int) -> dict[str, int]:
    """What the clients of ``fills`` successive cache fills got first, counted by address.

    Each fill: ``clients_per_fill`` queries (random IDs from ``seed``) answered from the
    cache (the first one fills it), then the name is flushed, as a TTL running out does.
    """
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    for _ in range(fills):
        for _ in range(clients_per_fill):
            query = dns.message.make_query(name, "A")
            query.id = rng.randrange(65536)
            reply = dns.query.udp(query, "127.0.0.1", port=resolver.port, timeout=3)
            first = reply.answer[0][0].to_text()
            counts[first] = counts.get(first, 0) + 1
        resolver.flush(name)
    return counts
