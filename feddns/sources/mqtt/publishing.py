"""What this instance publishes about its own clusters (no I/O).

Why it exists: a single endpoint change must not resend a whole cluster, and
a 10,000-service cluster must fit the broker's limits. So each own cluster is
published as one retained message per service, plus a retained manifest
(``snapshot``: the list of service keys) that changes only when services are
added or removed, plus a retained status. :meth:`Publisher.changes` diffs the
registry against what was last published and returns only the difference:

1. changed and added services (all under one new generation);
2. then the manifest, if the set of keys changed (same generation), so a
   receiver that holds the new manifest can already hold every service in it;
3. then empty retained payloads for removed services, which only free the
   broker's storage: receivers learn a removal from the manifest, because an
   empty payload cannot be signed.

Generations are wall-clock milliseconds, always moving forward, so they keep
increasing across restarts without any state on disk (as long as the clock
does not step back further than the restart took). ``reset`` forgets what
was published, so the next diff republishes everything: after every
reconnect and every ``republish_interval`` (a broker restarted without
persistence has lost every retained message).

Data the bus itself relayed into an own cluster (see ``merging``) is never
published back, and neither is warm-start data restored from disk before the
source synced (it may be older than what peers hold): only data a live
source delivered is this instance's to publish.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field

from feddns.model.registry import ClusterState, Registry
from feddns.model.services import ClusterSnapshot, Service, ServiceKey
from feddns.sources.mqtt.codec import Codec

log = logging.getLogger(__name__)

STEP = 200
"""Services encoded between two pauses of :meth:`Publisher.changes_in_steps` (a few ms)."""


class Generations:
    """The origin's generation counter: wall-clock milliseconds, strictly increasing."""

    def __init__(self, wall: Callable[[], float]) -> None:
        self.wall = wall
        self.last = 0

    def next(self) -> int:
        """A generation larger than every earlier one."""
        self.last = max(self.last + 1, int(self.wall() * 1000))
        return self.last


@dataclass(slots=True)
class _Published:
    seen: ClusterSnapshot | None = None
    generation: int = -1
    """``Registry.generation`` when last diffed (``put_service`` edits in place)."""
    services: dict[ServiceKey, Service] = field(default_factory=dict)
    """What was published: our own copy, since the registry's mapping changes in place."""
    manifest: frozenset[ServiceKey] | None = None
    state: ClusterState | None = None
    oversized: set[ServiceKey] = field(default_factory=set)


@dataclass(slots=True)
class Outbox:
    """Messages to publish, in order: services, then manifests and statuses, then clears."""

    services: list[tuple[str, bytes]] = field(default_factory=list)
    manifests: list[tuple[str, bytes]] = field(default_factory=list)
    clears: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.services) + len(self.manifests) + len(self.clears)


class Publisher:
    """Diffs own clusters in the registry against what was last published."""

    def __init__(
        self,
        registry: Registry,
        codec: Codec,
        *,
        own_clusters: Sequence[str],
        instance: str,
        generations: Generations,
        is_relayed: Callable[[str], bool],
    ) -> None:
        self.registry = registry
        self.codec = codec
        self.own_clusters = tuple(own_clusters)
        self.instance = instance
        self.generations = generations
        self.is_relayed = is_relayed
        self.session = 0
        self.oversized = 0
        """Own messages not published because they exceed ``max_payload_size``."""
        self._published = {c: _Published() for c in self.own_clusters}

    def reset(self) -> None:
        """Forget what was published: the next :meth:`changes` republishes everything."""
        self._published = {c: _Published() for c in self.own_clusters}

    def own_state(self, cluster: str) -> ClusterState | None:
        """The state published for an own cluster (None: not in the registry)."""
        entry = self.registry.clusters.get(cluster)
        if entry is None:
            return None
        if entry.snapshot is None or not entry.synced_once:
            # Nothing live yet (warm-start data may be older than what peers hold).
            return ClusterState.SYNCING
        if entry.state is ClusterState.FRESH and self.is_relayed(cluster):
            return ClusterState.STALE
        return entry.state

    def status(self, cluster: str, *, online: bool, wall_now: float) -> tuple[str, bytes]:
        """A signed status of ``cluster`` for the current session."""
        state = self.own_state(cluster) or ClusterState.SYNCING
        return self.codec.status(cluster, online=online, session=self.session, state=state,
                                 clusters=self.own_clusters, instance=self.instance,
                                 gen=self.generations.next(), ts=wall_now)

    def statuses(self, *, online: bool, wall_now: float) -> list[tuple[str, bytes]]:
        """A status of every own cluster (heartbeats, or "offline" at a clean shutdown)."""
        out = []
        for cluster in self.own_clusters:
            if cluster in self.registry.clusters:
                out.append(self.status(cluster, online=online, wall_now=wall_now))
                self._published[cluster].state = self.own_state(cluster)
        return out

    def will(self, *, wall_now: float) -> tuple[str, bytes] | None:
        """Start a session and return its last will, or None without own clusters.

        The will says "offline" for every own cluster; its generation is the session
        number, older than every status the session will publish.
        """
        self.session = self.generations.next()
        if not self.own_clusters:
            return None
        return self.codec.status(self.own_clusters[0], online=False, session=self.session,
                                 state=ClusterState.STALE, clusters=self.own_clusters,
                                 instance=self.instance, gen=self.session, ts=wall_now)

    def changes(self, *, wall_now: float) -> Outbox:
        """Everything that changed in own clusters since the last call."""
        steps = self.changes_in_steps(wall_now=wall_now)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def changes_in_steps(self, *, wall_now: float,
                         step: int = STEP) -> Generator[None, None, Outbox]:
        """:meth:`changes`, pausing (yielding) after every ``step`` services encoded.

        The caller may let other work run at each pause (the bus gives queries a
        turn of the event loop: encoding and signing 10,000 services takes about
        150 ms). The registry may change meanwhile: each cluster's services are
        diffed from a copy taken at its start, and a change made after the copy
        leaves the registry's generation ahead of the one recorded, so the next
        call diffs again.
        """
        out = Outbox()
        gen: int | None = None
        for cluster in self.own_clusters:
            entry = self.registry.clusters.get(cluster)
            if entry is None:
                continue
            pub = self._published[cluster]
            state = self.own_state(cluster)
            if state is not pub.state:
                out.manifests.append(self.status(cluster, online=True, wall_now=wall_now))
                pub.state = state
            snapshot = entry.snapshot
            unchanged = snapshot is pub.seen and self.registry.generation == pub.generation
            if (snapshot is None or unchanged or state is ClusterState.SYNCING
                    or self.is_relayed(cluster)):
                continue
            if gen is None:
                gen = self.generations.next()
            yield from self._diff(cluster, pub, snapshot, gen=gen, wall_now=wall_now, out=out,
                                  step=step)
        return out

    def _diff(self, cluster: str, pub: _Published, snapshot: ClusterSnapshot, *, gen: int,
              wall_now: float, out: Outbox, step: int) -> Iterator[None]:
        generation = self.registry.generation
        new = dict(snapshot.services)  # the registry edits its mapping in place
        old = pub.services
        encoded = 0
        for key, service in new.items():
            before = old.get(key)
            if before is service:
                continue
            old[key] = service
            if before == service:
                continue
            encoded += 1
            if encoded % step == 0:
                yield
            topic, payload = self.codec.service(cluster, service, instance=self.instance,
                                                gen=gen, ts=wall_now)
            if len(payload) > self.codec.max_payload_size:
                self.oversized += 1
                if key not in pub.oversized:
                    log.error("bus: cluster %s: service %s/%s is %d bytes, over max_payload_size"
                              " %d: not published (peers treat it as removed)", cluster,
                              key[0], key[1], len(payload), self.codec.max_payload_size)
                pub.oversized.add(key)
                continue
            pub.oversized.discard(key)
            out.services.append((topic, payload))
        for key in old.keys() - new.keys():
            del old[key]
        pub.oversized.intersection_update(new)
        keys = frozenset(new) - pub.oversized
        if keys != pub.manifest:
            topic, payload = self.codec.snapshot(cluster, keys, instance=self.instance, gen=gen,
                                                 ts=wall_now)
            if len(payload) > self.codec.max_payload_size:
                self.oversized += 1
                log.error("bus: cluster %s: manifest of %d services is %d bytes, over"
                          " max_payload_size: peers cannot load the cluster", cluster, len(keys),
                          len(payload))
            else:
                out.manifests.append((topic, payload))
                out.clears.extend(self.codec.topics.service(cluster, k)
                                  for k in (pub.manifest or frozenset()) - keys)
                pub.manifest = keys
        pub.seen = snapshot
        pub.generation = generation
