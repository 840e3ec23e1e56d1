"""The TCP reader (``feddns.dns.tcp.TcpConnection``) driven without sockets.

A real :class:`~feddns.dns.server.DnsServer` (never started) owns the
connections; each connection gets a fake transport that records what is
written and a fake loop whose clock the test moves. Properties:

* whatever way a stream of pipelined queries is cut into segments (one octet at
  a time, several messages in one segment, random cuts), the answers are the
  handler's full path over TCP (``handle_full(..., tcp=True)``), byte for byte,
  in order, even when the same queries were asked over UDP first and the front
  memo holds answers cut to fit UDP;
* the timers: handshake, idle (a partial length prefix does not reset it), I/O
  (a message whose length arrived must complete in time, however slowly it
  trickles), each counted by kind, with one timer per connection;
* a length prefix of 0 closes the connection after the answers due;
* back-pressure: a client that does not read stops being read, its queries
  wait, are answered when it drains, and it is aborted if it does not drain
  within the I/O timeout;
* the connection cap sheds at accept; a handler that raises closes only that
  connection; a response (QR=1) is not answered.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feddns.config import DnsConfig
from feddns.dns.handling import Handler
from feddns.dns.limiting import Limits
from feddns.dns.server import DnsServer
from feddns.dns.tcp import WRITE_BUFFER_HIGH, TcpConnection
from tests.unit.dnscase import make_handler
from tests.unit.test_fuzz_handler import BIG_TABLE, FUZZ, HANDLERS, TABLE, valid_queries

PEER = ("127.0.0.1", 40000)
SOA_QUERY = (struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 0)
             + b"\x0aclusterset\x05local\x00" + struct.pack("!HH", 6, 1))


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: FakeTimer) -> bool:
        return self.when < other.when


class FakeLoop:
    """A clock the test moves and the timers it fires (no real loop, no sleeping)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[FakeTimer] = []
        self.scheduled: list[Callable[[], object]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object]) -> FakeTimer:
        timer = FakeTimer(when, callback)
        heapq.heappush(self.timers, timer)
        self.scheduled.append(callback)
        return timer

    def call_later(self, delay: float, callback: Callable[[], object]) -> FakeTimer:
        return self.call_at(self.now + delay, callback)

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every timer due on the way, in order."""
        end = self.now + seconds
        while self.timers and self.timers[0].when <= end:
            timer = heapq.heappop(self.timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, timer.when)
            timer.callback()
        self.now = end

    def pending(self) -> int:
        return sum(not t.cancelled for t in self.timers)


class FakeTransport:
    """Records writes; a client that does not read makes the buffer grow (back-pressure)."""

    def __init__(self, *, reading_client: bool = True) -> None:
        self.protocol: TcpConnection | None = None
        self.written = bytearray()
        self.buffered = 0
        self.reading_client = reading_client
        self.high = 65536
        self.writing_paused = False
        self.reading = True
        self.closed: str | None = None

    def get_extra_info(self, name: str) -> Any:
        return PEER if name == "peername" else None

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = high if high is not None else self.high

    def write(self, data: bytes) -> None:
        assert self.closed is None, "written after close"
        self.written += data
        if not self.reading_client:
            self.buffered += len(data)
            if self.buffered > self.high and not self.writing_paused:
                self.writing_paused = True
                assert self.protocol is not None
                self.protocol.pause_writing()

    def drain(self) -> None:
        """The client reads everything at last."""
        self.buffered = 0
        if self.writing_paused:
            self.writing_paused = False
            assert self.protocol is not None
            self.protocol.resume_writing()

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed is not None

    def _lose(self, how: str) -> None:
        if self.closed is None:
            self.closed = how
            assert self.protocol is not None
            self.protocol.connection_lost(None)

    def close(self) -> None:
        self._lose("close")

    def abort(self) -> None:
        self._lose("abort")


def make_server(handler: Handler, **timeouts: float) -> tuple[DnsServer, FakeLoop]:
    limits = Limits(DnsConfig(**{k: v for k, v in timeouts.items()
                                 if k in ("tcp_handshake_timeout", "max_tcp_clients")}))
    server = DnsServer(handler, [], limits=limits, front=handler.front,
                       tcp_idle_timeout=timeouts.get("tcp_idle_timeout", 10.0),
                       tcp_io_timeout=timeouts.get("tcp_io_timeout", 2.0))
    loop = FakeLoop()
    server.loop = loop  # type: ignore[assignment]
    return server, loop


def connect(server: DnsServer, **kwargs: bool) -> tuple[TcpConnection, FakeTransport]:
    conn = TcpConnection(server)
    transport = FakeTransport(**kwargs)
    transport.protocol = conn
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


def framed(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


def unframe(stream: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(stream):
        (length,) = struct.unpack_from("!H", stream, pos)
        out.append(stream[pos + 2 : pos + 2 + length])
        pos += 2 + length
    assert pos == len(stream), "a partial answer was written"
    return out


def segments(stream: bytes, how: str | list[int]) -> list[bytes]:
    """``stream`` cut one octet at a time, whole, or at the given sizes (the rest last)."""
    if how == "octets":
        return [stream[i : i + 1] for i in range(len(stream))]
    if how == "whole":
        return [stream]
    assert isinstance(how, list)
    out, pos = [], 0
    for size in how:
        if pos >= len(stream):
            break
        out.append(stream[pos : pos + size])
        pos += size
    if pos < len(stream):
        out.append(stream[pos:])
    return out


# --- pipelining, framing and the front memo --------------------------------------------


@settings(FUZZ, max_examples=min(FUZZ.max_examples, 200))
@given(queries=st.lists(valid_queries(), min_size=1, max_size=12),
       how=st.one_of(st.sampled_from(["octets", "whole"]),
                     st.lists(st.integers(1, 300), max_size=20)),
       handler_index=st.integers(0, len(HANDLERS) - 1),
       asked_over_udp=st.booleans())
def test_pipelined_queries_cut_anyhow_get_the_full_paths_tcp_answers_in_order(
        queries: list[bytes], how: str | list[int], handler_index: int,
        asked_over_udp: bool) -> None:
    handler = HANDLERS[handler_index]
    if asked_over_udp:
        for query in queries:  # fills the front memo, answers cut for UDP included
            handler.handle_udp(query, PEER)
    expected = [handler.handle_full(q, tcp=True, addr=PEER) for q in queries]
    server, _loop = make_server(handler)
    conn, transport = connect(server)
    for segment in segments(b"".join(framed(q) for q in queries), how):
        conn.data_received(segment)
    assert unframe(bytes(transport.written)) == [e for e in expected if e is not None]
    assert transport.closed is None
    assert conn.pending == b""


def test_a_repeated_query_is_answered_from_the_front_without_the_handler() -> None:
    handler = make_handler(TABLE)
    server, loop = make_server(handler)
    conn, transport = connect(server)
    loop.advance(1.0)  # no sample due: the first query would be timed otherwise
    server.tcp_sampled()
    conn.data_received(framed(SOA_QUERY))
    first = bytes(transport.written)
    calls = 0
    real = handler.handle_tcp

    def counting(data: bytes, addr: tuple[str, int] | None = None) -> bytes | None:
        nonlocal calls
        calls += 1
        return real(data, addr)

    server.handler = handler
    handler.handle_tcp = counting  # type: ignore[method-assign]
    again = SOA_QUERY[:1] + b"\x99" + SOA_QUERY[2:]  # another ID
    conn.data_received(framed(again) * 3)
    assert calls == 0
    answers = unframe(bytes(transport.written)[len(first):])
    assert answers == [handler.handle_full(again, tcp=True, addr=PEER)] * 3


def test_a_tcp_query_never_takes_a_front_entry_cut_for_udp() -> None:
    handler = make_handler(BIG_TABLE, udp_payload_size=512)
    query = (struct.pack("!HHHHHH", 7, 0, 1, 0, 0, 0)
             + b"\x04huge\x04bulk\x03svc\x0aclusterset\x05local\x00" + struct.pack("!HH", 1, 1))
    udp = handler.handle_udp(query, PEER)
    assert udp is not None and udp[2] & 0x02  # TC=1 over UDP, and now in the front
    server, _loop = make_server(handler)
    conn, transport = connect(server)
    conn.data_received(framed(query))
    (answer,) = unframe(bytes(transport.written))
    assert answer == handler.handle_full(query, tcp=True, addr=PEER)
    assert not answer[2] & 0x02 and struct.unpack_from("!H", answer, 6)[0] == 90


def test_a_response_gets_no_answer_and_the_next_query_does() -> None:
    server, _loop = make_server(make_handler(TABLE))
    conn, transport = connect(server)
    response = bytearray(SOA_QUERY)
    response[2] |= 0x80
    conn.data_received(framed(bytes(response)) + framed(SOA_QUERY))
    (answer,) = unframe(bytes(transport.written))
    assert answer[:2] == SOA_QUERY[:2]


def test_a_handler_that_raises_closes_only_its_connection() -> None:
    handler = make_handler(TABLE)
    server, _loop = make_server(handler)

    def broken(data: bytes, addr: tuple[str, int] | None = None) -> bytes | None:
        raise RuntimeError("boom")

    conn, transport = connect(server)
    server.handler = type("Broken", (), {"handle_tcp": staticmethod(broken)})()  # type: ignore[assignment]
    conn.data_received(framed(SOA_QUERY))
    assert transport.closed == "close"
    assert server.stats.errors["tcp_RuntimeError"] == 1
    assert server.stats.tcp_connections == 0
    server.handler = handler
    other, other_transport = connect(server)
    other.data_received(framed(SOA_QUERY))
    assert unframe(bytes(other_transport.written))


def test_a_length_of_zero_closes_after_the_answers_due() -> None:
    server, _loop = make_server(make_handler(TABLE))
    conn, transport = connect(server)
    conn.data_received(framed(SOA_QUERY) + b"\x00\x00" + framed(SOA_QUERY))
    assert len(unframe(bytes(transport.written))) == 1
    assert transport.closed == "close"


# --- timers ----------------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed_by_the_handshake_timeout() -> None:
    server, loop = make_server(make_handler(TABLE), tcp_handshake_timeout=1.0,
                               tcp_idle_timeout=3.0)
    _conn, transport = connect(server)
    loop.advance(0.99)
    assert transport.closed is None
    loop.advance(0.02)
    assert transport.closed == "close"
    assert dict(server.stats.tcp_timeouts) == {"handshake": 1}


def test_queries_keep_a_connection_open_and_silence_closes_it_after_the_idle_timeout() -> None:
    server, loop = make_server(make_handler(TABLE), tcp_idle_timeout=0.5)
    conn, transport = connect(server)
    for _ in range(1000):  # a query every 6 ms for 6 s, then one 0.4 s later
        loop.advance(0.006)
        conn.data_received(framed(SOA_QUERY))
    loop.advance(0.4)
    conn.data_received(framed(SOA_QUERY))
    assert transport.closed is None
    # One timer, re-armed when it fires before the deadline: about once per idle
    # timeout, not once per query.
    assert sum(cb == conn._expired for cb in loop.scheduled) <= 1 + 6.4 / 0.5 + 1
    loop.advance(0.49)
    assert transport.closed is None
    loop.advance(0.02)
    assert transport.closed == "close"
    assert dict(server.stats.tcp_timeouts) == {"idle": 1}


def test_a_half_sent_length_prefix_does_not_reset_the_idle_timeout() -> None:
    server, loop = make_server(make_handler(TABLE), tcp_idle_timeout=0.5)
    conn, transport = connect(server)
    conn.data_received(framed(SOA_QUERY))
    loop.advance(0.4)
    conn.data_received(b"\x00")
    loop.advance(0.11)
    assert transport.closed == "close"
    assert dict(server.stats.tcp_timeouts) == {"idle": 1}


def test_a_message_trickling_in_is_closed_by_the_io_timeout_from_its_length() -> None:
    server, loop = make_server(make_handler(TABLE), tcp_idle_timeout=10.0, tcp_io_timeout=0.3)
    conn, transport = connect(server)
    conn.data_received(framed(SOA_QUERY))
    conn.data_received(b"\xff\xff")  # announces 65,535 octets
    for _ in range(5):  # an octet every 0.05 s does not buy more time
        loop.advance(0.05)
        conn.data_received(b"\x00")
    assert transport.closed is None
    loop.advance(0.06)
    assert transport.closed == "close"
    assert dict(server.stats.tcp_timeouts) == {"io": 1}


def test_a_complete_message_is_not_cut_by_the_io_timeout() -> None:
    server, loop = make_server(make_handler(TABLE), tcp_idle_timeout=10.0, tcp_io_timeout=0.3)
    conn, transport = connect(server)
    stream = framed(SOA_QUERY)
    for octet in segments(stream, "octets"):  # all of it within 0.3 s of its length
        loop.advance(0.25 / len(stream))
        conn.data_received(octet)
    loop.advance(1.0)
    assert transport.closed is None
    assert len(unframe(bytes(transport.written))) == 1


# --- back-pressure and the cap -----------------------------------------------------------


def test_a_client_that_does_not_read_is_paused_then_answered_when_it_drains() -> None:
    server, loop = make_server(make_handler(TABLE), tcp_io_timeout=2.0)
    conn, transport = connect(server, reading_client=False)
    count = 3 * WRITE_BUFFER_HIGH // 100  # answers far beyond the bound
    conn.data_received(framed(SOA_QUERY) * count)
    assert not transport.reading, "reading paused while the answers do not drain"
    assert conn.pending, "the rest of the queries wait"
    waiting = len(unframe(bytes(transport.written)))
    assert waiting < count
    loop.advance(1.0)
    transport.drain()
    while transport.writing_paused or not transport.reading:
        transport.drain()
    assert len(unframe(bytes(transport.written))) == count
    assert transport.reading and transport.closed is None


def test_a_client_that_never_drains_is_aborted_after_the_io_timeout() -> None:
    server, loop = make_server(make_handler(TABLE), tcp_io_timeout=2.0, tcp_idle_timeout=10.0)
    conn, transport = connect(server, reading_client=False)
    conn.data_received(framed(SOA_QUERY) * (3 * WRITE_BUFFER_HIGH // 100))
    loop.advance(1.9)
    assert transport.closed is None
    loop.advance(0.2)
    assert transport.closed == "abort"
    assert dict(server.stats.tcp_timeouts) == {"io": 1}


@pytest.mark.parametrize("cap", [1, 3])
def test_connections_beyond_the_cap_are_shed_at_accept(cap: int) -> None:
    server, loop = make_server(make_handler(TABLE), max_tcp_clients=cap)
    kept = [connect(server) for _ in range(cap)]
    _shed, shed_transport = connect(server)
    assert shed_transport.closed == "abort"
    stats = server.stats
    assert (stats.tcp_connections, stats.tcp_accepted, stats.tcp_shed, stats.tcp_peak) == \
        (cap, cap, 1, cap)
    kept[0][1].close()
    assert stats.tcp_connections == cap - 1
    _again, again_transport = connect(server)
    assert again_transport.closed is None
    assert loop.pending() == cap  # one timer per open connection
