"""The bus's counters and state as status pages and metrics read them.

Why it exists: ``/debug``, ``feddns status`` and ``/metrics`` show the bus (the broker
in use, peers, rejections) without importing the bus itself (which owns aiomqtt);
these frozen records are what :meth:`FederationBus.stats` returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PeerStats:
    """What the bus knows about one cluster heard on it."""

    online: bool | None
    instance: str | None
    services: int
    complete: bool
    heartbeat_age: float | None
    """Seconds since the last heartbeat (local monotonic clock); None before any."""
    rejected_services: dict[str, str]
    """``NAMESPACE/NAME`` -> reason, for services whose latest message was refused (the
    last accepted version, if any, still answers; the cluster is not held back)."""
    signed_with: str | None = None
    """How its last accepted message was sealed: ``ed25519 <key id>`` or ``hmac <key id>``
    (before removing HMAC, check that no peer still says ``hmac``)."""


@dataclass(frozen=True, slots=True)
class BusStats:
    """The bus's state for status pages and metrics (``feddns_bus_*``)."""

    connected: bool
    broker: str | None
    """``host:port`` of the broker in use; None while not connected."""
    brokers: tuple[str, ...]
    """Every configured broker (``host:port``), in the order they are tried."""
    last_connect: float | None
    """Wall-clock time of the last successful connection."""
    connects: int
    last_error: str | None
    published: int
    received: int
    applied: int
    duplicates: int
    dropped: int
    """Incoming messages discarded because the bounded queue was full."""
    gap_requests: int
    """Topics asked for again because their retained message never arrived."""
    oversized_own: int
    """Own messages not published because they exceed ``max_payload_size``."""
    rejected: dict[str, int]
    peers: dict[str, PeerStats]
    reasons: tuple[str, ...] = ()
    """Every reason a message can be rejected for: ``feddns_bus_rejected_total`` exports
    each one from the start (at 0), so a first rejection is an increase Prometheus sees."""


class DropCounter(logging.Filter):
    """Counts aiomqtt's "queue is full" warnings (one per dropped message) and mutes them.

    paho's per-socket errors are muted too: the bus logs one summary line of its own.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """Count and drop the queue-full warnings; drop paho's per-socket errors."""
        if record.msg == "Message queue is full. Discarding message.":
            self.count += 1
            return False
        return not str(record.msg).startswith("failed to receive on socket")
