"""What the compiled answers are built from, frozen: the table's part of the configuration.

Why it exists: the answer table is the pure core of feddns (no I/O, no clock),
tested with case tables; it must not depend on how the configuration file is
read and validated. The composition root turns ``Settings`` into these small
frozen records (:func:`feddns.runtime.options.table_options`), and a reload
builds a new set, so the core takes exactly what it needs and nothing can change
under it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from feddns.policy.health import Damping, Isolation


@dataclass(frozen=True, slots=True)
class OriginOptions:
    """One served zone apex."""

    name: str
    """Lowercase, absolute (trailing dot)."""
    service_address: str = "load-balancer"
    """``load-balancer`` (the ingress address when a service has one) or ``cluster-ip``."""


@dataclass(frozen=True, slots=True)
class SoaOptions:
    """The apex SOA's fields (RFC 1035 §3.3.13); names absolute, or None for the defaults."""

    mname: str | None = None
    rname: str | None = None
    ttl: int = 30
    refresh: int = 3600
    retry: int = 600
    expire: int = 86400
    minimum: int = 5

    @property
    def negative_ttl(self) -> int:
        """RFC 2308 §3/§5: negative answers live ``min(SOA TTL, SOA MINIMUM)`` seconds."""
        return min(self.ttl, self.minimum)


@dataclass(frozen=True, slots=True)
class NameServer:
    """A name server of the NS RRset, with its addresses when it lies in a served zone."""

    name: str
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceOverride:
    """Configured policy for one service (``name`` given) or a whole namespace."""

    namespace: str
    name: str | None = None
    weights: tuple[tuple[str, float], ...] | None = None
    regions: tuple[str, ...] | None = None
    none_healthy: str | None = None
    shares: tuple[tuple[str, float], ...] | None = None
    answer_mode: str | None = None
    capacity_aware: bool | None = None


@dataclass(frozen=True, slots=True)
class TableOptions:
    """Everything the answer table and its compiler read from the configuration."""

    origins: tuple[OriginOptions, ...] = (OriginOptions("clusterset.local."),)
    soa: SoaOptions = field(default_factory=SoaOptions)
    nameservers: tuple[NameServer, ...] = ()
    record_ttl: int = 5
    version_ttl: int = 28800
    max_records: int = 16
    stale_ttl: int = 30
    none_healthy: str = "fail-closed"
    answer_mode: str = "ordered"
    """``ordered`` (every record, the first following the weights) or ``subset``."""
    subset_size: int = 1
    """Records in each answer of the ``subset`` mode."""
    capacity_aware: bool = False
    capacity_overload: float = 0.1
    """How much more demand per capacity than the federation's a candidate may take."""
    damping: Damping = field(default_factory=Damping)
    isolation: Isolation = field(default_factory=Isolation)
    overrides: tuple[ServiceOverride, ...] = ()
    explain: bool = True
    explain_allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    """Sources that may ask ``_explain`` names (empty: all); the handler enforces it."""
    cluster_pinned: bool = False
    federation_v1: bool = False
    federation: str = "federation"
    regions: Mapping[str, str] = field(default_factory=dict)
    """Cluster -> its region (the configured clusters)."""
    zones: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Cluster -> its zones."""
    reverse_zones: tuple[str, ...] = ()
    """Reverse zones served (``1.96.10.in-addr.arpa.``): PTRs for the addresses in them."""
