"""Merging peers' verified bus messages into the registry (no I/O, no clock).

Why it exists: this is where "unknown is not absent" and "lost is stale, not empty" are
kept for data that arrives over the bus. It holds a shadow of every cluster heard on the
bus and decides what reaches the registry:

* **Completeness.** A cluster's manifest (``snapshot``) lists its service
  keys. Until a manifest and a service message for each of its keys have
  arrived, the cluster stays as it was (``syncing`` = unknown): a retained
  message lost by a broker restart is "not yet known", never "removed". A
  service disappears only when a newer manifest leaves it out. The first
  complete view is written with one ``Registry.replace``; later changes one
  ``put_service`` each.
* **One refused service is one service.** A service message that fails a
  check (an address outside the policy, a bad MAC, ...) costs that service
  only, never its cluster: the cluster's other services and its manifest still
  apply, and the key counts as *received and rejected*, no longer as missing,
  so the cluster completes, loads and its fresh data answers. If an earlier
  version of that service was accepted it stays (the last good data keeps
  answering); if none was, the service is absent for that cluster. A later
  valid message for the key replaces the rejection. Gap repair does not ask for
  a rejected topic again: the broker would send the same retained message. The
  rejection is forgotten when a newer manifest no longer lists the key, so a
  key that leaves and comes back is waited for (and asked for) anew.

  A rejection *after* the MAC was verified (address policy, replay window)
  comes from a key holder: it is ordered by its generation against the version
  held (an older one changes nothing) and remembered for any key, like an
  accepted message. A rejection *before* it (bad MAC, unknown key, oversized,
  malformed header) says nothing trustworthy, not even that the origin sent
  it; it is remembered all the same, but only for a key the current manifest
  lists (so made-up topics cost no memory) and it never replaces data. The
  reasoning: whoever can publish on that topic can already overwrite (or
  delete) the retained message there, so asking the broker again only fetches
  the same bytes, forever; the origin's next publication of the service (a
  change, a reconnect, ``republish_interval``) repairs it. Waiting instead
  would let one forged message hold a whole cluster "unknown" (SERVFAIL, not
  ready) until then, which hands an attacker more than the one service they
  could already spoil.
* **Ordering.** Per topic, only a newer generation is applied; an equal one
  is a duplicate (QoS 1 redelivery, retained messages after a resubscribe)
  and ignored; an older one is rejected. A service message that is not in a
  newer manifest is a leftover or a replay and is rejected the same way.
* **Freshness** is judged by the local monotonic receive time of "online"
  heartbeats (never the sender's clock), per publishing session: a cluster is
  fresh while at least one session publishing it is live (heard within
  ``peer_timeout``, not ended by its "offline" status or its last will) and
  reports its own source fresh. Replicas of one cluster's feddns each publish
  it, so a rolling restart never makes peers see the cluster offline. With no
  live session the data turns STALE, never absent; a cluster whose every
  live publisher reports its source stale is stale here too. Status
  generations are ordered per session (replicas' clocks differ). The
  registry's own ageing (stale -> expired after ``max_stale``) is left alone.
* **Two paths to one cluster.** For a cluster this instance sources itself
  (``own_clusters``), the bus never writes while that source is FRESH. When
  the source is syncing or stale and another instance publishes the same
  cluster with complete data newer than the registry's, that data is
  written but the cluster stays STALE (relayed data is a fallback, never
  "fresh"); from then on it follows the bus until the direct source writes
  again or turns fresh, which always wins. Losing either path therefore
  never empties answers.

Timestamps are checked against the local wall clock within the replay window; for
retained messages (delivered on subscribe, possibly stored up to one republish interval
earlier) the window reaches ``retained_age`` further into the past. A last will carries
its session's connect-time timestamp, so it is accepted outside the window when it ends
the session currently heard online (it cannot have been seen, hence replayed, before the
broker sent it).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

from feddns.model.registry import ClusterEntry, ClusterState, Registry
from feddns.model.services import ClusterSnapshot, Service, ServiceKey
from feddns.sources.mqtt.codec import (
    Codec,
    Header,
    Reason,
    Rejected,
    ServiceMessage,
    SnapshotMessage,
    StatusMessage,
    check_time,
)
from feddns.sources.mqtt.peers import (
    MAX_LOGGED,
    MAX_SESSIONS,
    MAX_UNKNOWN_CLUSTERS,
    LiveSession,
    PeerCluster,
    ServiceRejection,
    is_relayed,
)
from feddns.sources.mqtt.topics import TopicKind, Topics

log = logging.getLogger(__name__)

class Merger:
    """Applies verified messages to per-cluster shadows, and the shadows to the registry."""

    def __init__(
        self,
        registry: Registry,
        codec: Codec,
        *,
        own_clusters: Iterable[str],
        instance: str,
        peer_timeout: float,
        replay_window: float,
        retained_age: float,
        accept_unknown_clusters: bool = False,
    ) -> None:
        self.registry = registry
        self.codec = codec
        self.own_clusters = frozenset(own_clusters)
        self.instance = instance
        self.peer_timeout = peer_timeout
        self.replay_window = replay_window
        self.retained_age = retained_age
        self.accept_unknown_clusters = accept_unknown_clusters
        self.peers: dict[str, PeerCluster] = {}
        self.counts: Counter[str] = Counter()
        """received, applied, duplicates, own (echoes of this instance), cleared."""
        self.rejected: Counter[str] = Counter()
        """Rejected messages by :class:`Reason`."""
        self._logged: set[tuple[str, str]] = set()

    # --- receiving -----------------------------------------------------------

    def receive(self, topic: str, payload: bytes, *, retained: bool, now: float,
                wall_now: float) -> None:
        """Verify one message and record it in its cluster's shadow (see :meth:`flush`)."""
        self.counts["received"] += 1
        if not payload:
            # A retained message being deleted; the manifest says what that means.
            self.counts["cleared"] += 1
            return
        if self.codec.is_own(topic, payload):  # an echo, unverified: see Codec.is_own
            self.counts["own"] += 1
            return
        header: Header | None = None
        try:
            msg = self.codec.decode(topic, payload)
            header = msg.header
            self._accept(msg, retained=retained, now=now, wall_now=wall_now)
        except Rejected as exc:
            header = exc.header or header
            if header is not None and header.instance == self.instance:
                # An echo of this instance's own message: its own source vouched for it,
                # and the local address policy is for peers (an own public load-balancer
                # address is no attack on anyone).
                self.counts["own"] += 1
                return
            self._reject(exc, topic)
            self._remember_rejection(topic, exc, header, now=now)

    def _peer(self, origin: str) -> PeerCluster:
        """The shadow of ``origin``, made on first hearing of it (if it may be heard)."""
        peer = self.peers.get(origin)
        if peer is None:
            known = origin in self.registry.clusters
            if not known and not self.accept_unknown_clusters:
                raise Rejected(Reason.UNKNOWN_CLUSTER, "not in the configuration")
            unknown = sum(1 for p in self.peers if p not in self.registry.clusters)
            if not known and unknown >= MAX_UNKNOWN_CLUSTERS:
                raise Rejected(Reason.UNKNOWN_CLUSTER, "too many unknown clusters")
            peer = self.peers[origin] = PeerCluster(origin)
        return peer

    def _accept(self, msg: ServiceMessage | SnapshotMessage | StatusMessage, *,
                retained: bool, now: float, wall_now: float) -> None:
        h = msg.header
        if h.instance == self.instance:
            self.counts["own"] += 1
            return
        peer = self._peer(h.origin)
        peer.signed_with = f"{h.scheme} {h.key_id}"
        extra_age = self.retained_age if retained else 0.0
        if isinstance(msg, StatusMessage):
            self._status(peer, msg, now=now, wall_now=wall_now, extra_age=extra_age)
            return
        check_time(h, wall_now=wall_now, window=self.replay_window, extra_age=extra_age)
        if isinstance(msg, ServiceMessage):
            self._service(peer, h, msg.service, now=now)
        else:
            self._snapshot(peer, h, msg.keys, now=now)

    def _duplicate(self) -> None:
        self.counts["duplicates"] += 1

    def _service(self, peer: PeerCluster, h: Header, service: Service, *, now: float) -> None:
        key = service.key
        old = peer.services.get(key)
        if old is not None and h.gen == old[0]:
            return self._duplicate()
        if old is not None and h.gen < old[0]:
            raise Rejected(Reason.OLD_GENERATION, f"service {key[0]}/{key[1]}")
        if peer.manifest is not None and key not in peer.manifest and h.gen <= peer.manifest_gen:
            # A newer manifest no longer lists it: a leftover retained message or a replay.
            raise Rejected(Reason.OLD_GENERATION, f"service {key[0]}/{key[1]} was removed")
        peer.services[key] = (h.gen, service)
        peer.missing.discard(key)
        peer.rejected.pop(key, None)
        peer.dirty.add(key)
        peer.last_change = now
        self.counts["applied"] += 1
        return None

    def _snapshot(self, peer: PeerCluster, h: Header, keys: frozenset[ServiceKey], *,
                  now: float) -> None:
        if h.gen == peer.manifest_gen:
            return self._duplicate()
        if h.gen < peer.manifest_gen:
            raise Rejected(Reason.OLD_GENERATION, "manifest")
        old = peer.manifest if peer.manifest is not None else frozenset()
        peer.manifest, peer.manifest_gen = keys, h.gen
        gone = [k for k, (gen, _) in peer.services.items() if k not in keys and gen <= h.gen]
        for key in gone:
            del peer.services[key]
        for key in [k for k, r in peer.rejected.items()
                    if k not in keys and (r.gen is None or r.gen <= h.gen)]:
            del peer.rejected[key]  # no longer listed: if it comes back, it is waited for
        peer.missing = {k for k in keys if k not in peer.services and k not in peer.rejected}
        peer.dirty.update(gone)
        peer.dirty.update(old ^ keys)
        peer.last_change = now
        self.counts["applied"] += 1
        return None

    def _status(self, peer: PeerCluster, msg: StatusMessage, *, now: float, wall_now: float,
                extra_age: float) -> None:
        h = msg.header
        live = peer.sessions.get(msg.session)
        if msg.online:
            check_time(h, wall_now=wall_now, window=self.replay_window, extra_age=extra_age)
            if live is not None and h.gen == live.gen:
                return self._duplicate()
            if (live is not None and h.gen < live.gen) or msg.session in peer.ended:
                raise Rejected(Reason.OLD_GENERATION, "status")
            if live is None:
                self._prune(peer, now)
                live = peer.sessions[msg.session] = LiveSession(h.instance, h.gen, now, msg.state)
            live.gen, live.last_heartbeat, live.reported = h.gen, now, msg.state
            live.instance = h.instance
            peer.status_gen = max(peer.status_gen, h.gen)
            peer.online, peer.session, peer.reported = True, msg.session, msg.state
            peer.instance = h.instance
            peer.last_heartbeat = now
            self.counts["applied"] += 1
            return None
        # Offline: a clean shutdown (a new generation), or the last will, signed when the
        # session connected, so older than that session's heartbeats.
        is_will = live is not None
        if msg.session in peer.ended:
            return self._duplicate()
        if not is_will:
            if h.gen <= peer.status_gen and peer.status_gen >= 0 and msg.session < (
                    peer.session or 0):
                # An offline status of an older session never heard online here: a replay.
                raise Rejected(Reason.OLD_GENERATION, "status")
            check_time(h, wall_now=wall_now, window=self.replay_window, extra_age=extra_age)
        self.counts["applied"] += 1
        # It ends sessions of the clusters it lists only where its seal speaks for them: a
        # will signed by east's key alone cannot end west's session (issue #17).
        foreign = [c for c in msg.clusters if not h.speaks_for(c)]
        if foreign:
            named = ", ".join(sorted(foreign)[:4])
            self._reject(Rejected(Reason.WRONG_SIGNER, f"offline status also naming {named}"),
                         self.codec.topics.status(peer.name))
        for name in {peer.name, *(c for c in msg.clusters if h.speaks_for(c))}:
            other = self.peers.get(name)
            if other is None:
                continue
            if msg.session not in other.ended:
                other.ended.append(msg.session)
            if other.sessions.pop(msg.session, None) is not None:
                if not other.sessions:
                    other.online = False
                    log.warning("bus: cluster %s: its publisher went offline (session %d%s)",
                                name, msg.session, ", last will" if is_will else "")
                else:
                    log.info("bus: cluster %s: one of its publishers went offline (session"
                             " %d%s); %d still online", name, msg.session,
                             ", last will" if is_will else "", len(other.sessions))
            elif other is peer and other.online is None:
                other.online = False  # first heard of while offline (a retained status)
        return None

    def _prune(self, peer: PeerCluster, now: float) -> None:
        """Forget sessions silent for long (their will was lost with a broker restart)."""
        for session, live in list(peer.sessions.items()):
            if now - live.last_heartbeat > 4 * self.peer_timeout:
                del peer.sessions[session]
        while len(peer.sessions) >= MAX_SESSIONS:
            oldest = min(peer.sessions, key=lambda k: peer.sessions[k].last_heartbeat)
            del peer.sessions[oldest]

    def _reject(self, exc: Rejected, topic: str) -> None:
        self.rejected[exc.reason] += 1
        parsed = self.codec.topics.parse(topic)
        origin = parsed.cluster[:64] if parsed is not None else "?"
        if (exc.reason, origin) in self._logged:
            return
        if len(self._logged) < MAX_LOGGED:
            self._logged.add((exc.reason, origin))
        log.warning("bus: rejected a message for cluster %r (%s); further %s rejections for"
                    " it are only counted", origin, exc, exc.reason)

    def _remember_rejection(self, topic: str, exc: Rejected, header: Header | None, *,
                            now: float) -> None:
        """Record a refused service message, so that its key no longer counts as missing.

        ``header`` is the message's verified header, None when the refusal came before
        the MAC was checked; the rules are in the module docstring.
        """
        parsed = self.codec.topics.parse(topic)
        if parsed is None or parsed.kind is not TopicKind.SERVICE or parsed.key is None:
            return
        if exc.reason in (Reason.OLD_GENERATION, Reason.UNKNOWN_CLUSTER):
            return  # older than what is held (or removed), or not a cluster of ours
        key = parsed.key
        gen: int | None = None
        if (header is not None and header.origin == parsed.cluster
                and exc.reason is not Reason.TOPIC_MISMATCH):
            try:
                peer = self._peer(parsed.cluster)
            except Rejected:
                return
            gen = header.gen
            held = peer.services.get(key)
            if held is not None and gen <= held[0]:
                return  # older than the version held, which stays
            if peer.manifest is not None and key not in peer.manifest and (
                    gen <= peer.manifest_gen):
                return  # a service a newer manifest removed
            previous = peer.rejected.get(key)
            if previous is not None and previous.gen is not None and gen < previous.gen:
                return
        else:
            found = self.peers.get(parsed.cluster)
            if found is None or found.manifest is None or key not in found.manifest:
                return  # untrusted: remembered only for keys the manifest lists (bounded)
            peer = found
        peer.rejected[key] = ServiceRejection(exc.reason, exc.detail, gen, now)
        if key in peer.missing:
            peer.missing.discard(key)
            peer.last_change = now

    # --- writing to the registry -----------------------------------------------

    def gaps(self, topics: Topics) -> list[str]:
        """Topics whose retained message should be here by now and is not.

        For every cluster expected from the bus (in the registry, not sourced by
        this instance) and every other cluster heard with a manifest: its
        manifest and status when no manifest arrived, else the services its
        manifest lists that no message brought. A broker drops messages a new
        subscriber cannot take fast enough (mosquitto: past ``max_queued_messages``),
        and nothing else would bring them back before the next republish. A topic
        whose message came and was refused is not listed: the broker would only send
        the same message again.
        """
        names = [n for n in self.registry.clusters if n not in self.own_clusters]
        names += [n for n, p in self.peers.items() if p.manifest is not None and n not in names]
        out: list[str] = []
        for name in names:
            peer = self.peers.get(name)
            if peer is None or peer.manifest is None:
                out.append(topics.snapshot(name))
                if peer is None or peer.status_gen < 0:
                    out.append(topics.status(name))
            else:
                out.extend(topics.service(name, key) for key in sorted(peer.missing))
        return out

    def is_relayed(self, cluster: str) -> bool:
        """True when an own cluster's registry data is currently the bus's, not the source's."""
        peer = self.peers.get(cluster)
        entry = self.registry.clusters.get(cluster)
        return peer is not None and entry is not None and is_relayed(peer, entry)

    def flush(self, *, now: float) -> None:
        """Write changed shadows and freshness to the registry (after a batch of receives).

        Cheap when nothing changed (a few comparisons per cluster), so it is also
        called periodically to judge silence and the own-cluster rule.
        """
        for peer in self.peers.values():
            self._write(peer, now=now)

    tick = flush

    def _write(self, peer: PeerCluster, *, now: float) -> None:
        if peer.name in self.own_clusters:
            self._write_own(peer, now=now)
        else:
            self._write_peer(peer, now=now)
        peer.dirty.clear()

    def _write_peer(self, peer: PeerCluster, *, now: float) -> None:
        entry = self.registry.clusters.get(peer.name)
        if entry is None and not self.accept_unknown_clusters:
            peer.loaded = False
            return
        if entry is None or entry.snapshot is None or not peer.loaded:
            if not peer.complete:
                return  # unknown stays unknown: nothing is written, nothing is removed
            # Loaded in the state its publishers report (set just below), never fresh
            # for an instant first: a loss that never was would start a self-isolation.
            state, _ = peer.target_state(now, peer_timeout=self.peer_timeout)
            self.registry.replace(peer.view(), now=now, fresh=state is ClusterState.FRESH)
            peer.loaded = True
            log.info("bus: cluster %s loaded from the bus (%d services)", peer.name,
                     len(peer.services))
        else:
            self._apply_changes(peer, now=now)
        self._set_state(peer, now=now)

    def _apply_changes(self, peer: PeerCluster, *, now: float) -> None:
        entry = self.registry.clusters[peer.name]
        current = entry.snapshot.services if entry.snapshot is not None else {}
        for key in sorted(k for k in peer.dirty if current.get(k) != peer.wanted(k)):
            if key in peer.rejected and key not in peer.services:
                continue  # refused, nothing accepted: what the registry holds stays
            self.registry.put_service(peer.name, key, peer.wanted(key), now=now)

    @staticmethod
    def _relay_view(peer: PeerCluster, entry: ClusterEntry) -> ClusterSnapshot:
        """The bus's view of an own cluster, for relaying.

        A service whose bus message was refused and never accepted keeps the
        source's version (the last good data) rather than vanishing.
        """
        view = peer.view()
        held = entry.snapshot.services if entry.snapshot is not None else {}
        kept = {k: held[k] for k in peer.rejected if k not in peer.services and k in held}
        if not kept:
            return view
        return ClusterSnapshot(peer.name, {**view.services, **kept})

    def _set_state(self, peer: PeerCluster, *, now: float) -> None:
        entry = self.registry.clusters.get(peer.name)
        if entry is None or entry.snapshot is None:
            return
        state, error = peer.target_state(now, peer_timeout=self.peer_timeout)
        if state is ClusterState.STALE and entry.state is ClusterState.EXPIRED:
            return  # aged out by the registry's max_stale: only fresh data revives it
        if entry.state is not state:
            log_at = logging.INFO if state is ClusterState.FRESH else logging.WARNING
            log.log(log_at, "bus: cluster %s is %s%s", peer.name, state,
                    f" ({error})" if error else "")
        self.registry.set_state(peer.name, state, now=now, error=error)
        if state is ClusterState.FRESH:
            # Freshness follows the source: the last heartbeat of a session that reports
            # its source fresh is when this cluster was last known fresh.
            heard = [s.last_heartbeat for s in peer.sessions.values()
                     if s.reported is ClusterState.FRESH]
            if heard:
                self.registry.confirm(peer.name, now=max(heard))

    def _write_own(self, peer: PeerCluster, *, now: float) -> None:
        entry = self.registry.clusters.get(peer.name)
        if entry is None:
            return
        if entry.state is ClusterState.FRESH:
            # The direct source is fresh (it wrote, or declared itself healthy): it wins.
            if peer.relayed is not None:
                log.info("bus: cluster %s: own source fresh again; bus data no longer used",
                         peer.name)
            peer.relayed = None
            return
        if not is_relayed(peer, entry):
            state, _ = peer.target_state(now, peer_timeout=self.peer_timeout)
            newer = (entry.snapshot is None or entry.last_sync is None
                     or (peer.last_change is not None and peer.last_change > entry.last_sync))
            if not (peer.complete and state is ClusterState.FRESH and newer):
                peer.relayed = None
                return
            log.warning("bus: cluster %s: own source is %s; serving the newer data relayed by"
                        " instance %s (kept stale)", peer.name, entry.state, peer.instance)
            self.registry.replace(self._relay_view(peer, entry), now=now, fresh=False)
        elif peer.dirty:
            self._apply_changes(peer, now=now)
        else:
            return
        self.registry.set_state(peer.name, ClusterState.STALE, now=now,
                                error=f"own source not fresh; data relayed by {peer.instance}")
        written = self.registry.clusters[peer.name]
        if written.snapshot is not None:
            peer.relayed = (written.snapshot, written.last_sync)
        peer.loaded = True




__all__ = ["Merger", "PeerCluster", "ServiceRejection"]
