"""Query admission and connection limits: the source ACL, response rate limiting, TCP caps.

Why it exists: a DNS server reachable by anyone is a reflector and a target;
these are the knobs that keep it useful under abuse (dns-protocol.md §5, §10):

* ``dns.allow``: queries from sources outside these CIDRs get REFUSED, over
  UDP and TCP. The verdict is cached per source address (bounded), so the
  per-query cost is one dict lookup.
* ``dns.rrl``: response rate limiting after Knot's ``mod-rrl``, simplified to
  one token bucket per client prefix (/24 for IPv4, /56 for IPv6 by default).
  UDP only: TCP needs a real handshake, so it cannot be spoofed and is the way
  out for a real client caught in a limit. Over the limit, every ``slip``-th
  response is sent truncated (TC=1, question only, the OPT kept) so that such
  a client retries over TCP, and the rest are dropped; both are counted.
  Per datagram the cost is one clock read and one dict lookup (source address
  to its prefix's bucket; the prefix is worked out once per address). The
  bucket table is bounded: when it is full, buckets idle long enough to have
  refilled (a new bucket would be the same) are evicted, and if that frees
  too little the oldest go.
* ``names.explain_allow``: the ``_explain`` names, which show cluster names,
  regions and health, only for sources in these CIDRs (:meth:`Limits.may_explain`);
  asked only on a memo miss, since explain answers are never memoized.
* ``dns.max_tcp_clients`` and ``dns.tcp_handshake_timeout``: read by the TCP
  transport (``feddns.dns.server``) on every accepted connection.

:class:`Limits` holds all of it for one handler and is updated in place when
the config is reloaded, so its counters only grow (they are Prometheus
counters) and a reload that leaves ``dns.rrl`` alone keeps the buckets.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Iterable
from time import monotonic
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from feddns.config import DnsConfig, RrlConfig

ANSWER = 0
"""Verdict: answer normally."""
REFUSE = 1
"""Verdict bit: the source is outside ``dns.allow``; answer REFUSED."""
SLIP = 2
"""Verdict bit: over the rate limit; send the answer truncated (TC=1, no records)."""
DROP = 4
"""Verdict bit: over the rate limit; send nothing."""

CACHE_SIZE = 65536
"""Source addresses remembered by the ACL and by the prefix cache (cleared when full)."""

RRL_TABLE_SIZE = 65536
"""Client prefixes with a bucket at once (idle ones are evicted first when full)."""


def _parse(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of a socket peer string (scope id dropped, IPv4-mapped IPv6 unmapped)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class Acl:
    """Source networks allowed to query; the verdict per source address is cached."""

    __slots__ = ("_cache", "cache_size", "networks")

    def __init__(self, cidrs: Iterable[str], *, cache_size: int = CACHE_SIZE) -> None:
        self.networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self.cache_size = cache_size
        self._cache: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        """True when ``host`` (a peer address string) lies in an allowed network."""
        hit = self._cache.get(host)
        if hit is None:
            address = _parse(host)
            hit = address is not None and any(
                address.version == n.version and address in n for n in self.networks)
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[host] = hit
        return hit


def prefix_key(host: str, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """The client prefix of ``host`` as text (``192.0.2.0/24``); unparsable hosts as is."""
    address = _parse(host)
    if address is None:
        return host
    bits, prefix, family = (32, ipv4_prefix, socket.AF_INET) if address.version == 4 else \
        (128, ipv6_prefix, socket.AF_INET6)
    shift = bits - prefix
    value = int(address) >> shift << shift
    return f"{socket.inet_ntop(family, value.to_bytes(bits // 8, 'big'))}/{prefix}"


class Rrl:
    """Token buckets per client prefix (see the module docstring)."""

    __slots__ = ("_buckets", "_hosts", "burst", "evicted", "ipv4_prefix", "ipv6_prefix",
                 "rate", "slip", "table_size")

    def __init__(self, *, rate: float, burst: float, slip: int, ipv4_prefix: int = 24,
                 ipv6_prefix: int = 56, table_size: int = RRL_TABLE_SIZE) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.slip = slip
        self.ipv4_prefix = ipv4_prefix
        self.ipv6_prefix = ipv6_prefix
        self.table_size = table_size
        self.evicted = 0
        """Buckets evicted because the table was full."""
        # prefix -> [tokens, time of the last refill, responses limited so far]
        self._buckets: dict[str, list[float]] = {}
        # source address -> its prefix's bucket (cleared when full, and on eviction so
        # that no address keeps a bucket the table no longer holds)
        self._hosts: dict[str, list[float]] = {}

    @classmethod
    def from_config(cls, config: RrlConfig) -> Rrl:
        """The limiter a ``dns.rrl`` section describes."""
        rate = config.responses_per_second
        burst = config.burst if config.burst is not None else max(1, math.ceil(rate))
        return cls(rate=rate, burst=burst, slip=config.slip, ipv4_prefix=config.ipv4_prefix,
                   ipv6_prefix=config.ipv6_prefix)

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, host: str, now: float) -> int:
        """``ANSWER``, ``SLIP`` or ``DROP`` for one response to ``host`` at ``now``."""
        bucket = self._hosts.get(host)
        if bucket is None:
            bucket = self._bucket_of(host, now)
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        if tokens > self.burst:  # noqa: PLR1730 (min() would add a call per datagram)
            tokens = self.burst
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return ANSWER
        bucket[0] = tokens
        bucket[2] += 1.0
        if self.slip and not bucket[2] % self.slip:
            return SLIP
        return DROP

    def _bucket_of(self, host: str, now: float) -> list[float]:
        """The bucket of ``host``'s prefix (a full one if new), remembered for ``host``."""
        key = prefix_key(host, self.ipv4_prefix, self.ipv6_prefix)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.table_size:
                self._evict(now)
            bucket = self._buckets[key] = [self.burst, now, 0.0]
        if len(self._hosts) >= CACHE_SIZE:
            self._hosts.clear()
        self._hosts[host] = bucket
        return bucket

    def _evict(self, now: float) -> None:
        """Make room: drop refilled buckets, then the oldest until a quarter is free."""
        self._hosts.clear()
        refill = self.burst / self.rate
        before = len(self._buckets)
        self._buckets = {k: b for k, b in self._buckets.items() if now - b[1] < refill}
        excess = len(self._buckets) - self.table_size * 3 // 4
        if excess > 0:
            # Insertion order is creation order: the oldest prefixes go first.
            for key in list(self._buckets)[:excess]:
                del self._buckets[key]
        self.evicted += before - len(self._buckets)


class Limits:
    """The admission limits of one handler, from the ``dns`` section (updated in place).

    ``acl`` and ``rrl`` are None when off; ``active`` is True when either is on
    (the handler then calls :meth:`admit` for every query).
    """

    def __init__(self, dns: DnsConfig | None = None) -> None:
        self.max_tcp_clients = 1000
        """Most TCP connections open at once (the transport sheds the rest)."""
        self.tcp_handshake_timeout = 5.0
        """Seconds from accept to the first complete query over TCP."""
        self.acl: Acl | None = None
        self.rrl: Rrl | None = None
        self.active = False
        self.refused = 0
        """Queries answered REFUSED: the source is outside ``dns.allow`` (or, for an
        ``_explain`` name, outside ``names.explain_allow``)."""
        self.slipped = 0
        """Rate-limited UDP responses sent truncated (TC=1)."""
        self.dropped = 0
        """Rate-limited UDP responses not sent."""
        self._allow: tuple[str, ...] = ()
        self._rrl_config: RrlConfig | None = None
        if dns is not None:
            self.configure(dns)

    def configure(self, dns: DnsConfig) -> None:
        """Follow a (new) ``dns`` section; unchanged parts keep their state."""
        self.max_tcp_clients = dns.max_tcp_clients
        self.tcp_handshake_timeout = dns.tcp_handshake_timeout
        allow = tuple(dns.allow)
        if allow != self._allow:
            self._allow = allow
            self.acl = Acl(allow) if allow else None
        if dns.rrl != self._rrl_config:
            self._rrl_config = dns.rrl
            self.rrl = Rrl.from_config(dns.rrl) if dns.rrl is not None else None
        self.active = self.acl is not None or self.rrl is not None

    def may_explain(self, allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
                    addr: tuple[str, int] | None) -> bool:
        """True when ``addr`` may ask ``_explain`` names (``allow`` empty: everyone).

        A refusal is counted with the ACL's. The networks come from the answer table's
        options, so a reload changes them with the table.
        """
        if not allow or addr is None:
            return True
        address = _parse(addr[0])
        if address is not None and any(address.version == n.version and address in n
                                       for n in allow):
            return True
        self.refused += 1
        return False

    def admit(self, data: bytes, host: str, tcp: bool) -> int:
        """The verdict for one message from ``host``: ``ANSWER`` or a mix of the bits.

        Packets the handler drops anyway (shorter than a header, or responses)
        are let through untouched: they must not use up a prefix's tokens.
        """
        if len(data) < 12 or data[2] & 0x80:
            return ANSWER
        verdict = ANSWER
        acl = self.acl
        if acl is not None:
            allowed = acl._cache.get(host)  # the hit, inline: this runs per query
            if allowed is None:
                allowed = acl.allows(host)
            if not allowed:
                verdict = REFUSE
        rrl = self.rrl
        if rrl is not None and not tcp:
            limited = rrl.check(host, monotonic())
            if limited == DROP:
                self.dropped += 1
                return DROP
            verdict |= limited
        return verdict
