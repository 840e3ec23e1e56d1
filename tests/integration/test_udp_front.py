"""The UDP listener's own front memo: what it answers without the handler must be exact.

``feddns.dns.server.UdpListener`` answers a repeated query from the handler's
front memo without calling the handler. These tests drive a real listener on
a real loopback socket, from client sockets bound to loopback addresses the
locator places in different clusters (127.1/16, 127.2/16, 127.3/16; 127.9.9.9
is placed nowhere). Properties:

* every reply, first or repeated, from any client class and with any ID, is
  byte for byte what the strict full path gives for that query and client;
* a repeated query really is answered without the handler (else the first
  property would test nothing);
* any change to the table, a new table, a new advertised size, or the ACL/RRL
  switched on stops the front from answering at once;
* a TCP query never gets an answer cut for UDP;
* latency samples: the first query is timed, then the first after each interval;
* random-case spellings (0x20) never grow the fronts beyond their entry and
  byte bounds, and the byte count kept is what they really hold.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator

import dns.flags
import dns.message
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feddns.dns import front as front_module
from feddns.dns.handling import Handler
from feddns.dns.server import ServerStats, UdpListener
from feddns.model.services import Endpoint
from feddns.runtime.options import locator_from
from tests.unit.dnscase import (
    Federation,
    federation,
    handle,
    make_handler,
    section,
)
from tests.unit.test_fuzz_handler import BIG_TABLE, FUZZ, HANDLERS, plain_query, valid_queries
from tests.unit.test_policy import _cluster, topology, web

Addr = tuple[str, int]
EAST, WEST, NORTH, NOWHERE = "127.1.1.7", "127.2.3.7", "127.3.0.7", "127.9.9.9"
WEB = b"\x03web\x04shop\x03svc\x0aclusterset\x05local\x00"
LOCAL_CLUSTERS = [
    _cluster("east", "eu", ["eu-a"], [("127.1.0.0/16", "eu-a")]),
    _cluster("west", "eu", ["eu-c"], [("127.2.0.0/16", "eu-c")]),
    _cluster("north", "us", ["us-a"], [("127.3.0.0/16", None)]),
]


class Wire:
    """A real UdpListener over ``handler`` on 127.0.0.1, its handler calls counted."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls = 0
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        self.address = sock.getsockname()
        self.stats = ServerStats()
        self.listener = UdpListener(sock, self, self.stats, handler.front)
        self.clients: dict[str, socket.socket] = {}

    def handle_udp(self, data: bytes, addr: Addr | None = None) -> bytes | None:
        self.calls += 1
        return self.handler.handle_udp(data, addr)

    def handle_tcp(self, data: bytes, addr: Addr | None = None) -> bytes | None:
        raise AssertionError("a UDP listener never answers over TCP")

    def client(self, host: str) -> socket.socket:
        if host not in self.clients:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((host, 0))
            sock.setblocking(False)
            self.clients[host] = sock
        return self.clients[host]

    def ask(self, data: bytes, host: str) -> tuple[bytes, Addr]:
        """Send ``data`` from ``host``, let the listener read, return (reply, client address)."""
        client = self.client(host)
        client.sendto(data, self.address)
        deadline = time.monotonic() + 5
        while True:
            self.listener.readable()
            try:
                return client.recv(65535), client.getsockname()
            except BlockingIOError:
                assert time.monotonic() < deadline, "no reply"

    def close(self) -> None:
        self.listener.close()
        for sock in self.clients.values():
            sock.close()


@pytest.fixture
def wires() -> Iterator[Callable[[Handler], Wire]]:
    made: list[Wire] = []

    def make(handler: Handler) -> Wire:
        made.append(Wire(handler))
        return made[-1]

    yield make
    for wire in made:
        wire.close()


def located(**services: int) -> Federation:
    settings = topology(clusters=LOCAL_CLUSTERS)
    data = {c: [web(c, ready=services.get(c, 2))] for c in ("east", "west", "north")}
    return federation(data, settings=settings, locator=locator_from(settings))


@FUZZ
@given(data=valid_queries(), ids=st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=4))
def test_every_reply_from_the_listener_equals_the_full_path(data: bytes,
                                                            ids: list[int]) -> None:
    for handler in HANDLERS:
        wire = Wire(handler)
        try:
            for qid in [int.from_bytes(data[:2], "big"), *ids]:
                query = qid.to_bytes(2, "big") + data[2:]
                reply, client = wire.ask(query, NOWHERE)
                assert reply == handler.handle_full(query, tcp=False, addr=client)
        finally:
            wire.close()


@pytest.mark.parametrize("qtype", [1, 28, 33])
def test_clients_of_each_class_get_their_own_answers_from_the_front(
        qtype: int, wires: Callable[[Handler], Wire]) -> None:
    handler = make_handler(located().table)
    wire = wires(handler)
    replies: dict[str, set[bytes]] = {}
    for rd in (False, True):
        for qid in range(0, 600, 7):
            for host in (EAST, WEST, NORTH, NOWHERE, EAST):
                query = plain_query(qid, WEB, qtype, rd=rd, edns=(1232, False))
                reply, client = wire.ask(query, host)
                assert reply == handler.handle_full(query, tcp=False, addr=client)
                replies.setdefault(host, set()).add(reply[2:])
    # Four classes, each its own front, and the front answered nearly everything.
    assert len({id(f) for f in handler.front.by_source.values()}) == 4
    assert wire.calls <= 16
    if qtype == 1:  # the clients really were told different things
        assert len({frozenset(r) for r in replies.values()}) == 4


def test_a_repeated_query_is_answered_without_the_handler(
        wires: Callable[[Handler], Wire]) -> None:
    handler = make_handler(located().table)
    wire = wires(handler)
    query = plain_query(1, WEB, 1, rd=True, edns=None)
    wire.ask(query, EAST)
    assert wire.calls == 1
    for qid in range(2, 50):
        again = qid.to_bytes(2, "big") + query[2:]
        reply, _ = wire.ask(again, EAST)
        assert reply[:2] == again[:2]
    assert wire.calls == 1


def test_a_table_change_reaches_the_next_repeated_query(
        wires: Callable[[Handler], Wire]) -> None:
    from tests.unit.test_registry import DB, db, initial
    from tests.unit.test_registry import web as registry_web

    fed = initial()
    handler = make_handler(fed.table)
    wire = wires(handler)
    query = dns.message.make_query(DB, "A", id=7)
    query.flags = 0
    data = query.to_wire()

    def addresses() -> list[str]:
        reply, _ = wire.ask(data, NOWHERE)
        return [rr.split()[-1] for rr in section(dns.message.from_wire(reply))]

    assert addresses() == addresses() == ["10.2.0.1"]
    calls = wire.calls
    assert addresses() == ["10.2.0.1"] and wire.calls == calls  # from the front
    fed.load("east", [registry_web("10.96.1.10"), db(Endpoint("10.2.0.9", hostname="db-0"))])
    fed.sync()
    assert not handler.front.by_source, "the change emptied the front at once"
    assert addresses() == ["10.2.0.9"]


def test_a_new_size_a_new_table_and_the_acl_each_stop_the_front(
        wires: Callable[[Handler], Wire]) -> None:
    from tests.unit.test_registry import initial

    handler = make_handler(initial().table)
    wire = wires(handler)
    query = plain_query(3, WEB, 1, rd=True, edns=(4096, False))

    def warm() -> None:
        wire.ask(query, NOWHERE)
        wire.ask(query, NOWHERE)
        assert handler.front.by_source

    warm()
    handler.use(handler.table, udp_payload_size=512)
    assert not handler.front.by_source
    reply, client = wire.ask(query, NOWHERE)
    assert reply == handler.handle_full(query, tcp=False, addr=client)
    assert dns.message.from_wire(reply).payload == 512

    warm()
    handler.use(initial().table, udp_payload_size=512)
    assert not handler.front.by_source

    warm()
    limited = federation({"east": [], "west": []}, dns={"allow": ["10.0.0.0/8"]})
    handler.limits.configure(limited.settings.dns)  # what a reload does
    handler.use(limited.table, udp_payload_size=512)
    assert handler.limits.active
    assert not handler.front.by_source
    calls = wire.calls
    for _ in range(3):
        reply, _ = wire.ask(query, NOWHERE)
        assert reply[3] & 0xF == 5  # REFUSED, every time, by the handler
    assert wire.calls == calls + 3
    assert not handler.front.by_source


def test_a_tcp_query_never_gets_the_answer_cut_for_udp(
        wires: Callable[[Handler], Wire]) -> None:
    handler = make_handler(BIG_TABLE)
    wire = wires(handler)
    name = b"\x04huge\x04bulk\x03svc\x0aclusterset\x05local\x00"
    query = plain_query(9, name, 1, rd=False, edns=None)
    for _ in range(2):
        udp, _ = wire.ask(query, NOWHERE)
        assert dns.message.from_wire(udp).flags & dns.flags.TC
    assert wire.calls == 1  # the cut answer came from the front the second time
    assert handler.truncated_total() == 2
    tcp = handle(handler, query, True, (NOWHERE, 53))
    assert tcp == handler.handle_full(query, tcp=True, addr=(NOWHERE, 53))
    assert tcp is not None and not dns.message.from_wire(tcp).flags & dns.flags.TC
    assert struct.unpack_from("!H", tcp, 6)[0] > 0  # the answers are there


def test_the_first_query_is_timed_then_one_after_each_interval() -> None:
    async def run() -> None:
        handler = make_handler(located().table)
        wire = Wire(handler)
        wire.listener.start(asyncio.get_running_loop())
        latency = wire.stats.latency["udp"]
        try:
            query = plain_query(1, WEB, 1, rd=True, edns=None)
            client = wire.client(EAST)
            deadline = time.monotonic() + 5
            while latency.count < 3:
                client.sendto(query, wire.address)
                await asyncio.sleep(0.001)  # the loop reads; the sampling timer fires
                assert time.monotonic() < deadline, "samples stopped being taken"
            # Many more queries than samples: the rest came from the front, untimed.
            assert wire.calls == 3
        finally:
            wire.close()
    asyncio.run(run())


def held(handler: Handler) -> int:
    """What the fronts really hold, counted as the handler counts it."""
    return sum(front_module.entry_size(k, v[0]) for f in handler.front.fronts
               for k, v in f.items())


@pytest.mark.parametrize(("entries", "size"), [(50, front_module.FRONT_BYTES), (10**6, 40_000)])
def test_random_case_spellings_never_grow_the_front_beyond_its_bounds(
        monkeypatch: pytest.MonkeyPatch, entries: int, size: int) -> None:
    # 0x20 resolvers spell every query differently: each spelling is a new entry,
    # and a rotating answer keeps all its variants in it.
    monkeypatch.setattr(front_module, "FRONT_SIZE", entries)
    monkeypatch.setattr(front_module, "FRONT_BYTES", size)
    handler = make_handler(located(east=3, west=3, north=3).table)
    rng = random.Random(5)
    peak = 0
    for qid in range(3000):
        spelled = bytes(c ^ 0x20 if 0x61 <= c <= 0x7A and rng.random() < 0.5 else c for c in WEB)
        for addr in ((EAST, 53), (NOWHERE, 53)):
            query = plain_query(qid, spelled, 1, rd=True, edns=(1232, False))
            assert handle(handler, query, False, addr) == handler.handle_full(
                query, tcp=False, addr=addr)
        assert handler.front.size == held(handler) <= size
        assert max(len(f) for f in handler.front.fronts) <= entries
        peak = max(peak, handler.front.size)
    assert peak > size // 2 or entries == 50  # the bound was reached, not just respected
