"""What the observability endpoints read from a running instance: a narrow protocol.

Why it exists: ``/metrics``, ``/debug``, ``/readyz`` and the status page read the
instance's state, and must not depend on the composition root that builds it
(that dependency used to be a cycle: ``observe`` imported ``App``, which imported
``observe``). Anything with these attributes can be observed: the app, or a test's
stand-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from feddns.config import Settings
    from feddns.dns.handling import Handler
    from feddns.dns.server import DnsServer
    from feddns.model.registry import Registry
    from feddns.observe.counting import AppStats
    from feddns.observe.metrics import BusStatsLike
    from feddns.table.compiler import Compiler


class Instance(Protocol):
    """A running feddns, as the observability endpoints see it."""

    config_path: Path | None
    registry: Registry
    compiler: Compiler
    handler: Handler
    server: DnsServer
    stats: AppStats
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
