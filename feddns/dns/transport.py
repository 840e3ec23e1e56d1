"""What the UDP and TCP transports share: the handler they call, their counters, sampling.

Why it exists: the UDP listener (``feddns.dns.server``) and the TCP connections
(``feddns.dns.tcp``) are built the same way (the loop calls them when bytes
arrive; a repeated query is answered from the front memo without the handler;
everything else goes to the handler), so the pieces both need live here once,
below both of them, and neither imports the other:

* :class:`Handles`, the one thing they call (the handler, or the query log
  wrapped around it);
* :class:`ServerStats`, the transport-level counters;
* latency sampling: the first query after every ``SAMPLE_INTERVAL`` is timed
  per transport. A transport takes a sample by swapping in :data:`SAMPLE_DUE`,
  an always-empty front map, so the next query misses the front and is timed
  on the slow path: the hot path has no check for it at all;
* :func:`count_error`: one bad packet never kills a transport; errors are
  counted by kind and logged once per kind.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from feddns.dns.front import FrontEntry
from feddns.histogram import LATENCY_BOUNDS, Buckets

log = logging.getLogger(__name__)


class Handles(Protocol):
    """What the transports call: the handler, or a wrapper around it (the query log)."""

    def handle_udp(self, data: bytes, addr: tuple[str, int] | None = None) -> bytes | None:
        """Answer one datagram; None: send nothing."""

    def handle_tcp(self, data: bytes, addr: tuple[str, int] | None = None) -> bytes | None:
        """Answer one message of a TCP connection; None: send nothing."""


SAMPLE_INTERVAL = 0.01
"""Seconds between two queries timed for the latency histogram (per transport)."""

SAMPLE_DUE: dict[str, dict[bytes, FrontEntry]] = {}
"""An always-empty front map: swapped in when a sample is due, so the next query
misses the front and is timed on the slow path. Never written to."""


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


def count_error(stats: ServerStats, where: str, exc: BaseException) -> None:
    """Count an unexpected error of one packet by kind; log the first of each kind."""
    kind = f"{where}_{type(exc).__name__}"
    if stats.errors[kind] == 0:
        log.exception("unexpected error handling a %s packet (logged once per kind)", where)
    stats.errors[kind] += 1
