"""DNS over TCP: one protocol object per connection, framing in ``data_received`` (RFC 7766).

Why it exists: TCP is the hot path for every client that forwards over it
(NodeLocal DNSCache's ``force_tcp``, CoreDNS's ``forward`` with TCP), so it is
built like the UDP listener rather than on asyncio streams: no reader, writer,
task or timeout object per connection or per read; the loop calls
:meth:`TcpConnection.data_received` with whatever arrived, and every complete
message in it is answered at once, in order (pipelining, RFC 7766 §6.2.1.1),
the answers of one arrival written with one ``write``. A repeated query is
answered from the front memo the UDP listener reads (the client's class found
by its address, then the query's bytes after the ID), never from an entry of an
answer cut to fit UDP (its counting slot says so: :data:`~feddns.dns.slots.LEAN`
and above); everything else goes to the handler's ``handle_tcp``. Rules kept:

* framing: a two-octet length, then the message (RFC 1035 §4.2.2); a message
  may arrive one octet at a time or several in one segment; a length of 0
  closes the connection (after the answers already due);
* one timer per connection, re-armed lazily: each arrival only moves the
  connection's deadline (a float); the timer, when it fires, closes the
  connection if the deadline passed or sleeps again until it. The deadline is
  the earliest that applies of: ``tcp_idle_timeout`` after the last complete
  message (or the accept; RFC 7766 §6.2.3), a length prefix that arrived
  counts as no message; ``tcp_io_timeout`` after a message's length arrived
  without all of its octets (slow-loris); ``tcp_handshake_timeout`` after the
  accept until the first complete message (Knot); ``tcp_io_timeout`` after
  the answers stopped draining (below). Each close by a timeout is counted by
  kind (``handshake``, ``idle``, ``io``);
* at most ``max_tcp_clients`` connections are open at once (RFC 7766 §10,
  CVE-2018-5743): one beyond it is aborted in ``connection_made``, before
  any state exists for it, and counted as shed; the peak is kept;
* back-pressure: while more than :data:`WRITE_BUFFER_HIGH` octets of answers
  wait to be sent (the client does not read), reading pauses and the answers
  already received wait in the connection; if the buffer does not drain
  within ``tcp_io_timeout``, the connection is aborted;
* the handler raising on a message closes that connection (counted and logged
  once per kind), never the server;
* the first query after every sampling interval is timed into
  ``ServerStats.latency["tcp"]`` (the owner swaps in
  :data:`~feddns.dns.transport.SAMPLE_DUE`, see :mod:`feddns.dns.transport`).

What the connection reads from its owner (the server) is the narrow
:class:`TcpOwner` protocol, so the unit tests drive a connection with a fake
transport and a fake clock, without sockets.
"""

from __future__ import annotations

import asyncio
import struct
from time import perf_counter
from typing import Protocol, cast

from feddns.dns.front import FrontEntry
from feddns.dns.limiting import Limits
from feddns.dns.slots import LEAN
from feddns.dns.transport import SAMPLE_DUE, Handles, ServerStats, count_error

WRITE_BUFFER_HIGH = 65536
"""Octets of answers waiting to be sent above which a connection stops reading."""
TIMER_SLACK = 0.001
"""A timer that fires this close before its deadline counts as on time (uvloop's
timers have millisecond resolution)."""

_LENGTH = struct.Struct("!H").pack


class TcpOwner(Protocol):
    """What a connection reads from the server that accepted it."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the connections run on (timers)."""

    @property
    def handler(self) -> Handles:
        """Answers what the front memo does not."""

    @property
    def limits(self) -> Limits:
        """``max_tcp_clients`` and ``tcp_handshake_timeout``, read on every accept."""

    @property
    def stats(self) -> ServerStats:
        """The transport counters."""

    @property
    def tcp_idle_timeout(self) -> float:
        """Seconds an idle connection stays open."""

    @property
    def tcp_io_timeout(self) -> float:
        """Seconds for the rest of a message to arrive, or for answers to drain."""

    @property
    def tcp_by_source(self) -> dict[str, dict[bytes, FrontEntry]]:
        """The front memo by client address (:data:`SAMPLE_DUE` while a sample is due)."""

    @property
    def front_counts(self) -> list[int]:
        """The answer counters the front memo's slots index."""

    def tcp_sampled(self) -> None:
        """A sample is being taken: put the front back and arm the next sample."""

    def tcp_opened(self, conn: TcpConnection) -> None:
        """Keep ``conn`` until it is lost (the server closes every one on stop)."""

    def tcp_closed(self, conn: TcpConnection) -> None:
        """Forget ``conn``."""


class TcpConnection(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    __slots__ = ("body_deadline", "counted", "deadline", "handshake", "host", "idle_from",
                 "owner", "paused", "peer", "pending", "reason", "timer", "timer_at",
                 "transport")

    def __init__(self, owner: TcpOwner) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.counted = False
        self.peer: tuple[str, int] | None = None
        self.host = ""
        self.pending = b""
        """Octets received that do not yet make a whole message (or wait for the writes)."""
        self.idle_from = 0.0
        """When the last complete message arrived (or the accept)."""
        self.handshake = 0.0
        """The handshake deadline until the first complete message; then 0."""
        self.body_deadline = 0.0
        """When the message whose length arrived must be complete; 0: none under way."""
        self.paused = 0.0
        """When the answers must have drained, while the write buffer is full; else 0."""
        self.deadline = 0.0
        self.reason = "idle"
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    # --- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Accepted: shed it at once over the cap, else count it and start its timer."""
        owner = self.owner
        stats = owner.stats
        if stats.tcp_connections >= owner.limits.max_tcp_clients:
            stats.tcp_shed += 1
            transport.abort()  # type: ignore[attr-defined]
            return
        self.counted = True
        stats.tcp_connections += 1
        stats.tcp_accepted += 1
        stats.tcp_peak = max(stats.tcp_peak, stats.tcp_connections)
        # uvloop's transports have a Transport's methods without being its subclass.
        self.transport = transport = cast("asyncio.Transport", transport)
        peername = transport.get_extra_info("peername")
        if peername:
            self.peer = (str(peername[0]), int(peername[1]))
            self.host = self.peer[0]
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        now = self._now()
        self.idle_from = now
        self.handshake = now + owner.limits.tcp_handshake_timeout
        owner.tcp_opened(self)
        self._rearm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Closed, by either side: uncount it and stop its timer."""
        if not self.counted:
            return
        self.counted = False
        self.owner.stats.tcp_connections -= 1
        self.owner.tcp_closed(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None
        self.pending = b""

    def pause_writing(self) -> None:
        """The client does not read: stop reading until the answers drain."""
        if self.transport is None:
            return
        self.paused = self._now() + self.owner.tcp_io_timeout
        self.transport.pause_reading()
        self._rearm()

    def resume_writing(self) -> None:
        """The answers drained: answer what waited, then read again."""
        self.paused = 0.0
        if self.transport is None:
            return
        self.transport.resume_reading()
        data, self.pending = self.pending, b""
        self.data_received(data)

    # The hot path: kept flat, every attribute lookup here is paid per arrival.
    def data_received(self, data: bytes) -> None:
        """Answer every complete message in what arrived; keep the rest for later."""
        if self.pending:
            data = self.pending + data
            self.pending = b""
        owner = self.owner
        front = owner.tcp_by_source.get(self.host)
        out: list[bytes] = []
        size = 0
        n = len(data)
        pos = 0
        while pos + 2 <= n:
            end = pos + 2 + (data[pos] << 8 | data[pos + 1])
            if end > n or end == pos + 2:
                break
            msg = data[pos + 2 : end]
            pos = end
            if front is not None:
                hit = front.get(msg[2:])
                # A TCP query never takes an answer cut to fit UDP (slots from LEAN on).
                if hit is not None and hit[1] < LEAN:
                    owner.front_counts[hit[1]] += 1
                    tail = hit[0]
                    # A rotating answer (a tuple) picks its variant by the query ID.
                    answer: bytes = tail if tail.__class__ is bytes else \
                        tail[msg[1] % len(tail)]  # type: ignore[assignment]
                    out.append(_LENGTH(len(answer) + 2) + msg[:2] + answer)
                    size += len(answer)
                    if size < WRITE_BUFFER_HIGH:
                        continue
            else:
                hit = None
            if hit is None or hit[1] >= LEAN:
                resp = self._answer(msg, out)
                if resp is None:
                    return  # the connection is closing
                if resp:
                    out.append(_LENGTH(len(resp)) + resp)
                    size += len(resp)
                # The handler may have mapped this client to its front, or a sample was
                # taken (the front is back).
                front = owner.tcp_by_source.get(self.host)
                if size < WRITE_BUFFER_HIGH and not self.paused:
                    continue
            if out:
                self._write(out)
                out = []
                size = 0
            if self.paused:
                break
        transport = self.transport
        if out and transport is not None:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if transport is None or transport.is_closing():
            return
        if pos < n:
            if n - pos >= 2 and not data[pos] and not data[pos + 1] and not self.paused:
                # A length of 0: close, after the answers due (RFC 7766 has no such message).
                transport.close()
                return
            self.pending = data[pos:]
        loop = owner.loop
        assert loop is not None
        now = loop.time()
        if pos:  # a complete message arrived
            self.idle_from = now
            self.handshake = 0.0
            self.body_deadline = 0.0
            if pos == n and not self.paused:
                # The usual case: everything answered; the deadline only moves later,
                # so the timer (due no later than the old one) stays as it is.
                self.deadline = deadline = now + owner.tcp_idle_timeout
                self.reason = "idle"
                if deadline < self.timer_at:
                    self._rearm()  # a reload shortened the idle timeout
                return
        if n - pos >= 2 and not self.body_deadline:
            # A message's length arrived: all of it must follow within tcp_io_timeout.
            self.body_deadline = now + owner.tcp_io_timeout
        self._rearm()

    # --- the rest ------------------------------------------------------------------------

    def _answer(self, msg: bytes, out: list[bytes]) -> bytes | None:
        """The handler's answer (b"": nothing to send; None: the connection is closing)."""
        owner = self.owner
        timed = owner.tcp_by_source is SAMPLE_DUE
        if timed:
            owner.tcp_sampled()
            started = perf_counter()
        try:
            resp = owner.handler.handle_tcp(msg, self.peer)
        except Exception as exc:  # one message closes its connection, never the server
            count_error(owner.stats, "tcp", exc)
            if out:
                self._write(out)
                out.clear()
            if self.transport is not None:
                self.transport.close()
            return None
        if resp is None:
            return b""  # a response (QR=1) or a runt: nothing is sent (RFC 8906 §3.1.1)
        if timed:
            # Timed to the answer's write: send it, and what came before it, now.
            out.append(_LENGTH(len(resp)))
            out.append(resp)
            self._write(out)
            out.clear()
            owner.stats.latency["tcp"].observe(perf_counter() - started)
            return b""
        return resp

    def _write(self, out: list[bytes]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _now(self) -> float:
        loop = self.owner.loop
        assert loop is not None
        return loop.time()

    def _rearm(self) -> None:
        """Work out the deadline; move the timer only if it must fire earlier."""
        if self.paused:
            deadline, reason = self.paused, "io"
        elif self.body_deadline:
            deadline, reason = self.body_deadline, "io"
        else:
            deadline, reason = self.idle_from + self.owner.tcp_idle_timeout, "idle"
        if self.handshake and self.handshake < deadline:
            deadline, reason = self.handshake, "handshake"
        self.deadline = deadline
        self.reason = reason
        if self.timer is None or deadline < self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            loop = self.owner.loop
            assert loop is not None
            self.timer = loop.call_at(deadline, self._expired)
            self.timer_at = deadline

    def _expired(self) -> None:
        """The timer fired: close the connection if its deadline passed, else wait on."""
        self.timer = None
        transport = self.transport
        if transport is None:
            return
        if self._now() + TIMER_SLACK < self.deadline:
            self._rearm()
            return
        self.owner.stats.tcp_timeouts[self.reason] += 1
        if transport.get_write_buffer_size():
            transport.abort()  # answers the client does not read: drop them
        else:
            transport.close()
