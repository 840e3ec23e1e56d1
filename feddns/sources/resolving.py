"""Asking DNS for a host name's addresses: the one module that imports dnspython.

Why it exists: load-balancer ingress hostnames (EKS style) must be turned into
addresses by feddns itself, asynchronously and honouring the upstream TTL
(:mod:`.hostnames` decides when). dnspython's asynchronous stub resolver does
the asking; it is imported only here (an import contract says so), and this
module is imported only once a hostname needs resolving (it costs a tenth of a
second at start otherwise). Its own cache is off: the TTLs are kept by
:mod:`.hostnames`, which must see every expiry to refresh before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from feddns.errors import FeddnsError


class ResolveError(FeddnsError):
    """A name could not be resolved; the message says why (NXDOMAIN, timeout, ...)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The addresses of one type of one name, and for how long they may be used."""

    addresses: tuple[str, ...]
    ttl: int | None
    """The smallest TTL along the answer's CNAME chain; None when there was no record."""


class Resolver:
    """A stub resolver: the system's (``/etc/resolv.conf``), or the configured servers."""

    def __init__(self, nameservers: Sequence[tuple[str, int]], *, timeout: float) -> None:
        try:
            resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        except dns.resolver.NoResolverConfiguration as exc:
            raise ResolveError(f"no resolver configured: {exc}") from exc
        if nameservers:
            resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)
                                    for host, port in nameservers]
        resolver.cache = None  # TTLs are kept by the caller, which refreshes before expiry
        resolver.lifetime = timeout
        resolver.timeout = timeout
        self._resolver = resolver

    async def addresses(self, hostname: str, rdtype: str) -> Answer:
        """The ``A`` or ``AAAA`` records of ``hostname`` (absolute; no search list).

        An existing name without records of the type is an empty answer; NXDOMAIN,
        SERVFAIL, a timeout or no reachable server raise :class:`ResolveError`.
        """
        name = dns.name.from_text(hostname)
        try:
            answer = await self._resolver.resolve(
                name, dns.rdatatype.from_text(rdtype), search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            raise ResolveError("NXDOMAIN") from exc
        except dns.resolver.NoNameservers as exc:
            raise ResolveError("no server answered (SERVFAIL or refused)") from exc
        except dns.exception.Timeout as exc:
            raise ResolveError("timed out") from exc
        except dns.exception.DNSException as exc:
            raise ResolveError(f"{type(exc).__name__}: {exc}") from exc
        if answer.rrset is None:
            return Answer((), None)
        ttl = answer.chaining_result.minimum_ttl
        return Answer(tuple(rd.to_text() for rd in answer.rrset), int(ttl))
