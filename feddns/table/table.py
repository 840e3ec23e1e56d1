"""The answer table: every name feddns serves, and its answers pre-encoded.

Why it exists: queries must do almost nothing, so answers are encoded when
data changes (or on first use) and a query only looks them up. The table
keeps the DNS semantics of looking a question up in one pure place (no I/O,
no clock: ``now`` is a parameter):

* names outside every origin are REFUSED, AA=0 (never an open resolver);
* an existing name without the asked type is NODATA, a missing name is
  NXDOMAIN, both with the SOA in the authority section at the negative TTL
  (RFC 2308 §3);
* until the sync gate opens (every cluster has delivered data, or
  ``freshness.sync_timeout`` has passed for those that did not), a name not
  found answers SERVFAIL, never NXDOMAIN (unknown is not absent; CoreDNS does
  the same at startup); a name that exists answers NODATA for a type it lacks
  even then (musl's ``getaddrinfo`` fails the whole lookup when the AAAA half
  of it gets SERVFAIL);
* QTYPE ANY gets the RFC 8482 §4.2 synthesized HINFO;
* zone transfers are REFUSED (RFC 5936 allows refusing them).

The compiler (:mod:`.compiler`) is the only writer: it replaces one service's
names at a time (:meth:`AnswerTable.apply_service`) and moves the serial. The
table never compiles; a lookup of a name whose service is still waiting to be
compiled asks the compiler through the narrow :class:`Pending` protocol.

Concurrency: the table is only read and written on the event loop thread.
A service's change is applied by one synchronous call, so a query never sees
half of it; this is equivalent to swapping an immutable table, without
copying a million-entry dict for a one-endpoint change.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Protocol

from cachetools import LRUCache

from feddns import wire
from feddns.model.services import ServiceKey
from feddns.policy.locality import Locator
from feddns.policy.spreading import Demand
from feddns.table.answers import REFUSED, SERVFAIL, STALE_EDE, CompiledAnswer, encode_answer
from feddns.table.evaluation import Outcome, evaluate
from feddns.table.names import Role, ServiceNode, record_types
from feddns.table.options import TableOptions
from feddns.table.origins import OriginZone, RRsets, apex_records, origins_from, soa_record
from feddns.table.plans import ServicePlan
from feddns.wire import Name, Record

Node = RRsets | ServiceNode
"""A name's content: fixed records (apex, empty non-terminals) or a service name."""

_MEMO_TYPES = (wire.A, wire.AAAA, wire.SRV, wire.TXT, wire.SOA, wire.NS, wire.ANY, wire.CNAME,
               wire.PTR)
MAX_CNAME_CHAIN = 4
NEGATIVE_MEMO_SIZE = 65536
ANY_HINFO_TTL = 8482  # what CoreDNS's `any` plugin uses
_QKEY = struct.Struct("!HH")

class Pending(Protocol):
    """The compiler, as a lookup sees it."""

    def compile_pending(self, name: bytes, origin: OriginZone) -> bool:
        """Compile the service ``name`` belongs to if it is waiting; True if it was."""


class AnswerTable:
    """All served names (per origin) and the memo of their encoded answers per client class."""

    def __init__(self, options: TableOptions, *, serial: int,
                 locator: Locator | None = None) -> None:
        self.options = options
        self.origins: tuple[OriginZone, ...] = origins_from(options)
        self.forward_origins = tuple(o for o in self.origins if not o.reverse)
        """The origins service names live under (the rest are reverse zones)."""
        self.reverse_wires = frozenset(o.wire for o in self.origins if o.reverse)
        self._origin_by_wire = {o.wire: o for o in self.origins}
        self.ptr_refs: dict[bytes, dict[bytes, int]] = {}
        """Reverse name -> each PTR target and how many services give it."""
        self.ptr_by_service: dict[ServiceKey, Mapping[bytes, frozenset[bytes]]] = {}
        self.locator = locator if locator is not None else Locator([])
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
        self.demand: Demand | None = None
        """Where the queries come from (measured by the runtime): the input of
        capacity-aware locality, like ``options`` is the config's."""
        self.pending: Pending | None = None
        """Asked about a name not in the table: its service may be waiting to be compiled
        (the compiler compiles it now, so a query never waits for its batch)."""
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

    def lookup(self, qname_lower: bytes, qtype: int, qclass: int, cls: int = 0, *,
               now: float) -> CompiledAnswer:
        """The answer for a question (name already lowercased) from client class ``cls``.

        ``now`` (monotonic) is read only by records that show ages (explain).
        """
        key = qname_lower + _QKEY.pack(qtype, qclass)
        hit = self.memos[cls].get(key)
        if hit is not None:
            return hit
        return self.resolve(key, qname_lower, qtype, qclass, cls, now=now)

    def origin_of(self, name: bytes) -> OriginZone | None:
        """The origin ``name`` falls in, or None (then it is REFUSED)."""
        if len(self.origins) <= 4:
            for origin in self.origins:
                if wire.is_subdomain(name, origin.wire):
                    return origin
            return None
        # Many origins (reverse zones): each suffix of the name looked up once.
        by_wire = self._origin_by_wire
        pos = 0
        while True:
            found = by_wire.get(name[pos:])
            if found is not None or not name[pos]:
                return found
            pos += name[pos] + 1

    def resolve(self, key: bytes, name: bytes, qtype: int, qclass: int,
                cls: int = 0, *, now: float) -> CompiledAnswer:
        """Work out an answer that was not in the memo (and memoize it when positive)."""
        if qclass != wire.CLASS_IN:
            return REFUSED
        origin = self.origin_of(name)
        if origin is None or qtype in (wire.AXFR, wire.IXFR):
            return REFUSED
        node = self.names.get(name)
        if node is None and self.pending is not None and self.pending.compile_pending(name,
                                                                                      origin):
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
            return self._service_answer(key, name, node, qtype=qtype, origin=origin, cls=cls,
                                        now=now)
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
                        origin: OriginZone, cls: int, now: float) -> CompiledAnswer:
        if node.plan.expired:
            return SERVFAIL  # known only from expired data: unknown, never NXDOMAIN
        external = node.plan.external and node.role is Role.BASE
        if qtype == wire.ANY and not external:
            return self._memo(cls, key, self._hinfo(name))
        lb = origin.service_address == "load-balancer"
        types = self._rtypes.get(name)
        if types is None:
            types = self._rtypes[name] = record_types(node, lb=lb)
        if qtype not in types and node.role is not Role.FEDV1 and not external:
            # The name can never hold this type: NODATA without running the selection
            # (AAAA for an IPv4-only service is a tenth of real traffic). A name known
            # from any source answers NODATA even while the sync gate is closed.
            return self._remember_negative(key, qtype, self._negative_answer(
                origin, name, wire.NOERROR))
        place = self.locator.place(cls)
        outcome = evaluate(node, qtype, place, lb=lb, now=now)
        chain: list[Record] = []
        target = name
        stale = outcome.stale
        leaves = False
        for _ in range(MAX_CNAME_CHAIN):
            if outcome.cname is None:
                break
            chain.append(Record(target, wire.CNAME, outcome.cname_ttl, (Name(outcome.cname),)))
            target = outcome.cname
            if qtype == wire.CNAME or self.origin_of(target) is None:
                # Asked for the CNAME itself, or a target outside our origins (an
                # ExternalName's usual one): the resolver takes it from here, and no SOA
                # of ours may speak for the target (RFC 1034 §4.3.2 step 3a).
                outcome = Outcome()
                leaves = True
                break
            next_node = self.names.get(target)
            if not isinstance(next_node, ServiceNode):
                outcome = Outcome(nodata=True)
                break
            outcome = evaluate(next_node, qtype, place, lb=lb, now=now)
            stale = stale or outcome.stale
        if outcome.rcode == wire.SERVFAIL:
            return SERVFAIL
        if not outcome.variants and not chain:
            return self._negative_answer(origin, name, wire.NOERROR)
        variants = outcome.variants or (((), ()),)
        # RFC 2308 §2.2: a CNAME chain ending in NODATA carries the SOA, so resolvers can
        # cache the denial.
        authority = () if outcome.variants or leaves else (
            soa_record(self.options, origin, self.serial, ttl=self.options.soa.negative_ttl),)
        compiled = []
        for answer, additional in variants:
            ans = encode_answer(name, rcode=wire.NOERROR, answer=(*chain, *answer),
                                authority=authority, additional=additional)
            if stale:
                ans.ede = STALE_EDE
            compiled.append(ans)
        first = compiled[0]
        if len(compiled) > 1:
            first.variants = tuple(compiled)
        if outcome.memoize and qtype in _MEMO_TYPES:
            # Only the types a change forgets (_forget): a CNAME answers every type, and
            # an MX answer memoized here would outlive the CNAME's next change.
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
            soa = soa_record(self.options, origin, self.serial,
                             ttl=self.options.soa.negative_ttl)
            hit = encode_answer(name, rcode=rcode, authority=(soa,), known=origin.wire)
            self._negative[mkey] = hit
        return hit

    # --- changes (the compile path) ------------------------------------------

    def _install_apex(self) -> None:
        for origin in self.origins:
            for name, rrsets in apex_records(self.options, origin, self.serial).items():
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
                      nodes: dict[bytes, ServiceNode],
                      pointers: Mapping[bytes, frozenset[bytes]] | None = None) -> bool:
        """Replace one service's plan and names; True when something visible changed.

        ``pointers`` are its PTRs (reverse name -> targets, :mod:`.reverse`).
        """
        self._apply_pointers(key, pointers or {})
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

    def _apply_pointers(self, key: ServiceKey,
                        pointers: Mapping[bytes, frozenset[bytes]]) -> None:
        """Replace one service's PTRs; every name sharing a reverse name keeps its own."""
        old = self.ptr_by_service.get(key, {})
        if old == pointers:
            return
        for rev, targets in old.items():
            refs = self.ptr_refs[rev]
            for target in targets:
                refs[target] -= 1
                if not refs[target]:
                    del refs[target]
        for rev, targets in pointers.items():
            refs = self.ptr_refs.setdefault(rev, {})
            for target in targets:
                refs[target] = refs.get(target, 0) + 1
        for rev in old.keys() | pointers.keys():
            self._lay_out_pointer(rev)
        if pointers:
            self.ptr_by_service[key] = pointers
        else:
            self.ptr_by_service.pop(key, None)

    def _lay_out_pointer(self, rev: bytes) -> None:
        refs = self.ptr_refs.get(rev)
        had = rev in self.names
        self._forget(rev)
        if refs:
            ttl = self.options.record_ttl
            self.names[rev] = {wire.PTR: tuple(Record(rev, wire.PTR, ttl, (Name(t),))
                                               for t in sorted(refs))}
            if not had:
                self._ref_parents(rev)
        else:
            self.ptr_refs.pop(rev, None)
            if had:
                del self.names[rev]
                self._unref_parents(rev)

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
