"""The answer table: every name feddns serves, and its answers pre-encoded.

Why it exists: queries must do almost nothing, so answers are encoded when
data changes (or on first use) and a query only looks them up. The table
keeps the DNS semantics in one pure place (no I/O, no clock):

* names outside every origin are REFUSED, AA=0 (never an open resolver);
* an existing name without the asked type is NODATA, a missing name is
  NXDOMAIN, both with the SOA in the authority section at the negative TTL
  (RFC 2308 §3);
* until every cluster has delivered data (or, for one that has not,
  ``freshness.sync_timeout`` has passed: the sync gate), a name not found
  answers SERVFAIL, never NXDOMAIN (unknown is not absent; CoreDNS does the
  same at startup); a name that exists answers NODATA for a type it lacks
  even then (musl's ``getaddrinfo`` fails the whole lookup when the AAAA
  half of it gets SERVFAIL);
* QTYPE ANY gets the RFC 8482 §4.2 synthesized HINFO;
* zone transfers are REFUSED (RFC 5936 allows refusing them).

Concurrency: the table is only read and written on the event loop thread.
A service's change is applied by one synchronous call, so a query never sees
half of it; this is equivalent to swapping an immutable table, without
copying a million-entry dict for a one-endpoint change.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from cachetools import LRUCache

from feddns.config import Settings
from feddns.dns import wire
from feddns.dns.compiling import (
    OriginZone,
    RRsets,
    apex_records,
    negative_ttl,
    origins_from,
    soa_record,
)
from feddns.dns.planning import (
    Outcome,
    Role,
    ServiceNode,
    ServicePlan,
    Topology,
    evaluate,
    plan_service,
    service_nodes,
)
from feddns.dns.wire import Name, Record
from feddns.model.registry import Registry
from feddns.model.services import ServiceKey
from feddns.policy.health import Damping, Freshness, Isolation, cluster_freshness
from feddns.policy.locality import Locator

Node = RRsets | ServiceNode
"""A name's content: fixed records (apex, empty non-terminals) or a service name."""

STALE_EDE = wire.ede_option(3)  # RFC 8914 §4.4: Stale Answer
_MEMO_TYPES = (wire.A, wire.AAAA, wire.SRV, wire.TXT, wire.SOA, wire.NS, wire.ANY)
MAX_CNAME_CHAIN = 4
NEGATIVE_MEMO_SIZE = 65536

ANY_HINFO_TTL = 8482  # what CoreDNS's `any` plugin uses
_QKEY = struct.Struct("!HH")


class FastMemo(NamedTuple):
    """One answer's ready-made pieces for one kind of query (flags, EDNS, advertised size).

    Each piece is (header after the ID, tail after the question); the handler
    sends the first that fits: ``full``, ``lean`` (no additional section), or
    ``truncated`` (empty, TC=1). ``slot`` is the answer's counting slot.
    """

    full: tuple[bytes, bytes]
    lean: tuple[bytes, bytes]
    truncated: tuple[bytes, bytes]
    slot: int


class CompiledAnswer:
    """An answer's header bits and pre-encoded sections (everything after the question).

    ``body`` holds the answer and authority records; ``additional`` the
    additional records without OPT, kept apart because they are dropped
    first when a UDP answer does not fit (RFC 2181 §9). ``fast`` is the
    handler's memo of ready-made response pieces.
    """

    __slots__ = ("aa", "additional", "ancount", "arcount", "body", "ede", "fast", "nscount",
                 "rcode", "variants")

    def __init__(
        self,
        rcode: int,
        *,
        aa: bool,
        ancount: int = 0,
        nscount: int = 0,
        arcount: int = 0,
        body: bytes = b"",
        additional: bytes = b"",
    ) -> None:
        self.rcode = rcode
        self.aa = aa
        self.ancount = ancount
        self.nscount = nscount
        self.arcount = arcount
        self.body = body
        self.additional = additional
        self.fast: dict[int, FastMemo] = {}
        self.ede = b""
        """An Extended DNS Error option to add for EDNS clients (RFC 8914)."""
        self.variants: tuple[CompiledAnswer, ...] | None = None
        """Record orders to rotate through, one per query (weights, round robin)."""

    def __repr__(self) -> str:
        return (
            f"CompiledAnswer(rcode={self.rcode}, aa={self.aa}, an={self.ancount}, "
            f"ns={self.nscount}, ar={self.arcount})"
        )


REFUSED = CompiledAnswer(wire.REFUSED, aa=False)
SERVFAIL = CompiledAnswer(wire.SERVFAIL, aa=False)


def qkey(qname_lower: bytes, qtype: int, qclass: int) -> bytes:
    """The lookup key of a question: lowercase name then type and class."""
    return qname_lower + _QKEY.pack(qtype, qclass)


def encode_answer(
    qname: bytes,
    *,
    rcode: int,
    answer: Iterable[Record] = (),
    authority: Iterable[Record] = (),
    additional: Iterable[Record] = (),
    known: bytes | None = None,
) -> CompiledAnswer:
    """Encode the sections of an answer to a question for ``qname``.

    With ``known``, only that suffix of the question is used for compression,
    so the bytes fit any question name of the same length under that suffix.
    """
    comp = wire.Compressor(qname, known=known)
    an = ns = ar = 0
    for rec in answer:
        comp.record(rec)
        an += 1
    for rec in authority:
        comp.record(rec)
        ns += 1
    body = comp.take()
    for rec in additional:
        comp.record(rec)
        ar += 1
    return CompiledAnswer(
        rcode, aa=True, ancount=an, nscount=ns, arcount=ar, body=body, additional=comp.take()
    )


class AnswerTable:
    """All served names (per origin) and the memo of their encoded answers per client class."""

    def __init__(self, settings: Settings, *, serial: int, locator: Locator | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.origins: tuple[OriginZone, ...] = origins_from(settings)
        self.topology = Topology.from_settings(settings)
        self.locator = locator if locator is not None else Locator([])
        self.clock = clock
        self.serial = serial & 0xFFFFFFFF
        self.loaded = False
        self.names: dict[bytes, Node] = {}
        self.ents: dict[bytes, int] = {}
        self.static: set[bytes] = set()
        self.plans: dict[ServiceKey, ServicePlan] = {}
        self.by_service: dict[ServiceKey, dict[bytes, ServiceNode]] = {}
        # One memo per client class; class 0 (unknown place) is also ``compiled``.
        self.memos: list[dict[bytes, CompiledAnswer]] = [{} for _ in self.locator.places]
        self.compiled = self.memos[0]
        self._negative: dict[tuple[int, int, int], CompiledAnswer] = {}
        self._rtypes: dict[bytes, frozenset[int]] = {}
        self._watchers: list[Callable[[], None]] = []
        """Told of every change of what any question answers (see :meth:`bump`)."""
        # NXDOMAIN and NODATA for well-known types, per question, bounded: random names
        # (a random-subdomain flood) must not grow memory (cachetools LRU).
        self.negatives: LRUCache[bytes, CompiledAnswer] = LRUCache(NEGATIVE_MEMO_SIZE)
        self.on_miss: Callable[[bytes, OriginZone], bool] | None = None
        """Called for a name not in the table: may compile its service now (True if so)."""
        self._install_apex()

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on every :meth:`bump` (the handler empties its front memo)."""
        self._watchers.append(callback)

    def unwatch(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback`` (its handler moved to another table)."""
        self._watchers = [w for w in self._watchers if w != callback]

    def bump(self) -> None:
        """Say that some question may answer differently from now on.

        The watchers are told at once: the UDP transport answers from the
        handler's front memo without asking the table anything.
        """
        for callback in self._watchers:
            callback()

    # --- lookups (the query path) ------------------------------------------

    def lookup(self, qname_lower: bytes, qtype: int, qclass: int, cls: int = 0) -> CompiledAnswer:
        """The answer for a question (name already lowercased) from client class ``cls``."""
        key = qname_lower + _QKEY.pack(qtype, qclass)
        hit = self.memos[cls].get(key)
        if hit is not None:
            return hit
        return self.resolve(key, qname_lower, qtype, qclass, cls)

    def origin_of(self, name: bytes) -> OriginZone | None:
        """The origin ``name`` falls in, or None (then it is REFUSED)."""
        for origin in self.origins:
            if wire.is_subdomain(name, origin.wire):
                return origin
        return None

    def resolve(self, key: bytes, name: bytes, qtype: int, qclass: int,
                cls: int = 0) -> CompiledAnswer:
        """Work out an answer that was not in the memo (and memoize it when positive)."""
        if qclass != wire.CLASS_IN:
            return REFUSED
        origin = self.origin_of(name)
        if origin is None or qtype in (wire.AXFR, wire.IXFR):
            return REFUSED
        node = self.names.get(name)
        if node is None and self.on_miss is not None and self.on_miss(name, origin):
            node = self.names.get(name)  # compiled on demand just now
        if node is None:
            if name in self.ents or name in self.static:
                node = {}
            elif not self.loaded:
                return SERVFAIL
            else:
                return self._remember_negative(key, qtype, self._negative_answer(
                    origin, name, wire.NXDOMAIN))
        if isinstance(node, ServiceNode):
            return self._service_answer(key, name, node, qtype=qtype, origin=origin, cls=cls)
        if qtype == wire.ANY and node:
            return self._memo(cls, key, self._hinfo(name))
        rrset = node.get(qtype)
        if rrset is None:
            # The name exists (an apex, or a name with names below it): NODATA, even
            # while the sync gate is closed.
            return self._remember_negative(key, qtype, self._negative_answer(
                origin, name, wire.NOERROR))
        compiled = encode_answer(
            name, rcode=wire.NOERROR, answer=rrset, additional=self._additional(rrset)
        )
        return self._memo(cls, key, compiled)

    def _remember_negative(self, key: bytes, qtype: int,
                           answer: CompiledAnswer) -> CompiledAnswer:
        if qtype in _MEMO_TYPES:
            self.negatives[key] = answer
        return answer

    def _memo(self, cls: int, key: bytes, answer: CompiledAnswer) -> CompiledAnswer:
        self.memos[cls][key] = answer
        return answer

    @staticmethod
    def _hinfo(name: bytes) -> CompiledAnswer:
        """RFC 8482 §4.2: ANY gets one synthesized HINFO "RFC8482" ""."""
        hinfo = Record(name, wire.HINFO, ANY_HINFO_TTL, (wire.txt_rdata("RFC8482", ""),))
        return encode_answer(name, rcode=wire.NOERROR, answer=(hinfo,))

    def _service_answer(self, key: bytes, name: bytes, node: ServiceNode, *, qtype: int,
                        origin: OriginZone, cls: int) -> CompiledAnswer:
        if node.plan.expired:
            return SERVFAIL  # known only from expired data: unknown, never NXDOMAIN
        if qtype == wire.ANY:
            return self._memo(cls, key, self._hinfo(name))
        lb = origin.service_address == "load-balancer"
        types = self._rtypes.get(name)
        if types is None:
            types = self._rtypes[name] = record_types(node, lb=lb)
        if qtype not in types and node.role is not Role.FEDV1:
            # The name can never hold this type: NODATA without running the selection
            # (AAAA for an IPv4-only service is a tenth of real traffic). A name known
            # from any source answers NODATA even while the sync gate is closed.
            return self._remember_negative(key, qtype, self._negative_answer(
                origin, name, wire.NOERROR))
        place = self.locator.place(cls)
        outcome = evaluate(node, qtype, place, lb=lb, now=self.clock())
        chain: list[Record] = []
        target = name
        for _ in range(MAX_CNAME_CHAIN):
            if outcome.cname is None:
                break
            chain.append(Record(target, wire.CNAME, outcome.cname_ttl, (Name(outcome.cname),)))
            target = outcome.cname
            next_node = self.names.get(target)
            if not isinstance(next_node, ServiceNode):
                outcome = Outcome(nodata=True)
                break
            outcome = evaluate(next_node, qtype, place, lb=lb, now=self.clock())
        if outcome.rcode == wire.SERVFAIL:
            return SERVFAIL
        if not outcome.variants and not chain:
            return self._negative_answer(origin, name, wire.NOERROR)
        variants = outcome.variants or (((), ()),)
        # RFC 2308 §2.2: a CNAME chain ending in NODATA carries the SOA, so resolvers can
        # cache the denial.
        authority = () if outcome.variants else (
            soa_record(self.settings, origin, self.serial, ttl=negative_ttl(self.settings)),)
        compiled = []
        for answer, additional in variants:
            ans = encode_answer(name, rcode=wire.NOERROR, answer=(*chain, *answer),
                                authority=authority, additional=additional)
            if outcome.stale:
                ans.ede = STALE_EDE
            compiled.append(ans)
        first = compiled[0]
        if len(compiled) > 1:
            first.variants = tuple(compiled)
        if outcome.memoize:
            self._memo(cls, key, first)
        return first

    def _additional(self, rrset: tuple[Record, ...]) -> list[Record]:
        """In-zone addresses of NS hosts (RFC 1035 §6.3.2)."""
        out: list[Record] = []
        for rec in rrset:
            if rec.rtype != wire.NS:
                continue
            node = self.names.get(rec.rdata[0].wire)  # type: ignore[union-attr]
            if isinstance(node, dict):
                out.extend(node.get(wire.A, ()))
                out.extend(node.get(wire.AAAA, ()))
        return out

    def _negative_answer(self, origin: OriginZone, name: bytes, rcode: int) -> CompiledAnswer:
        """NXDOMAIN/NODATA with the SOA; depends only on the origin and the name's length."""
        mkey = (origin.index, len(name), rcode)
        hit = self._negative.get(mkey)
        if hit is None:
            soa = soa_record(self.settings, origin, self.serial, ttl=negative_ttl(self.settings))
            hit = encode_answer(name, rcode=rcode, authority=(soa,), known=origin.wire)
            self._negative[mkey] = hit
        return hit

    # --- changes (the compile path) ------------------------------------------

    def _install_apex(self) -> None:
        for origin in self.origins:
            for name, rrsets in apex_records(self.settings, origin, self.serial).items():
                self._forget(name)
                self.names[name] = rrsets
                self.static.add(name)
                self.static.update(wire.parent_names(name, origin.wire))
        self._negative.clear()
        self.bump()
        # Negative answers carry the SOA serial: a new serial outdates them all.
        self.negatives = LRUCache(NEGATIVE_MEMO_SIZE)

    def _forget(self, name: bytes) -> None:
        """Drop memoized answers of ``name`` in every client class."""
        self.bump()
        self._rtypes.pop(name, None)
        if not self.negatives and not any(self.memos):
            return  # nothing memoized yet (a cold or warm start): nothing to drop
        keys = [name + _QKEY.pack(t, wire.CLASS_IN) for t in _MEMO_TYPES]
        for memo in self.memos:
            if memo:
                for k in keys:
                    memo.pop(k, None)
        negatives = self.negatives
        if negatives:
            for k in keys:
                negatives.pop(k, None)

    def apply_service(self, key: ServiceKey, plan: ServicePlan | None,
                      nodes: dict[bytes, ServiceNode]) -> bool:
        """Replace one service's plan and names; True when something visible changed."""
        if self.plans.get(key) == plan and key in self.by_service:
            # Equal plans answer the same; only refresh the nodes (explain ages).
            for name, node in nodes.items():
                self.names[name] = node
                self._rtypes.pop(name, None)
            return False
        old = self.by_service.get(key, {})
        for name in old:
            self._forget(name)
            self.names.pop(name, None)
            self._unref_parents(name)
        for name, node in nodes.items():
            self._forget(name)
            self.names[name] = node
            self._ref_parents(name)
        if nodes and plan is not None:
            self.by_service[key] = nodes
            self.plans[key] = plan
        else:
            self.by_service.pop(key, None)
            self.plans.pop(key, None)
        return bool(old) or bool(nodes)

    def _parents(self, name: bytes) -> list[bytes]:
        origin = self.origin_of(name)
        return wire.parent_names(name, origin.wire) if origin is not None else []

    def _ref_parents(self, name: bytes) -> None:
        for parent in self._parents(name):
            count = self.ents.get(parent, 0)
            if count == 0:
                self._forget(parent)  # was NXDOMAIN, is NODATA now
            self.ents[parent] = count + 1

    def _unref_parents(self, name: bytes) -> None:
        for parent in self._parents(name):
            count = self.ents.get(parent, 0) - 1
            if count <= 0:
                self.ents.pop(parent, None)
                self._forget(parent)  # was NODATA, is NXDOMAIN now
            else:
                self.ents[parent] = count

    def set_serial(self, serial: int) -> None:
        """Move the SOA serial (re-encodes the apex and every negative answer)."""
        self.serial = serial & 0xFFFFFFFF
        self._install_apex()

    def summary(self) -> Mapping[str, int]:
        """Sizes for status and metrics."""
        return {
            "names": len(self.names),
            "services": len(self.by_service),
            "compiled_answers": sum(len(m) for m in self.memos),
            "serial": self.serial,
        }


def next_serial(current: int, wall_now: float) -> int:
    """The serial after a visible change: wall-clock seconds, but always forward."""
    return max(current + 1, int(wall_now)) & 0xFFFFFFFF


def service_key_of(name: bytes, origin: OriginZone) -> ServiceKey | None:
    """The ``(namespace, name)`` a name under ``<svc>.<ns>.svc.<origin>`` belongs to."""
    labels = []
    pos = 0
    cut = len(name) - len(origin.wire)
    while pos < cut:
        n = name[pos]
        labels.append(name[pos + 1 : pos + 1 + n])
        pos += n + 1
    if len(labels) < 3 or labels[-1] != b"svc":
        return None
    try:
        return (labels[-2].decode("ascii"), labels[-3].decode("ascii"))
    except UnicodeDecodeError:
        return None


def compile_one(table: AnswerTable, registry: Registry, key: ServiceKey, *, wall_now: float,
                now: float | None = None) -> bool:
    """Compile one dirty service now (a query is waiting for it); True when it was dirty."""
    if key not in registry.dirty:
        return False
    registry.dirty.discard(key)
    at = math.inf if now is None else now
    if _compile_key(table, registry, key, at, freshness_of(table.settings, registry, at)):
        table.set_serial(next_serial(table.serial, wall_now))
    return True


def freshness_of(settings: Settings, registry: Registry, at: float) -> dict[str, Freshness]:
    """How every cluster counts at ``at``: damping, and self-isolation across clusters."""
    sel = settings.selection
    iso = sel.isolation
    return cluster_freshness(
        registry.clusters.values(), now=at, damping=Damping(sel.hold_down, sel.readmit_after),
        isolation=Isolation(iso.window, iso.fraction, iso.max_hold))


def _compile_key(table: AnswerTable, registry: Registry, key: ServiceKey, at: float,
                 freshness: Mapping[str, Freshness]) -> bool:
    views = registry.views(key)
    expired = False
    if not views:
        # Known only from expired clusters: keep every name it had, answering SERVFAIL.
        views = registry.views(key, expired=True)
        expired = bool(views)
    plan = plan_service(key, views, settings=table.settings, topology=table.topology, now=at,
                        expired=expired, freshness=freshness)
    nodes: dict[bytes, ServiceNode] = {}
    if plan is not None:
        for origin in table.origins:
            nodes.update(service_nodes(plan, origin, table.settings, table.topology))
    return table.apply_service(key, plan, nodes)


def sync_table(table: AnswerTable, registry: Registry, *, wall_now: float,
               now: float | None = None, limit: int | None = None) -> int:
    """Recompile the services the registry marked dirty; return how many changed visibly.

    ``now`` (monotonic) drives flap damping; None means "long after every
    transition" (no damping), which is what socket-free tables use. With
    ``limit``, at most that many services are compiled and the rest stay
    dirty, so a caller on the event loop can yield to queries between batches.
    The SOA serial moves only when a service's plan differs from before
    (CoreDNS bumps its serial on the same condition, ``endpointsEquivalent``).
    NXDOMAIN is allowed only once every cluster has loaded *and* everything
    is compiled: before that a missing name may just not be compiled yet.
    """
    at = math.inf if now is None else now
    changed = 0
    freshness = freshness_of(table.settings, registry, at)
    for key in registry.take_dirty(limit):
        if _compile_key(table, registry, key, at, freshness):
            changed += 1
    loaded = registry.is_loaded and not registry.dirty
    if loaded != table.loaded:
        table.loaded = loaded
        table.bump()  # SERVFAIL turns into NXDOMAIN (or back)
    if changed:
        table.set_serial(next_serial(table.serial, wall_now))
    return changed



def record_types(node: ServiceNode, *, lb: bool) -> frozenset[int]:
    """The types ``node`` can ever answer with records (whatever the client and health)."""
    role = node.role
    types: set[int] = set()
    if role is Role.EXPLAIN:
        types.add(wire.TXT)
    elif role is Role.PORT:
        types.add(wire.SRV)
    else:
        cands = [node.candidate] if role is Role.ENDPOINT and node.candidate else \
            node.plan.candidates
        for c in cands:
            if c is None:
                continue
            for a in (c.lb_addresses if lb and c.lb_addresses else c.addresses):
                types.add(wire.AAAA if ":" in a else wire.A)
        if role is Role.BASE and node.plan.ports:
            types.add(wire.SRV)
    return frozenset(types)
