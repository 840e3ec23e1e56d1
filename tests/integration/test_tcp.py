"""DNS over TCP (RFC 7766, RFC 1035 §4.2.2) against the real server on loopback.

Pipelining, the idle and per-message timeouts, the zero-length close, QR=1
over TCP, and UDP staying responsive while many TCP connections sit idle.
Timeouts are checked with bounded waits on the socket, never with sleeps.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from tests.support import ORIGIN, ServerThread, ask, serve, wait_until, write_federation

ONE_SERVICE = {"east": {"services": [{
    "namespace": "shop", "name": "web", "cluster_ips": ["10.96.1.10"],
    "ports": [{"name": "http", "port": 80}], "endpoints": [{"address": "10.1.1.11"}],
}]}}


def custom_server(tmp: Path, **dns_settings: float) -> Iterator[ServerThread]:
    config = write_federation(tmp, ONE_SERVICE,
                              extra={"dns": {"listen": ["127.0.0.1:0"], **dns_settings}})
    with serve(config) as server:
        yield server


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Closes idle TCP connections after 0.5 s."""
    yield from custom_server(tmp_path_factory.mktemp("idle"), tcp_idle_timeout=0.5)


@pytest.fixture(scope="module")
def stall_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Idle timeout 10 s, but a started message must arrive within 0.3 s."""
    yield from custom_server(tmp_path_factory.mktemp("stall"), tcp_idle_timeout=10.0,
                             tcp_io_timeout=0.3)


def connect(port: int, *, timeout: float = 3.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def framed(msg: dns.message.Message | bytes) -> bytes:
    data = msg if isinstance(msg, bytes) else msg.to_wire()
    return struct.pack("!H", len(data)) + data


def read_exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} octets")
        buf += chunk
    return buf


def read_message(s: socket.socket) -> dns.message.Message:
    (length,) = struct.unpack("!H", read_exactly(s, 2))
    return dns.message.from_wire(read_exactly(s, length))


def seconds_until_closed(s: socket.socket, *, limit: float) -> float:
    """Wait (at most ``limit`` s) for the server to close ``s``; return the time it took."""
    started = time.monotonic()
    s.settimeout(limit)
    try:
        while s.recv(4096):
            pass  # unexpected data: keep reading until the close
    except TimeoutError as exc:
        raise AssertionError(f"connection still open after {limit} s") from exc
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def query(name: str, qtype: str = "A") -> dns.message.Message:
    q = dns.message.make_query(name, qtype, use_edns=False)
    q.flags &= ~dns.flags.RD
    return q


NAMES = [
    ("web.shop.svc.clusterset.local.", "A"), ("web.shop.svc.clusterset.local.", "SRV"),
    ("db.data.svc.clusterset.local.", "SRV"), ("clusterset.local.", "SOA"),
    ("nope.clusterset.local.", "A"), ("example.com.", "A"),
    ("dns-version.clusterset.local.", "TXT"), ("api.shop.svc.clusterset.local.", "AAAA"),
]


def test_a_hundred_pipelined_queries_on_one_connection_are_all_answered_with_matching_ids(
        demo_server):
    queries = []
    for i in range(100):
        name, qtype = NAMES[i % len(NAMES)]
        q = query(name, qtype)
        q.id = 1000 + i
        queries.append(q)
    with connect(demo_server.port) as s:
        s.sendall(b"".join(framed(q) for q in queries))  # written at once
        replies = {}
        for _ in queries:
            reply = read_message(s)
            replies[reply.id] = reply
    assert sorted(replies) == [q.id for q in queries]
    for q in queries:
        reply = replies[q.id]
        assert reply.question == q.question
        assert reply.flags & dns.flags.QR
        assert reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED)


def test_an_idle_connection_is_closed_after_the_idle_timeout(idle_server):
    with connect(idle_server.port) as s:
        s.sendall(framed(query(ORIGIN, "SOA")))
        assert read_message(s).answer
        took = seconds_until_closed(s, limit=5.0)
    assert 0.4 <= took < 3.0  # tcp_idle_timeout is 0.5 s


def test_a_connection_that_never_sends_anything_is_closed_after_the_idle_timeout(idle_server):
    with connect(idle_server.port) as s:
        took = seconds_until_closed(s, limit=5.0)
    assert 0.4 <= took < 3.0


def test_a_half_sent_length_prefix_is_closed_by_the_idle_timeout(idle_server):
    with connect(idle_server.port) as s:
        s.sendall(b"\x00")
        took = seconds_until_closed(s, limit=5.0)
    assert took < 3.0


def test_a_length_prefix_of_zero_closes_the_connection(demo_server):
    with connect(demo_server.port) as s:
        s.sendall(framed(query(ORIGIN, "SOA")))
        assert read_message(s).answer
        s.sendall(b"\x00\x00")
        # The demo's idle timeout is 10 s: closing well before it is the zero-length rule.
        assert seconds_until_closed(s, limit=3.0) < 3.0


def test_a_message_that_stalls_part_way_is_closed_after_the_io_timeout(stall_server):
    with connect(stall_server.port) as s:
        s.sendall(b"\xff\xff" + b"\x00" * 10)  # announces 65535 octets, sends 10
        took = seconds_until_closed(s, limit=5.0)
    assert 0.25 <= took < 3.0  # tcp_io_timeout is 0.3 s; the idle timeout is 10 s


def test_a_connection_with_a_complete_message_is_not_cut_by_the_io_timeout(stall_server):
    with connect(stall_server.port) as s:
        for _ in range(3):
            s.sendall(framed(query("web.shop.svc.clusterset.local.")))
            assert [str(rd) for rd in read_message(s).answer[0]] == ["10.96.1.10"]


def test_a_response_sent_over_tcp_gets_no_reply_and_the_connection_keeps_working(demo_server):
    response = dns.message.make_response(query(ORIGIN, "SOA"))
    response.id = 0x1111
    good = query(ORIGIN, "SOA")
    good.id = 0x2222
    with connect(demo_server.port) as s:
        s.sendall(framed(response) + framed(good))
        first = read_message(s)
        assert first.id == 0x2222  # nothing came back for the QR=1 message
        assert first.answer[0].rdtype == dns.rdatatype.SOA
        again = query("web.shop.svc.clusterset.local.")
        s.sendall(framed(again))
        assert read_message(s).id == again.id


def test_a_malformed_message_over_tcp_gets_formerr_and_the_connection_stays_open(demo_server):
    bad = struct.pack("!HHHHHH", 0x3333, 0, 2, 0, 0, 0) + b"\x00\x00\x01\x00\x01" * 2
    with connect(demo_server.port) as s:
        s.sendall(framed(bad))
        reply = read_message(s)
        assert (reply.id, reply.rcode()) == (0x3333, dns.rcode.FORMERR)
        good = query(ORIGIN, "SOA")
        s.sendall(framed(good))
        assert read_message(s).id == good.id


def test_udp_keeps_answering_while_two_hundred_idle_tcp_connections_are_open(demo_server):
    stats = demo_server.app.server.stats  # type: ignore[union-attr]
    open_before = demo_server.call(lambda: stats.tcp_connections)
    accepted_before = demo_server.call(lambda: stats.tcp_accepted)
    idle: list[socket.socket] = []
    try:
        for _ in range(200):
            idle.append(connect(demo_server.port))
        # Every one of them accepted by the server, and still open there.
        wait_until(lambda: demo_server.call(lambda: stats.tcp_accepted) >= accepted_before + 200,
                   timeout=5)
        assert demo_server.call(lambda: stats.tcp_connections) >= 200
        for name, qtype in NAMES:
            reply = ask(demo_server.port, query(name, qtype), timeout=2.0)  # or it raises
            assert reply.flags & dns.flags.QR
        # A new TCP client is served too.
        assert ask(demo_server.port, query(ORIGIN, "SOA"), tcp=True).answer
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: demo_server.call(lambda: stats.tcp_connections) <= open_before, timeout=5)


def test_two_hundred_connections_made_while_the_server_is_busy_wait_in_the_backlog_and_get_served(
        idle_server):
    # Regression: asyncio.start_server re-listened with its default backlog of 100, so with
    # the event loop busy the 102nd SYN was dropped and its connect() hung for seconds.
    release = threading.Event()
    idle_server.loop.call_soon_threadsafe(release.wait, 10.0)  # keeps the server loop busy
    conns: list[socket.socket] = []
    try:
        for _ in range(200):
            conns.append(connect(idle_server.port, timeout=2.0))
    finally:
        release.set()
    try:
        for i, s in enumerate(conns):
            q = query("web.shop.svc.clusterset.local.")
            q.id = i
            s.sendall(framed(q))
        for i, s in enumerate(conns):
            assert read_message(s).id == i
    finally:
        for s in conns:
            s.close()
