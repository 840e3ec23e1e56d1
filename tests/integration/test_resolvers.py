"""Real resolvers in front of feddns: Unbound, dnsmasq, and a pod's glibc stub resolver.

Why it exists: feddns is never asked by applications directly; a recursive
resolver or a forwarder sends it the clusterset.local part of their traffic.
Each test starts the real program as a subprocess on a free loopback port with
a generated config that forwards the zone to the demo federation served by
feddns, then resolves feddns names through it:

* Unbound (``forward-zone``, ``do-not-query-localhost: no``, ``domain-insecure``),
  over UDP and TCP, once forwarding over UDP and once with ``tcp-upstream: yes``;
* dnsmasq (``--server=/clusterset.local/127.0.0.1#PORT``);
* ``dig`` through Unbound, checking its printed output;
* glibc's stub resolver in a network namespace whose resolv.conf looks like a
  pod's (``search <ns>.svc.cluster.local ...``, ``options ndots:5``), with
  feddns serving on 127.0.0.1:53 inside the namespace: ``getent hosts``
  must print the service's addresses (run as root; skipped otherwise). The
  namespace and the feddns process come from ``tests/netns.py``, shared with
  ``test_clients.py`` (glibc's and musl's getaddrinfo through a cluster DNS).

Nothing leaves this machine: every address is loopback, and the namespace has
only its own loopback. Every wait is a bounded poll.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests import localdns
from tests.localdns import program
from tests.netns import FeddnsProcess, Namespace, require
from tests.ports import free_port
from tests.support import DEMO_CONFIG, ServerThread, dig, make_query, records, wait_until

WEB = "web.shop.svc.clusterset.local."
WEB_A = sorted(f"{WEB} 5 IN A 10.96.{i}.10" for i in (1, 2, 3))
DB_SRV = sorted(f"db.data.svc.clusterset.local. 5 IN SRV 0 100 5432 {target}" for target in (
    "db-0.east-a.db.data.svc.clusterset.local.", "db-1.east-a.db.data.svc.clusterset.local.",
    "db-0.west.prod.db.data.svc.clusterset.local."))



def answers(port: int, qname: str = WEB) -> bool:
    with contextlib.suppress(OSError, dns.exception.Timeout):
        reply = dns.query.udp(make_query(qname, rd=True), "127.0.0.1", port=port, timeout=0.5)
        return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)
    return False


@contextlib.contextmanager
def running(args: list[str], log: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Run a resolver until the block ends; fail with its log if it never answers."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            wait_until(lambda: proc.poll() is None and answers(port), timeout=10)
        except AssertionError:
            raise AssertionError(f"{args[0]} never answered:\n{log.read_text()}") from None
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def ask_rd(port: int, qname: str, qtype: str = "A", *, tcp: bool = False) -> dns.message.Message:
    q = make_query(qname, qtype, rd=True)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=3)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=3)


def unbound_config(tmp: Path, port: int, feddns_port: int, *, tcp_upstream: bool) -> Path:
    return localdns.unbound_config(
        tmp, port, feddns_port, extra=f"    tcp-upstream: {'yes' if tcp_upstream else 'no'}\n")


@pytest.mark.parametrize("tcp_upstream", [False, True], ids=["udp-upstream", "tcp-upstream"])
def test_unbound_forwarding_the_zone_resolves_services_over_udp_and_tcp(
        demo_server: ServerThread, tmp_path: Path, tcp_upstream: bool) -> None:
    exe = program("unbound", "unbound")
    port = free_port()
    conf = unbound_config(tmp_path, port, demo_server.port, tcp_upstream=tcp_upstream)
    assert demo_server.app is not None
    accepted = demo_server.app.server.stats.tcp_accepted
    with running([exe, "-d", "-c", str(conf)], tmp_path / "unbound.log", port):
        for tcp in (False, True):
            reply = ask_rd(port, WEB, tcp=tcp)
            assert reply.rcode() == dns.rcode.NOERROR
            assert sorted(r.split(None, 2)[2] for r in records(reply)) == sorted(
                r.split(None, 2)[2] for r in WEB_A)
            assert max(int(r.split()[1]) for r in records(reply)) <= 5  # never cached longer
        assert sorted(r.split(None, 2)[2] for r in records(
            ask_rd(port, "db.data.svc.clusterset.local.", "SRV"))) == sorted(
            r.split(None, 2)[2] for r in DB_SRV)
        assert ask_rd(port, "nope.shop.svc.clusterset.local.").rcode() == dns.rcode.NXDOMAIN
    grew = demo_server.app.server.stats.tcp_accepted > accepted
    assert grew is tcp_upstream  # tcp-upstream: every query reached feddns over TCP


def test_dnsmasq_forwarding_the_zone_resolves_a_service(
        demo_server: ServerThread, tmp_path: Path) -> None:
    exe = program("dnsmasq", "dnsmasq-base")
    port = free_port()
    args = [exe, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            f"--server=/clusterset.local/127.0.0.1#{demo_server.port}", f"--port={port}",
            "--listen-address=127.0.0.1", "--bind-interfaces",
            f"--pid-file={tmp_path / 'dnsmasq.pid'}", "--log-facility=-"]
    if os.geteuid() == 0:
        args.append("--user=root")  # do not switch to a user that may not exist here
    with running(args, tmp_path / "dnsmasq.log", port):
        assert sorted(r.split()[-1] for r in records(ask_rd(port, WEB))) == [
            "10.96.1.10", "10.96.2.10", "10.96.3.10"]
        endpoint = ask_rd(port, "db-0.west.prod.db.data.svc.clusterset.local.")
        assert [r.split()[-1] for r in records(endpoint)] == ["10.3.2.10"]
        assert ask_rd(port, "example.org.").rcode() == dns.rcode.REFUSED  # no upstream


def test_dig_through_unbound_prints_the_answers(
        demo_server: ServerThread, tmp_path: Path) -> None:
    exe = program("unbound", "unbound")
    port = free_port()
    conf = unbound_config(tmp_path, port, demo_server.port, tcp_upstream=False)
    with running([exe, "-d", "-c", str(conf)], tmp_path / "unbound.log", port):
        out = dig(port, WEB, "+noall", "+answer")
        assert sorted(line.split()[-1] for line in out.splitlines()
                      if line.startswith(WEB)) == ["10.96.1.10", "10.96.2.10", "10.96.3.10"]
        out = dig(port, "api.shop.svc.clusterset.local", "AAAA", "+short")
        assert "fd00:96::30" in out.split()
        out = dig(port, "nope.shop.svc.clusterset.local", "+noall", "+comments")
        assert "status: NXDOMAIN" in out
    # Straight to feddns: the forward plugin's probe gets REFUSED, not silence.
    assert "status: REFUSED" in dig(demo_server.port, ".", "NS", "+noall", "+comments")


# --- a pod's stub resolver ------------------------------------------------------------------


def test_a_pods_stub_resolver_finds_a_service_through_its_search_path(
        namespace: Namespace, tmp_path: Path) -> None:
    require("getent", "libc-bin")
    log = tmp_path / "feddns.log"
    config = tmp_path / "feddns.yaml"
    config.write_text(DEMO_CONFIG.read_text().replace(
        "demo-services.yaml", str(DEMO_CONFIG.parent / "demo-services.yaml"))
        + "observe: {listen: null, query_log: true}\n")
    with FeddnsProcess(namespace, config, log, listen="127.0.0.1:53") as feddns:
        feddns.start()
        wait_until(lambda: "10.96.1.10" in namespace.dig(WEB).rdata, timeout=15)
        found = namespace.run("getent", "hosts", "web.shop.svc.clusterset.local")
        assert found.returncode == 0, found.stderr + feddns.log_text()
        assert sorted(line.split()[0] for line in found.stdout.splitlines()) == [
            "10.96.1.10", "10.96.2.10", "10.96.3.10"]
        assert {line.split()[1] for line in found.stdout.splitlines()} == {
            "web.shop.svc.clusterset.local"}
        endpoint = namespace.run("getent", "ahosts", "db-0.west.prod.db.data.svc.clusterset.local")
        assert endpoint.stdout.split()[0] == "10.3.2.10", endpoint.stderr
        missing = namespace.run("getent", "hosts", "nope.shop.svc.clusterset.local")
        assert missing.returncode == 2  # not found
    # ndots:5 sends the search-list expansions first; feddns refuses them (they are
    # outside its origins) at once, and the stub then asks the name as given.
    queried = [line.split()[-3] for line in log.read_text().splitlines() if " query " in line]
    assert f"{WEB[:-1]}.shop.svc.cluster.local." in queried
    assert WEB in queried
