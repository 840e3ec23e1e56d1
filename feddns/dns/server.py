"""UDP and TCP transports for the query handler (RFC 1035 §4.2, RFC 7766).

Why it exists: sockets, timeouts and connection bookkeeping live here (and, for
each TCP connection, in :mod:`feddns.dns.tcp`) and nowhere else; the handler
only turns bytes into bytes (:class:`~feddns.dns.transport.Handles`: one entry
point per transport). Rules kept:

* UDP and TCP listen on the same address and port (port 0 picks one free
  port for both, which the tests use);
* the UDP receive buffer is enlarged (the kernel default drops queries under
  load, see bench/RESULTS.md);
* TCP: one protocol object per connection (:class:`~feddns.dns.tcp.TcpConnection`:
  framing, pipelining, the idle, I/O and handshake timeouts, back-pressure);
  at most ``max_tcp_clients`` connections are open at once, one beyond it is
  closed at accept (RFC 7766 §10, CVE-2018-5743);
* the limits are read from the :class:`~feddns.dns.limiting.Limits` the app
  hands to both the handler and the server, on every accept, so a reload
  changes them for new connections;
* one bad packet never kills a transport: errors are caught per packet,
  counted and logged once per kind;
* UDP is read by the loop's reader callback with plain ``recvfrom``, up to
  ``BATCH`` datagrams per wake-up (:class:`UdpListener`), and a repeated
  query is answered there, from the front memo the app hands to both
  (:class:`~feddns.dns.front.FrontMemo`), without calling the handler: two
  dict lookups, a count and a send. TCP connections read the same front.
  Everything else goes to the handler;
* the first query after every ``SAMPLE_INTERVAL`` is timed (handler and
  send), per transport, into ``ServerStats.latency``: two clock reads per
  query would cost more than everything else the metrics add. A sample is
  taken by swapping in an empty front map, so the hot path has no check
  for it at all. An idle server arms the next sample once and then sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from time import perf_counter

from feddns.dns.front import FrontEntry, FrontMemo
from feddns.dns.limiting import Limits
from feddns.dns.tcp import TcpConnection
from feddns.dns.transport import (
    SAMPLE_DUE,
    SAMPLE_INTERVAL,
    Handles,
    ServerStats,
    count_error,
)

__all__ = ["BATCH", "DnsServer", "Handles", "ServerStats", "UdpListener"]

log = logging.getLogger(__name__)

TCP_BACKLOG = 1024
"""Pending TCP connections the kernel queues before accept (RFC 7766 §6.2.2: many clients)."""

RECV_SIZE = 65535
"""Bytes read per datagram: any UDP datagram whole, as the handler must see it."""
BATCH = 64
"""Datagrams read per readiness callback before the event loop gets a turn."""


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
        self.by_source = SAMPLE_DUE
        """:attr:`front_map`, or :data:`~feddns.dns.transport.SAMPLE_DUE` while a sample
        is due (the first query)."""
        self.sample_timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.set_front(front)

    def set_front(self, front: FrontMemo | None) -> None:
        """Answer repeated queries from ``front`` (None: every query goes to the handler)."""
        self.front_map = front.by_source if front is not None else {}
        self.counts = front.counts if front is not None else []
        if self.by_source is not SAMPLE_DUE:
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
                        count_error(self.stats, "udp_send", exc)
                    continue
            self._answer(data, addr)
            by_source = self.by_source  # a sample taken puts the front back
            counts = self.counts

    def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        """Everything the front memo does not answer: the handler decides."""
        timed = self.by_source is SAMPLE_DUE
        if timed:
            self.by_source = self.front_map
            if self.loop is not None:
                self.sample_timer = self.loop.call_later(SAMPLE_INTERVAL, self._sample_due)
        started = perf_counter() if timed else 0.0
        try:
            resp = self.handle(data, addr)
        except Exception as exc:  # one packet must never take the listener down
            count_error(self.stats, "udp", exc)
            return
        if resp is not None:
            try:
                self.sock.sendto(resp, addr)
            except OSError as exc:
                count_error(self.stats, "udp_send", exc)
                return
        if timed:
            self.stats.latency["udp"].observe(perf_counter() - started)

    def _sample_due(self) -> None:
        self.sample_timer = None
        self.by_source = SAMPLE_DUE


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
    """Serves ``handler`` on each listen address over UDP and TCP.

    It is also what each TCP connection reads its settings, handler and front
    from (:class:`~feddns.dns.tcp.TcpOwner`).
    """

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
        """The front memo for UDP and TCP (None: every query must reach the handler)."""
        self.listen = listen
        self.tcp_idle_timeout = tcp_idle_timeout
        self.tcp_io_timeout = tcp_io_timeout
        self.limits = limits
        """``max_tcp_clients`` and ``tcp_handshake_timeout``, read on every accept."""
        self.udp_receive_buffer = udp_receive_buffer
        self.stats = ServerStats()
        self.addresses: list[tuple[str, int]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tcp_front: dict[str, dict[bytes, FrontEntry]] = {}
        """The front memo by client address, for TCP (empty without a front)."""
        self.tcp_by_source = SAMPLE_DUE
        """:attr:`tcp_front`, or :data:`~feddns.dns.transport.SAMPLE_DUE` while a TCP
        sample is due."""
        self.front_counts: list[int] = []
        self._udp: list[UdpListener] = []
        self._tcp: list[asyncio.Server] = []
        self._conns: set[TcpConnection] = set()
        self._tcp_sample_timer: asyncio.TimerHandle | None = None
        self._use_front(front)

    def _use_front(self, front: FrontMemo | None) -> None:
        self.tcp_front = front.by_source if front is not None else {}
        self.front_counts = front.counts if front is not None else []
        if self.tcp_by_source is not SAMPLE_DUE:
            self.tcp_by_source = self.tcp_front

    def set_handler(self, handler: Handles, front: FrontMemo | None) -> None:
        """Answer with ``handler`` and ``front`` from the next query on.

        A reload switching the query log does this: the log must see every
        query, so there is no front then.
        """
        self.handler = handler
        self.front = front
        self._use_front(front)
        for listener in self._udp:
            listener.handle = handler.handle_udp
            listener.set_front(front)

    async def start(self) -> list[tuple[str, int]]:
        """Bind every address; return them with the ports actually bound."""
        loop = self.loop = asyncio.get_running_loop()
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
            server = await loop.create_server(lambda: TcpConnection(self), sock=tcp_sock,
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
        for conn in list(self._conns):
            if conn.transport is not None:
                conn.transport.close()
        for server in self._tcp:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        self._udp.clear()
        self._tcp.clear()
        if self._tcp_sample_timer is not None:
            self._tcp_sample_timer.cancel()
            self._tcp_sample_timer = None

    # --- what TCP connections call (feddns.dns.tcp.TcpOwner) ---------------------------

    def tcp_opened(self, conn: TcpConnection) -> None:
        """Keep ``conn`` until it is lost (closed on stop)."""
        self._conns.add(conn)

    def tcp_closed(self, conn: TcpConnection) -> None:
        """Forget ``conn``."""
        self._conns.discard(conn)

    def tcp_sampled(self) -> None:
        """A TCP sample is being taken: the front answers again; the next is due later."""
        self.tcp_by_source = self.tcp_front
        if self.loop is not None:
            self._tcp_sample_timer = self.loop.call_later(SAMPLE_INTERVAL, self._tcp_sample_due)

    def _tcp_sample_due(self) -> None:
        self._tcp_sample_timer = None
        self.tcp_by_source = SAMPLE_DUE
