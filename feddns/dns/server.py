"""UDP and TCP transports for the query handler (RFC 1035 §4.2, RFC 7766).

Why it exists: sockets, timeouts and connection bookkeeping live here and
nowhere else; the handler only turns bytes into bytes (:class:`Handles`: one
entry point per transport). Rules kept:

* UDP and TCP listen on the same address and port (port 0 picks one free
  port for both, which the tests use);
* the UDP receive buffer is enlarged (the kernel default drops queries under
  load, see bench/RESULTS.md);
* TCP: pipelined queries on one connection are answered as they arrive; a
  connection idle for ``tcp_idle_timeout`` is closed (RFC 7766 §6.2.3); a
  message must arrive completely within ``tcp_io_timeout`` (slow-loris); the
  first complete query must arrive within ``tcp_handshake_timeout`` of the
  accept (Knot); a length prefix of 0 closes the connection;
* at most ``max_tcp_clients`` connections are open at once (RFC 7766 §10,
  CVE-2018-5743): one beyond it is accepted and closed at once, before a
  reader, writer or task exists for it; the decision is taken when the
  connection is made, so the count never exceeds the cap. Each close by a
  timeout is counted by kind, each shed connection too, and the peak of open
  connections is kept;
* the limits are read from the :class:`~feddns.dns.limiting.Limits` the app
  hands to both the handler and the server, on every accept, so a reload
  changes them for new connections;
* one bad packet never kills a transport: errors are caught per packet,
  counted and logged once per kind;
* UDP is read by the loop's reader callback with plain ``recvfrom``, up to
  ``BATCH`` datagrams per wake-up (:class:`UdpListener`), and a repeated
  query is answered there, from the front memo the app hands to both
  (:class:`~feddns.dns.front.FrontMemo`), without calling the handler: two
  dict lookups, a count and a send. Everything else goes to the handler;
* the first query after every ``SAMPLE_INTERVAL`` is timed (handler and
  send), per transport, into ``ServerStats.latency``: two clock reads per
  query would cost more than everything else the metrics add. A UDP sample
  is taken by swapping in an empty front map, so the hot path has no check
  for it at all. An idle server arms the next sample once and then sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections import Counter
from dataclasses import dataclass, field
from time import perf_counter
from typing import Protocol

from feddns.dns.front import FrontEntry, FrontMemo
from feddns.dns.limiting import Limits
from feddns.histogram import LATENCY_BOUNDS, Buckets

log = logging.getLogger(__name__)


class Handles(Protocol):
    """What the transports call: the handler, or a wrapper around it (the query log)."""

    def handle_udp(self, data: bytes, addr: tuple[str, int] | None = None) -> bytes | None:
        """Answer one datagram; None: send nothing."""

    def handle_tcp(self, data: bytes, addr: tuple[str, int] | None = None) -> bytes | None:
        """Answer one message of a TCP connection; None: send nothing."""


TCP_BACKLOG = 1024
"""Pending TCP connections the kernel queues before accept (RFC 7766 §6.2.2: many clients)."""

SAMPLE_INTERVAL = 0.01
"""Seconds between two queries timed for the latency histogram (per transport)."""

RECV_SIZE = 65535
"""Bytes read per datagram: any UDP datagram whole, as the handler must see it."""
BATCH = 64
"""Datagrams read per readiness callback before the event loop gets a turn."""

_SAMPLE_DUE: dict[str, dict[bytes, FrontEntry]] = {}
"""An always-empty front map: swapped in when a UDP sample is due, so the next query
misses the front and is timed on the slow path."""


def _latency() -> dict[str, Buckets]:
    return {"udp": Buckets(LATENCY_BOUNDS), "tcp": Buckets(LATENCY_BOUNDS)}


@dataclass(slots=True)
class ServerStats:
    """Transport-level counters (the handler counts protocol events itself)."""

    errors: Counter[str] = field(default_factory=Counter)
    tcp_connections: int = 0
    tcp_accepted: int = 0
    """TCP connections taken into service (shed ones are not counted here)."""
    tcp_peak: int = 0
    """Most TCP connections open at once since start."""
    tcp_shed: int = 0
    """TCP connections closed at accept because ``max_tcp_clients`` were open."""
    tcp_timeouts: Counter[str] = field(default_factory=Counter)
    """TCP connections closed by a timeout: ``handshake``, ``idle`` or ``io``."""
    latency: dict[str, Buckets] = field(default_factory=_latency)
    """Sampled seconds from a query's arrival in Python to its answer sent, by transport."""


class UdpListener:
    """One UDP socket, drained by the event loop's reader callback.

    No asyncio transport: the loop calls :meth:`readable` when the socket has
    datagrams, and it reads up to ``BATCH`` of them with plain ``recvfrom``
    and answers each with ``sendto``. That costs less per query than a
    datagram protocol (uvloop's included: no protocol callback, no context
    copy per send; see bench/RESULTS.md) and keeps every query on the loop's
    thread. A send that would block drops that answer (counted as
    ``udp_send_EAGAIN``): the client retries, memory stays bounded.
    """

    def __init__(self, sock: socket.socket, handler: Handles, stats: ServerStats,
                 front: FrontMemo | None) -> None:
        self.sock = sock
        self.handle = handler.handle_udp
        self.stats = stats
        self.front_map: dict[str, dict[bytes, FrontEntry]] = {}
        self.counts: list[int] = []
        self.by_source = _SAMPLE_DUE
        """:attr:`front_map`, or :data:`_SAMPLE_DUE` while a sample is due (the first query)."""
        self.sample_timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.set_front(front)

    def set_front(self, front: FrontMemo | None) -> None:
        """Answer repeated queries from ``front`` (None: every query goes to the handler)."""
        self.front_map = front.by_source if front is not None else {}
        self.counts = front.counts if front is not None else []
        if self.by_source is not _SAMPLE_DUE:
            self.by_source = self.front_map

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Have ``loop`` call :meth:`readable` whenever the socket has datagrams."""
        self.loop = loop
        loop.add_reader(self.sock.fileno(), self.readable)

    def close(self) -> None:
        """Stop reading and close the socket."""
        if self.sample_timer is not None:
            self.sample_timer.cancel()
            self.sample_timer = None
        if self.loop is not None and self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    # The hot path: kept flat, every attribute lookup here is paid per query.
    def readable(self) -> None:
        """Read and answer the datagrams waiting (at most ``BATCH``, then the loop's turn)."""
        recvfrom = self.sock.recvfrom
        sendto = self.sock.sendto
        by_source = self.by_source
        counts = self.counts
        for _ in range(BATCH):
            try:
                data, addr = recvfrom(RECV_SIZE)
            except BlockingIOError:
                return  # drained
            except OSError:  # an ICMP error for an earlier answer (port unreachable...)
                self.stats.errors["udp_icmp"] += 1
                continue
            front = by_source.get(addr[0])
            if front is not None:
                hit = front.get(data[2:])
                if hit is not None:
                    counts[hit[1]] += 1
                    tail = hit[0]
                    try:
                        if tail.__class__ is bytes:
                            sendto(data[:2] + tail, addr)
                        else:  # a rotating answer: the variant follows the query ID
                            sendto(data[:2] + tail[data[1] % len(tail)], addr)  # type: ignore[operator]
                    except OSError as exc:
                        _count_error(self.stats, "udp_send", exc)
                    continue
            self._answer(data, addr)
            by_source = self.by_source  # a sample taken puts the front back
            counts = self.counts

    def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        """Everything the front memo does not answer: the handler decides."""
        timed = self.by_source is _SAMPLE_DUE
        if timed:
            self.by_source = self.front_map
            if self.loop is not None:
                self.sample_timer = self.loop.call_later(SAMPLE_INTERVAL, self._sample_due)
        started = perf_counter() if timed else 0.0
        try:
            resp = self.handle(data, addr)
        except Exception as exc:  # one packet must never take the listener down
            _count_error(self.stats, "udp", exc)
            return
        if resp is not None:
            try:
                self.sock.sendto(resp, addr)
            except OSError as exc:
                _count_error(self.stats, "udp_send", exc)
                return
        if timed:
            self.stats.latency["udp"].observe(perf_counter() - started)

    def _sample_due(self) -> None:
        self.sample_timer = None
        self.by_source = _SAMPLE_DUE


class _TcpProtocol(asyncio.StreamReaderProtocol):
    """A stream protocol that counts its connection and sheds it when the cap is reached."""

    def __init__(self, server: DnsServer, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(asyncio.StreamReader(loop=loop), server._serve_tcp, loop=loop)
        self._dns_server = server
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._dns_server
        stats = server.stats
        if stats.tcp_connections >= server.limits.max_tcp_clients:
            stats.tcp_shed += 1
            # No reader, writer or task was made for it.
            transport.abort()  # type: ignore[attr-defined]
            return
        self._counted = True
        stats.tcp_connections += 1
        stats.tcp_accepted += 1
        stats.tcp_peak = max(stats.tcp_peak, stats.tcp_connections)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._counted:
            return
        self._counted = False
        self._dns_server.stats.tcp_connections -= 1
        super().connection_lost(exc)


def _count_error(stats: ServerStats, where: str, exc: BaseException) -> None:
    kind = f"{where}_{type(exc).__name__}"
    if stats.errors[kind] == 0:
        log.exception("unexpected error handling a %s packet (logged once per kind)", where)
    stats.errors[kind] += 1


def _set_rcvbuf(sock: socket.socket, size: int) -> int:
    """Ask for ``size`` bytes of receive buffer; SO_RCVBUFFORCE passes rmem_max when root."""
    # Python's socket module does not export SO_RCVBUFFORCE; on Linux it is 33.
    force = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)
    if force is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, force, size)
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < size:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    # Linux reports twice the requested size (bookkeeping overhead).
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """Bind a UDP and a TCP socket on the same host and port (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last: OSError | None = None
    for _ in range(20 if port == 0 else 1):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family == socket.AF_INET6:
                for s in (udp, tcp):
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.bind((host, port))
            tcp.bind((host, udp.getsockname()[1]))
            tcp.listen(TCP_BACKLOG)
            udp.setblocking(False)
            tcp.setblocking(False)
            return udp, tcp
        except OSError as exc:
            udp.close()
            tcp.close()
            last = exc
    assert last is not None
    raise last


class DnsServer:
    """Serves ``handler`` on each listen address over UDP and TCP."""

    def __init__(
        self,
        handler: Handles,
        listen: list[tuple[str, int]],
        *,
        limits: Limits,
        front: FrontMemo | None = None,
        tcp_idle_timeout: float = 10.0,
        tcp_io_timeout: float = 2.0,
        udp_receive_buffer: int = 4 * 1024 * 1024,
    ) -> None:
        self.handler = handler
        self.front = front
        """The front memo for UDP (None: every query must reach the handler)."""
        self.listen = listen
        self.tcp_idle_timeout = tcp_idle_timeout
        self.tcp_io_timeout = tcp_io_timeout
        self.limits = limits
        """``max_tcp_clients`` and ``tcp_handshake_timeout``, read on every accept."""
        self.udp_receive_buffer = udp_receive_buffer
        self.stats = ServerStats()
        self.addresses: list[tuple[str, int]] = []
        self._udp: list[UdpListener] = []
        self._tcp: list[asyncio.Server] = []
        self._conns: set[asyncio.StreamWriter] = set()
        self._tcp_sample_due = True
        self._tcp_sample_timer: asyncio.TimerHandle | None = None

    def set_handler(self, handler: Handles, front: FrontMemo | None) -> None:
        """Answer with ``handler`` and ``front`` from the next query on.

        A reload switching the query log does this: the log must see every
        query, so there is no front then.
        """
        self.handler = handler
        self.front = front
        for listener in self._udp:
            listener.handle = handler.handle_udp
            listener.set_front(front)

    async def start(self) -> list[tuple[str, int]]:
        """Bind every address; return them with the ports actually bound."""
        loop = asyncio.get_running_loop()
        for host, port in self.listen:
            udp_sock, tcp_sock = _bind_pair(host, port)
            got = _set_rcvbuf(udp_sock, self.udp_receive_buffer)
            if got < self.udp_receive_buffer:
                log.warning(
                    "UDP receive buffer on %s:%d is %d bytes, below the %d asked for;"
                    " raise net.core.rmem_max or run with CAP_NET_ADMIN",
                    host, udp_sock.getsockname()[1], got, self.udp_receive_buffer,
                )
            listener = UdpListener(udp_sock, self.handler, self.stats, self.front)
            listener.start(loop)
            self._udp.append(listener)
            # create_server listens again with its own backlog (default 100), which would
            # drop SYNs from a burst of clients while the loop is busy: pass ours.
            server = await loop.create_server(lambda: _TcpProtocol(self, loop), sock=tcp_sock,
                                              backlog=TCP_BACKLOG)
            self._tcp.append(server)
            self.addresses.append((host, udp_sock.getsockname()[1]))
        return self.addresses

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        for listener in self._udp:
            listener.close()
        for server in self._tcp:
            server.close()
        for writer in list(self._conns):
            writer.close()
        for server in self._tcp:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        self._udp.clear()
        self._tcp.clear()
        if self._tcp_sample_timer is not None:
            self._tcp_sample_timer.cancel()
            self._tcp_sample_timer = None

    def _tcp_sample_now(self) -> None:
        self._tcp_sample_timer = None
        self._tcp_sample_due = True

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = (str(peername[0]), int(peername[1])) if peername else None
        self._conns.add(writer)
        loop = asyncio.get_running_loop()
        # Until the first complete query, every wait also ends at the handshake deadline.
        handshake: float | None = loop.time() + self.limits.tcp_handshake_timeout
        reason = "idle"
        try:
            while True:
                when, reason = loop.time() + self.tcp_idle_timeout, "idle"
                if handshake is not None and handshake < when:
                    when, reason = handshake, "handshake"
                async with asyncio.timeout_at(when):
                    prefix = await reader.readexactly(2)
                length = (prefix[0] << 8) | prefix[1]
                if length == 0:
                    break
                when, reason = loop.time() + self.tcp_io_timeout, "io"
                if handshake is not None and handshake < when:
                    when, reason = handshake, "handshake"
                async with asyncio.timeout_at(when):
                    data = await reader.readexactly(length)
                handshake = None
                started = 0.0
                if self._tcp_sample_due:
                    self._tcp_sample_due = False
                    started = perf_counter()
                    self._tcp_sample_timer = loop.call_later(SAMPLE_INTERVAL,
                                                             self._tcp_sample_now)
                try:
                    resp = self.handler.handle_tcp(data, peer)
                except Exception as exc:
                    _count_error(self.stats, "tcp", exc)
                    break
                if resp is None:
                    continue
                writer.write(len(resp).to_bytes(2, "big") + resp)
                if started:
                    self.stats.latency["tcp"].observe(perf_counter() - started)
                if writer.transport.get_write_buffer_size() > 65536:
                    reason = "io"
                    async with asyncio.timeout(self.tcp_io_timeout):
                        await writer.drain()
        except TimeoutError:
            self.stats.tcp_timeouts[reason] += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as exc:
            _count_error(self.stats, "tcp", exc)
        finally:
            self._conns.discard(writer)
            writer.close()
