"""Load-balancer ingress hostnames, resolved by feddns itself and fed into the registry.

Why it exists: on EKS (and behind many ingress controllers) a LoadBalancer service
has only ``status.loadBalancer.ingress[].hostname``; other clusters reach it only
through the addresses that name resolves to, never through its cluster IP (issue
#13, Istio #29359). Resolution is I/O and the core (registry, table) does none, so
this source-side component does it: it resolves every hostname some service uses
(:meth:`Registry.hostnames`), asynchronously, honours the upstream TTL within
``hostnames.min_ttl``..``max_ttl``, refreshes each name before its TTL runs out,
and writes the addresses with :meth:`Registry.set_resolved`, which recompiles the
services that use them. A failed refresh (timeout, SERVFAIL, NXDOMAIN, no record)
keeps the last good addresses until ``hostnames.max_stale`` after their TTL ran
out, then drops them; attempts are retried with the shared back-off, and every
name's state is shown in ``/debug``. Addresses no service can have (loopback,
link-local and cloud metadata, multicast, unspecified: ``BUS_DENIED_CIDRS``) are
dropped: the name is data, chosen by whoever can create a Service.

dnspython (:mod:`.resolving`) is imported only once a hostname needs resolving.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from feddns.backoff import Backoff
from feddns.config import BUS_DENIED_CIDRS, HostnamesConfig, parse_host_port
from feddns.errors import FeddnsError
from feddns.model.registry import Registry

if TYPE_CHECKING:
    from feddns.sources.resolving import Answer

log = logging.getLogger(__name__)

REFRESH_AT = 0.8
"""A name is refreshed when this fraction of its (bounded) TTL has passed: before expiry."""
MAX_PARALLEL = 16
"""Most names resolved at once."""
_NEVER = tuple(ipaddress.ip_network(c) for c in BUS_DENIED_CIDRS)


class Lookup(Protocol):
    """What resolves one type of one name (:class:`feddns.sources.resolving.Resolver`)."""

    async def addresses(self, hostname: str, rdtype: str) -> Answer:
        """The addresses of ``rdtype`` (``A``/``AAAA``); raises a FeddnsError on failure."""


@dataclass(slots=True)
class HostnameState:
    """What is known about one hostname."""

    name: str
    addresses: tuple[str, ...] = ()
    """Answered now (the last good resolution, until dropped)."""
    ttl: int | None = None
    """The upstream TTL of the last good resolution (before the bounds)."""
    resolved_at: float | None = None
    expires: float | None = None
    """When the last good resolution's bounded TTL runs out (monotonic)."""
    due: float = 0.0
    """When to resolve next (monotonic)."""
    failing_since: float | None = None
    error: str | None = None
    failures: int = 0
    refused: tuple[str, ...] = ()
    """Addresses it resolved to that no service can have (left out)."""
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=1.0, maximum=30.0))


def _split(addresses: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(usable, refused), each canonical and sorted (a stable order keeps plans equal)."""
    usable: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    refused: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        (refused if any(ip.version == n.version and ip in n for n in _NEVER)
         else usable).append(ip)
    order = sorted(set(usable), key=lambda ip: (ip.version, int(ip)))
    return tuple(str(ip) for ip in order), tuple(sorted({str(ip) for ip in refused}))


class HostnameResolver:
    """Resolves the registry's load-balancer hostnames and keeps their addresses current."""

    def __init__(self, registry: Registry, settings: HostnamesConfig, *,
                 clock: Callable[[], float], lookup: Lookup | None = None) -> None:
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.states: dict[str, HostnameState] = {}
        self._lookup = lookup
        self._injected = lookup is not None
        self._generation = -1
        self._wake = asyncio.Event()

    def configure(self, settings: HostnamesConfig) -> None:
        """Use new settings (a reload): a new resolver, and every name asked again."""
        if settings == self.settings:
            return
        self.settings = settings
        if not self._injected:
            self._lookup = None
        for state in self.states.values():
            state.due = 0.0
        self._wake.set()

    def notify(self) -> None:
        """The registry may use other hostnames now (called after every compile)."""
        if self.registry.hostname_generation != self._generation:
            self._wake.set()

    async def run(self) -> None:
        """Resolve and refresh until cancelled."""
        while True:
            due = await self.step()
            self._wake.clear()
            if self.registry.hostname_generation != self._generation:
                continue
            timeout = None if due is None else max(0.0, due - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def step(self) -> float | None:
        """Resolve every name that is due; return when the next one is (None: no names)."""
        self._follow_registry()
        now = self.clock()
        due = [s for s in self.states.values() if s.due <= now]
        if due:
            lookup = await self._get_lookup(due)
            if lookup is not None:
                gate = asyncio.Semaphore(MAX_PARALLEL)

                async def one(state: HostnameState) -> None:
                    async with gate:
                        await self._refresh(state, lookup)

                await asyncio.gather(*(one(s) for s in due))
        return min((s.due for s in self.states.values()), default=None)

    def _follow_registry(self) -> None:
        self._generation = self.registry.hostname_generation
        wanted = set(self.registry.hostnames())
        for name in [n for n in self.states if n not in wanted]:
            del self.states[name]
            self.registry.set_resolved(name, ())
        for name in wanted - set(self.states):
            self.states[name] = HostnameState(name)

    async def _get_lookup(self, due: list[HostnameState]) -> Lookup | None:
        if self._lookup is None:
            try:
                module: Any = await asyncio.to_thread(importlib.import_module,
                                                      "feddns.sources.resolving")
                self._lookup = cast("Lookup", module.Resolver(
                    [parse_host_port(a) for a in self.settings.nameservers],
                    timeout=self.settings.timeout))
            except FeddnsError as exc:
                for state in due:
                    self._failed(state, str(exc))
                return None
        return self._lookup

    async def _refresh(self, state: HostnameState, lookup: Lookup) -> None:
        results = await asyncio.gather(lookup.addresses(state.name, "A"),
                                       lookup.addresses(state.name, "AAAA"),
                                       return_exceptions=True)
        answers: list[Answer] = []
        kept: list[str] = []
        errors = []
        for rdtype, result in zip(("A", "AAAA"), results, strict=True):
            if isinstance(result, FeddnsError):
                # One family failing while the other answers (a broken server's SERVFAIL
                # for AAAA) keeps that family's last good addresses.
                errors.append(f"{rdtype}: {result}")
                kept += [a for a in state.addresses if (":" in a) == (rdtype == "AAAA")]
            elif isinstance(result, BaseException):
                raise result
            else:
                answers.append(result)
        if not answers:
            same = str(results[0]) == str(results[1])
            self._failed(state, str(results[0]) if same else "; ".join(errors))
            return
        usable, refused = _split(tuple(a for ans in answers for a in ans.addresses)
                                 + tuple(kept))
        state.refused = refused
        if not usable:
            self._failed(state, "no usable A or AAAA record" + (
                f" (refused: {', '.join(refused)})" if refused else ""))
            return
        now = self.clock()
        settings = self.settings
        ttls = [a.ttl for a in answers if a.ttl is not None]
        ttl = min(ttls) if ttls else settings.min_ttl
        bounded = min(max(ttl, settings.min_ttl), settings.max_ttl)
        if usable != state.addresses:
            log.info("load-balancer hostname %s resolves to %s (TTL %d s)", state.name,
                     ", ".join(usable), ttl)
        if state.failing_since is not None:
            log.info("load-balancer hostname %s resolves again after %.0f s", state.name,
                     now - state.failing_since)
        state.addresses, state.ttl, state.resolved_at = usable, ttl, now
        state.expires = now + bounded
        state.due = now + bounded * REFRESH_AT
        state.failing_since = None
        state.error = errors[0] if errors else None
        state.backoff.healthy(now)
        self.registry.set_resolved(state.name, usable)

    def _failed(self, state: HostnameState, error: str) -> None:
        now = self.clock()
        state.failures += 1
        state.error = error
        if state.failing_since is None:
            state.failing_since = now
            log.warning("load-balancer hostname %s: %s; %s", state.name, error,
                        "keeping its last good addresses for now" if state.addresses
                        else "it answers no address until it resolves")
        state.due = now + state.backoff.next_delay()
        if not state.addresses:
            return
        drop_at = (state.expires if state.expires is not None else now) + \
            self.settings.max_stale
        if now >= drop_at:
            log.warning("load-balancer hostname %s: no good resolution for %.0f s past its"
                        " TTL: its addresses are dropped", state.name, now - (
                            state.expires or now))
            state.addresses = ()
            self.registry.set_resolved(state.name, ())
        else:
            state.due = min(state.due, drop_at)

    def status(self) -> list[dict[str, Any]]:
        """Every hostname's state, for ``/debug``."""
        now = self.clock()
        out = []
        for name in sorted(self.states):
            s = self.states[name]
            out.append({
                "hostname": name,
                "addresses": list(s.addresses),
                "ttl": s.ttl,
                "age_seconds": None if s.resolved_at is None else round(now - s.resolved_at, 3),
                "expires_in_seconds": None if s.expires is None else round(s.expires - now, 3),
                "stale": s.expires is not None and now > s.expires and bool(s.addresses),
                "next_attempt_in_seconds": round(max(0.0, s.due - now), 3),
                "failing_for_seconds": (None if s.failing_since is None
                                        else round(now - s.failing_since, 3)),
                "error": s.error,
                "failures": s.failures,
                "refused": list(s.refused),
            })
        return out
