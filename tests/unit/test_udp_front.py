"""The UDP transport's own front memo: what it answers without the handler must be exact.

The transport (``feddns.dns.server._UdpProtocol``) answers a repeated query from
the handler's front memo without calling the handler. These tests drive the
real protocol object on a real event loop; only the socket is replaced, by a
transport that records what would be sent. Properties:

* every reply, first or repeated, from any client class and with any ID, is
  byte for byte what the strict full path gives for that query and client;
* a repeated query really is answered without the handler (else the first
  property would test nothing);
* any change to the table, a new table, a new advertised size, or the ACL/RRL
  switched on stops the front from answering at once;
* a TCP query never gets an answer cut for UDP.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import dns.flags
import dns.message
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feddns.dns.handling import Handler
from feddns.dns.server import ServerStats, _UdpProtocol
from tests.unit.dnscase import section
from tests.unit.test_fuzz_handler import FUZZ, HANDLERS, plain_query, valid_queries
from tests.unit.test_policy import located, web

Addr = tuple[str, int]
EAST = ("10.1.1.7", 5300)  # east, zone eu-a
WEST = ("10.2.3.7", 5300)  # west, zone eu-c
NOWHERE = ("192.168.0.1", 5300)  # placed nowhere: every cluster
WEB = b"\x03web\x04shop\x03svc\x0aclusterset\x05local\x00"


class Recorder(asyncio.DatagramTransport):
    """Stands in for the socket: keeps what would be sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[bytes, Addr]] = []

    def sendto(self, data: bytes, addr: Addr | None = None) -> None:  # type: ignore[override]
        assert addr is not None
        self.sent.append((data, addr))

    def is_closing(self) -> bool:
        return False


class Wire:
    """A UDP protocol over ``handler`` whose handler calls are counted."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls = 0
        self.recorder = Recorder()
        self.protocol = _UdpProtocol(self._handle, ServerStats(), handler.udp_front)
        self.protocol.connection_made(self.recorder)

    def _handle(self, data: bytes, tcp: bool, addr: Addr | None) -> bytes | None:
        self.calls += 1
        return self.handler.handle(data, tcp, addr)

    def ask(self, data: bytes, addr: Addr) -> bytes | None:
        before = len(self.recorder.sent)
        self.protocol.datagram_received(data, addr)
        if len(self.recorder.sent) == before:
            return None
        reply, to = self.recorder.sent[-1]
        assert to == addr
        return reply

    def close(self) -> None:
        self.protocol.connection_lost(None)


def on_loop(body: Callable[[], None]) -> None:
    """Run ``body`` on a running event loop (the protocol arms its sampling timer there)."""
    async def run() -> None:
        body()
    asyncio.run(run())


@FUZZ
@given(data=valid_queries(), ids=st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=4))
def test_every_reply_from_the_transport_equals_the_full_path(data: bytes,
                                                             ids: list[int]) -> None:
    def body() -> None:
        for handler in HANDLERS:
            wire = Wire(handler)
            for qid in [int.from_bytes(data[:2], "big"), *ids]:
                query = qid.to_bytes(2, "big") + data[2:]
                assert wire.ask(query, EAST) == handler.handle_full(query, False, EAST)
            wire.close()
    on_loop(body)


def located_handler() -> Handler:
    fed = located({c: [web(c, ready=2)] for c in ("east", "west", "south", "north")})
    return Handler(fed.table)


@pytest.mark.parametrize("qtype", [1, 28, 33])
def test_clients_of_each_class_get_their_own_answers_from_the_front(qtype: int) -> None:
    def body() -> None:
        handler = located_handler()
        wire = Wire(handler)
        for rd in (False, True):
            for qid in range(0, 600, 7):
                for addr in (EAST, WEST, NOWHERE, EAST):
                    query = plain_query(qid, WEB, qtype, rd=rd, edns=(1232, False))
                    assert wire.ask(query, addr) == handler.handle_full(query, False, addr)
        # Three classes, and the front answered nearly everything.
        assert len({id(f) for f in handler.udp_front.by_source.values()}) == 3
        assert wire.calls <= 12
        wire.close()
    on_loop(body)


def test_a_repeated_query_is_answered_without_the_handler() -> None:
    def body() -> None:
        handler = located_handler()
        wire = Wire(handler)
        query = plain_query(1, WEB, 1, rd=True, edns=None)
        first = wire.ask(query, EAST)
        assert wire.calls == 1
        for qid in range(2, 50):
            again = qid.to_bytes(2, "big") + query[2:]
            reply = wire.ask(again, EAST)
            assert reply is not None and reply[:2] == again[:2]
        assert wire.calls == 1
        assert first is not None
        wire.close()
    on_loop(body)


def test_a_table_change_reaches_the_next_repeated_query() -> None:
    from feddns.model.services import Endpoint
    from tests.unit.test_registry import DB, db, initial
    from tests.unit.test_registry import web as registry_web

    def body() -> None:
        fed = initial()
        handler = Handler(fed.table)
        wire = Wire(handler)
        query = dns.message.make_query(DB, "A", id=7)
        query.flags = 0
        data = query.to_wire()

        def addresses() -> list[str]:
            reply = wire.ask(data, NOWHERE)
            assert reply is not None
            return sorted(rr.split()[-1] for rr in section(dns.message.from_wire(reply)))

        assert addresses() == addresses() == ["10.2.0.1"]
        calls = wire.calls
        assert addresses() == ["10.2.0.1"] and wire.calls == calls  # from the front
        fed.load("east", [registry_web("10.96.1.10"), db(Endpoint("10.2.0.9", hostname="db-0"))])
        fed.sync()
        assert not handler.udp_front.by_source, "the change emptied the front at once"
        assert addresses() == ["10.2.0.9"]
        wire.close()
    on_loop(body)


def test_a_new_table_a_new_size_and_the_acl_each_stop_the_front() -> None:
    from tests.unit.dnscase import federation
    from tests.unit.test_registry import initial

    def body() -> None:
        fed = initial()
        handler = Handler(fed.table)
        wire = Wire(handler)
        query = plain_query(3, WEB, 1, rd=True, edns=(4096, False))

        def warm() -> None:
            wire.ask(query, NOWHERE)
            wire.ask(query, NOWHERE)
            assert handler.udp_front.by_source

        warm()
        handler.udp_payload_size = 512
        assert not handler.udp_front.by_source
        reply = wire.ask(query, NOWHERE)
        assert reply == handler.handle_full(query, False, NOWHERE)
        assert dns.message.from_wire(reply).payload == 512

        warm()
        handler.table = initial().table
        assert not handler.udp_front.by_source

        warm()
        acl = federation({"east": [], "west": []}, dns={"allow": ["10.0.0.0/8"]})
        handler.table = acl.table
        assert handler.guard is not None
        assert not handler.udp_front.by_source
        calls = wire.calls
        for _ in range(3):
            reply = wire.ask(query, NOWHERE)
            assert reply is not None and reply[3] & 0xF == 5  # REFUSED, every time
        assert wire.calls == calls + 3
        assert not handler.udp_front.by_source
        wire.close()
    on_loop(body)


def test_a_tcp_query_never_gets_the_answer_cut_for_udp() -> None:
    from tests.unit.test_fuzz_handler import BIG_TABLE

    def body() -> None:
        handler = Handler(BIG_TABLE)
        wire = Wire(handler)
        name = b"\x04huge\x04bulk\x03svc\x0aclusterset\x05local\x00"
        query = plain_query(9, name, 1, rd=False, edns=None)
        for _ in range(2):
            udp = wire.ask(query, NOWHERE)
            assert udp is not None and dns.message.from_wire(udp).flags & dns.flags.TC
        assert handler.truncated_total() == 2
        tcp = handler.handle(query, True, NOWHERE)
        assert tcp == handler.handle_full(query, True, NOWHERE)
        assert tcp is not None and not dns.message.from_wire(tcp).flags & dns.flags.TC
        assert struct.unpack_from("!H", tcp, 6)[0] > 0  # the answers are there
        wire.close()
    on_loop(body)
