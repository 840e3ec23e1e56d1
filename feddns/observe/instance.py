"""What the observability endpoints read from a running instance: a narrow protocol.

Why it exists: ``/metrics``, ``/debug``, ``/readyz`` and the status page read the
instance's state, and must not depend on the composition root that builds it
(that dependency used to be a cycle: ``observe`` imported ``App``, which imported
``observe``). Anything with these attributes can be observed: the app, or a test's
stand-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from feddns.config import Settings
    from feddns.dns.handling import Handler
    from feddns.dns.server import DnsServer
    from feddns.model.registry import Registry
    from feddns.observe.counting import AppStats
    from feddns.observe.timeline import Timeline
    from feddns.table.compiler import Compiler


class Instance(Protocol):
    """A running feddns, as the observability endpoints see it."""

    config_path: Path | None
    registry: Registry
    compiler: Compiler
    handler: Handler
    server: DnsServer
    stats: AppStats
    timeline: Timeline
    bus_stats: Callable[[], BusStatsLike | None] | None
    loop: asyncio.AbstractEventLoop | None
    clock: Callable[[], float]

    @property
    def settings(self) -> Settings:
        """The settings in force (a reload replaces them)."""

    @property
    def warm_started(self) -> bool:
        """True when the warm-start snapshot restored some cluster."""

    @property
    def is_ready(self) -> bool:
        """True once the sync gate opened (``/readyz``)."""

    def source_kinds(self) -> dict[str, str]:
        """Cluster -> the kind of its configured source."""

    def kubernetes_counts(self) -> dict[str, tuple[int, int]]:
        """Cluster -> (re-lists, watch events) of each Kubernetes source."""

    def hostname_status(self) -> list[dict[str, Any]]:
        """Every load-balancer hostname in use, with its resolution's state."""


class PeerStatsLike(Protocol):
    """What the bus reports about one peer cluster (``sources.mqtt.bus.PeerStats``)."""

    @property
    def online(self) -> bool | None:
        """True after an online status, False after the last will; None before either."""
    @property
    def heartbeat_age(self) -> float | None:
        """Seconds since the last heartbeat; None before any."""
    @property
    def services(self) -> int:
        """Services the bus holds for the cluster."""
    @property
    def complete(self) -> bool:
        """True once its manifest and a message for every service it lists arrived."""
    @property
    def rejected_services(self) -> Mapping[str, str]:
        """``NAMESPACE/NAME`` -> reason, for services whose latest message was refused."""
    @property
    def signed_with(self) -> str | None:
        """How its last accepted message was sealed (``ed25519 <id>``, ``hmac <id>``)."""


class BusStatsLike(Protocol):
    """The bus's counters as ``Instance.bus_stats()`` returns them (``sources.mqtt.bus.BusStats``).

    A structural type, so this module needs no import of the bus (and of aiomqtt).
    """

    @property
    def connected(self) -> bool:
        """True while connected to the broker."""
    @property
    def broker(self) -> str | None:
        """``host:port`` of the broker in use; None while not connected."""
    @property
    def brokers(self) -> Sequence[str]:
        """Every configured broker (``host:port``), in the order they are tried."""
    @property
    def connects(self) -> int:
        """Successful connections so far."""
    @property
    def last_error(self) -> str | None:
        """Why the last connection ended or failed."""
    @property
    def published(self) -> int:
        """Messages published."""
    @property
    def received(self) -> int:
        """Messages received."""
    @property
    def applied(self) -> int:
        """Received messages that changed the registry."""
    @property
    def gap_requests(self) -> int:
        """Topics asked for again because their retained message never arrived."""
    @property
    def duplicates(self) -> int:
        """Received messages already known."""
    @property
    def dropped(self) -> int:
        """Received messages dropped because the queue was full."""
    @property
    def oversized_own(self) -> int:
        """Own messages over max_payload_size, not published."""
    @property
    def rejected(self) -> Mapping[str, int]:
        """Rejected messages by reason."""
    @property
    def reasons(self) -> Sequence[str]:
        """Every rejection reason (exported at 0 until it happens)."""
    @property
    def peers(self) -> Mapping[str, PeerStatsLike]:
        """What the bus knows of each cluster heard on it."""
