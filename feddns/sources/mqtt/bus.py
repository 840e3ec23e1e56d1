"""The MQTT federation bus: connection, subscription and publication (the only aiomqtt user).

Why it exists: every cluster's feddns must see the whole federation and survive losing
the bus. :class:`FederationBus` runs as a background task that nothing awaits, so a
broker that is down at startup never delays DNS; it reconnects forever (aiomqtt's
``Client`` is reusable but not reentrant, ``docs/reconnection.md``; a fresh client per
attempt also lets each session carry its own signed last will), resubscribes and
republishes its own state after every reconnect (mosquitto without persistence forgets
retained messages on restart), and bounds aiomqtt's queues, which are unbounded by
default. While the broker is away, the registry keeps every peer's data; peers turn
stale after ``peer_timeout``.

With several brokers (``bus.brokers``: bridged, or one cluster, so that they share the
topics), one broker's loss is not the bus's: attempts go round the list in order, the
next broker is tried at once after losing one, and the jittered exponential backoff
applies only after a whole round of attempts in a row failed to establish a session
(connected, subscribed and own state published once: a broker that accepts a connection
and then drops it, say for a packet over its ``max_packet_size``, counts as failed, so
the bus never spins between brokers). The bus stays on the broker it has until that one
is lost; there is no fail-back. A broker killed or restarted closes its sockets, which
is noticed at once; a broker host that vanishes silently (power, partition: no RST) is
noticed by the MQTT keepalive, after ``keepalive`` to twice that (paho sends a PINGREQ
after ``keepalive`` seconds without traffic and gives up when no PINGRESP follows within
``keepalive``; the broker, for its part, fires a silent client's last will after 1.5
times ``keepalive``).

Own data is published retained at QoS 1 (the broker acknowledges storing it); the
subscription is QoS 0: state is idempotent, a message lost with a broken connection
comes back as a retained message after the reconnect, and QoS 1 would add a PUBACK per
message for nothing. A broker still drops what a subscriber cannot take fast enough:
mosquitto keeps at most ``max_queued_messages`` (default 1000) packets waiting per
client, QoS 0 included, so a new peer of a 10,000-service federation, or a slow one
during a large republish, misses some messages, possibly a manifest. A gap shows as an
incomplete manifest (or none), which keeps the cluster "unknown", never "removed", and
the bus repairs it by asking for the missing topics again, a batch at a time
(:mod:`.repairing`). Acknowledgements wait up to ``ACK_TIMEOUT``: they queue behind such
a backlog.

The protocol details live next door: ``topics`` (the topic tree), ``codec`` (signed
payloads), ``merging`` (peers' data into the registry, freshness, the rule between a
direct source and the bus) and ``publishing`` (own data out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import aiomqtt

from feddns.backoff import Backoff
from feddns.config import BusBrokerConfig, BusConfig
from feddns.model.registry import Registry
from feddns.sources.mqtt.addresses import AddressPolicy
from feddns.sources.mqtt.brokers import BrokerRounds
from feddns.sources.mqtt.codec import Codec, Reason
from feddns.sources.mqtt.keys import KeyRing
from feddns.sources.mqtt.merging import Merger
from feddns.sources.mqtt.publishing import Generations, Outbox, Publisher
from feddns.sources.mqtt.repairing import GapRepair
from feddns.sources.mqtt.sealing import BusKeys
from feddns.sources.mqtt.stats import BusStats, DropCounter, PeerStats
from feddns.sources.mqtt.topics import Topics

log = logging.getLogger(__name__)

INITIAL_BACKOFF = 0.8
"""First pause after a round of failed connections (client-go's reflector starts at 0.8 s)."""
HEALTHY_RESET = 60.0
"""A session that lasted this long resets the backoff."""
PUBLISH_WINDOW = 64
"""QoS 1 publications awaiting their PUBACK at once (pipelining over a slow link)."""
RECEIVE_BATCH = 256
"""Messages merged before the registry is written (when more are already queued)."""
RESUBSCRIBE_INTERVAL = 30.0
"""After incoming messages were dropped (queue full), resubscribe at most this often: the
broker then resends every retained message, repairing what was lost."""
ACK_TIMEOUT = 120.0
"""Longest wait for a PUBACK, SUBACK or UNSUBACK once connected. An acknowledgement
queues behind whatever the broker is already sending us (a new peer's retained backlog
can take many seconds to read), so ``connect_timeout`` would end healthy sessions and
start the backlog again; a dead broker is found by the keepalive, not by this."""
OFFLINE_TIMEOUT = 2.0
"""Seconds allowed to publish "offline" statuses at a clean shutdown."""


class FederationBus:
    """Publishes this instance's own clusters and merges every peer's into the registry.

    Args:
        settings: The ``bus`` section of the config.
        federation: The federation name (the second topic level).
        registry: The registry sources write to; only the event loop touches it.
        own_clusters: Clusters this instance sources itself; they are published, and the
            bus writes them only while their own source is not fresh.
        clock: Monotonic seconds, for freshness (never the sender's clock).
        wall: Wall-clock seconds, for signed timestamps, the replay window and generations.
        keyring: The keys (HMAC ring, per-cluster Ed25519 keys); default: read from the
            files or variables ``settings`` names (raises
            :class:`~feddns.errors.ConfigError` when one is missing or unusable).
    """

    def __init__(
        self,
        settings: BusConfig,
        *,
        federation: str,
        registry: Registry,
        own_clusters: Iterable[str],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        keyring: KeyRing | BusKeys | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.clock = clock
        self.wall = wall
        self.own_clusters = tuple(sorted(set(own_clusters)))
        self.topics = Topics(settings.topic_prefix, federation)
        self.codec = Codec(self.topics, keyring or BusKeys.from_config(settings),
                           AddressPolicy.from_config(settings),
                           max_payload_size=settings.max_payload_size)
        log.info("bus keys: %s", self.codec.keys.describe())
        slug = (self.own_clusters[0] if self.own_clusters else "peer")[:40]
        self.instance = f"{slug}-{secrets.token_hex(4)}"
        """Unique per process: tells own echoes apart and names the MQTT client."""
        self.client_id = f"feddns-{self.instance}"
        self.merger = Merger(
            registry, self.codec, own_clusters=self.own_clusters, instance=self.instance,
            peer_timeout=settings.peer_timeout, replay_window=settings.replay_window,
            retained_age=settings.republish_interval + settings.heartbeat_interval,
            accept_unknown_clusters=settings.accept_unknown_clusters,
        )
        self.publisher = Publisher(
            registry, self.codec, own_clusters=self.own_clusters, instance=self.instance,
            generations=Generations(wall), is_relayed=self.merger.is_relayed,
        )
        self.brokers = settings.all_brokers
        self.connected = False
        self.broker: str | None = None
        """``host:port`` of the broker in use (None while not connected)."""
        self._established = False
        """The current session subscribed and published own state once."""
        self.connects = 0
        self.last_connect: float | None = None
        self.last_error: str | None = None
        self.published = 0
        self._wake = asyncio.Event()
        self._past_gap_requests = 0
        self._repair: GapRepair | None = None
        self._received = 0
        """Incoming messages so far (gaps are looked for when few are arriving)."""
        self._drops = DropCounter()
        self._drops_repaired = 0
        # Not registered with logging.getLogger: one per bus, so drop counts do not mix.
        self._mqtt_log = logging.Logger(f"{__name__}.client", logging.WARNING)
        self._mqtt_log.parent = log
        self._mqtt_log.addFilter(self._drops)

    # --- the public surface ---------------------------------------------------------

    @property
    def rejected(self) -> Counter[str]:
        """Rejected messages by reason (``feddns_bus_rejected_total{reason}``)."""
        return self.merger.rejected

    def notify(self) -> None:
        """Own data may have changed: publish the difference soon (call on the loop)."""
        self._wake.set()

    def set_keyring(self, keyring: KeyRing | BusKeys) -> None:
        """Swap the keys (a reload: a key added, switched or retired).

        They verify from now on and sign from the next message. When this instance
        signs with another key than before, its whole state is republished at once, so
        the retained messages carry the new signature before the old key is retired
        anywhere (else a peer joining later would refuse them). The last will keeps the
        signature it had at connection until the next one.
        """
        keys = BusKeys.of(keyring)
        switched = keys.signer_ids() != self.codec.keys.signer_ids()
        self.codec.keys = keys
        if switched:
            log.info("bus: the signer changed (%s); republishing own state now",
                     keys.describe())
            self.publisher.reset()
            self._wake.set()

    @property
    def gap_requests(self) -> int:
        """Topics asked for again because their retained message never arrived."""
        current = self._repair.requests if self._repair is not None else 0
        return self._past_gap_requests + current

    def _count_received(self) -> int:
        return self._received

    def stats(self) -> BusStats:
        """A snapshot of the bus's state and counters."""
        now = self.clock()
        counts = self.merger.counts
        return BusStats(
            connected=self.connected,
            broker=self.broker if self.connected else None,
            brokers=tuple(b.label for b in self.brokers),
            last_connect=self.last_connect,
            connects=self.connects,
            last_error=self.last_error,
            published=self.published,
            received=counts["received"],
            applied=counts["applied"],
            duplicates=counts["duplicates"],
            dropped=self._drops.count,
            gap_requests=self.gap_requests,
            oversized_own=self.publisher.oversized,
            rejected=dict(self.merger.rejected),
            reasons=tuple(reason.value for reason in Reason),
            peers={
                name: PeerStats(
                    online=p.online, instance=p.instance, services=len(p.services),
                    complete=p.complete,
                    heartbeat_age=None if p.last_heartbeat is None else now - p.last_heartbeat,
                    rejected_services={f"{ns}/{n}": str(r.reason)
                                       for (ns, n), r in sorted(p.rejected.items())},
                    signed_with=p.signed_with,
                )
                for name, p in self.merger.peers.items()
            },
        )

    async def run(self) -> None:
        """Connect, publish and receive until cancelled; never raises anything else."""
        ticking = asyncio.create_task(self._tick_forever(), name="bus ticker")
        try:
            await self._connect_forever()
        finally:
            ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticking
            self.connected = False

    # --- the connection loop -------------------------------------------------------

    async def _connect_forever(self) -> None:
        """Go round the brokers: the next one at once, a pause only after a failed round."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(initial=INITIAL_BACKOFF, maximum=self.settings.backoff_max)
        logged: dict[str, str] = {}  # broker -> the last error logged for it (once each)
        rounds = BrokerRounds(len(self.brokers))
        while True:
            target = self.brokers[rounds.index]
            started = loop.time()
            self._established = False
            # The session runs as a child task that _stop cancels until it ends: aiomqtt
            # waits with asyncio.wait_for, which on 3.11 can swallow a cancellation.
            session = asyncio.create_task(self._session(target), name="bus session")
            try:
                await asyncio.wait((session,))
            except asyncio.CancelledError:
                await _stop(session)
                raise
            try:
                if session.cancelled():
                    raise aiomqtt.MqttError("the session was cancelled")
                session.result()
                error = "the session ended"
            except Exception as exc:  # the loop must survive anything; report it
                leaf = _leaf(exc)
                error = f"{type(leaf).__name__}: {leaf}"
                if (not isinstance(leaf, (aiomqtt.MqttError, OSError))
                        and logged.get(target.label) != error):
                    log.error("bus: unexpected error; reconnecting", exc_info=exc)
            was_connected, self.connected, self.broker = self.connected, False, None
            self.last_error = f"{target.label}: {error}"
            pause = rounds.ended(established=self._established)
            following = self.brokers[rounds.index].label
            then = ("retrying with backoff" if pause else
                    f"trying {following} at once" if len(self.brokers) > 1 else
                    "reconnecting at once")
            if was_connected:
                logged.pop(target.label, None)
                log.warning("bus: lost the broker %s (%s); %s; peers' data is kept and turns"
                            " stale after %.0f s", target.label, error, then,
                            self.settings.peer_timeout)
            elif logged.get(target.label) != error:
                log.warning("bus: cannot reach the broker %s (%s); %s (DNS keeps serving)",
                            target.label, error, then)
                logged[target.label] = error
            if loop.time() - started >= HEALTHY_RESET:
                backoff.reset()
            if pause:
                await asyncio.sleep(backoff.next_delay())

    def _client(self, target: BusBrokerConfig, will: aiomqtt.Will | None) -> aiomqtt.Client:
        s = self.settings
        tls = None
        if s.tls is not None:
            tls = aiomqtt.TLSParameters(
                ca_certs=str(s.tls.ca_file) if s.tls.ca_file else None,
                certfile=str(s.tls.cert_file) if s.tls.cert_file else None,
                keyfile=str(s.tls.key_file) if s.tls.key_file else None,
            )
        client = aiomqtt.Client(
            target.host, target.port,
            username=s.username, password=self._password(),
            identifier=self.client_id, will=will, clean_session=True,
            keepalive=s.keepalive, timeout=s.connect_timeout, tls_params=tls,
            max_queued_incoming_messages=s.max_queued_messages,
            max_queued_outgoing_messages=s.max_queued_messages,
            max_inflight_messages=PUBLISH_WINDOW,
            logger=self._mqtt_log,
            # Small, latency-sensitive messages: without TCP_NODELAY, Nagle and delayed
            # ACKs add tens of milliseconds per change (measured: bench/bus_latency.py).
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        client.pending_calls_threshold = 2 * PUBLISH_WINDOW
        return client

    def _password(self) -> str | None:
        """Read at every attempt, so a rotated password file takes effect on reconnect."""
        s = self.settings
        if s.password_file is not None:
            return s.password_file.read_text(encoding="utf-8").strip()
        if s.password_env is not None:
            return os.environ.get(s.password_env)
        return None

    async def _session(self, target: BusBrokerConfig) -> None:
        """One connection: subscribe, publish everything, then follow both directions."""
        will_message = self.publisher.will(wall_now=self.wall())
        will = None
        if will_message is not None:
            will = aiomqtt.Will(will_message[0], will_message[1], qos=1, retain=True)
        client = self._client(target, will)
        async with client:
            self.connected = True
            self.broker = target.label
            self.connects += 1
            self.last_connect = self.wall()
            which = (f" (broker {self.brokers.index(target) + 1} of {len(self.brokers)})"
                     if len(self.brokers) > 1 else "")
            log.info("bus: connected to %s%s as %s (session %d)", target.label, which,
                     self.client_id, self.publisher.session)
            await client.subscribe(self.topics.subscription, qos=0)  # QoS 0: see above
            self.publisher.reset()
            receiving = asyncio.create_task(self._receive(client), name="bus receive")
            publishing = asyncio.create_task(self._publish_forever(client), name="bus publish")
            if self._repair is not None:
                self._past_gap_requests += self._repair.requests
            repair = GapRepair(client, self.merger, self.topics, counter=self._count_received,
                               clock=self.clock, ack_timeout=ACK_TIMEOUT)
            self._repair = repair
            repairing = asyncio.create_task(repair.run(), name="bus repair")
            try:
                done, _ = await asyncio.wait((receiving, publishing, repairing),
                                             return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                await _stop(receiving, publishing, repairing)
                await self._say_offline(client)
                raise
            await _stop(receiving, publishing, repairing)
            for task in done:
                exc = task.exception()
                if exc is not None:
                    raise exc

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """At a clean shutdown, tell peers now (a clean DISCONNECT discards the will)."""
        statuses = self.publisher.statuses(online=False, wall_now=self.wall())
        sending = asyncio.create_task(self._publish_all(client, statuses))
        try:
            await asyncio.wait((sending,), timeout=OFFLINE_TIMEOUT)
        finally:
            await _stop(sending)

    # --- receiving -----------------------------------------------------------------

    async def _receive(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        last_resubscribe = loop.time()
        batch = 0
        # Each message takes one turn of the event loop, so queries are served in between.
        async for message in client.messages:
            self._received += 1
            self.merger.receive(message.topic.value, message.payload,
                                retained=bool(message.retain), now=self.clock(),
                                wall_now=self.wall())
            batch += 1
            if batch < RECEIVE_BATCH and len(client.messages) > 0:
                continue
            batch = 0
            self.merger.flush(now=self.clock())
            if (self._drops.count > self._drops_repaired and len(client.messages) == 0
                    and loop.time() - last_resubscribe >= RESUBSCRIBE_INTERVAL):
                log.warning("bus: %d incoming message(s) dropped (queue of %d full);"
                            " resubscribing to get the retained state again",
                            self._drops.count - self._drops_repaired,
                            self.settings.max_queued_messages)
                self._drops_repaired = self._drops.count
                last_resubscribe = loop.time()
                await client.subscribe(self.topics.subscription, qos=0, timeout=ACK_TIMEOUT)

    async def _tick_forever(self) -> None:
        """Judge peers' silence by the local clock, even while the broker is away."""
        interval = min(1.0, self.settings.peer_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                self.merger.tick(now=self.clock())
            except Exception:  # a bug here must not stop the ticking
                log.exception("bus: checking peers' freshness failed")
            # Cheap when nothing changed; publishes own changes even without a registry hook.
            self._wake.set()

    # --- publishing ----------------------------------------------------------------

    async def _publish_forever(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        next_heartbeat = loop.time() + s.heartbeat_interval
        next_republish = loop.time() + s.republish_interval
        while True:
            self._wake.clear()
            await self._send(client, await self._changes())
            self._established = True  # subscribed, and the broker took own state
            now = loop.time()
            if now >= next_heartbeat:
                await self._publish_all(
                    client, self.publisher.statuses(online=True, wall_now=self.wall()))
                next_heartbeat = now + s.heartbeat_interval
            if now >= next_republish:
                self.publisher.reset()
                next_republish = now + s.republish_interval
                continue
            timeout = min(next_heartbeat, next_republish) - loop.time()
            if timeout > 0:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that races with the event being set, and the bus would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()

    async def _changes(self) -> Outbox:
        """The publisher's diff, with a turn of the event loop for queries every few ms."""
        steps = self.publisher.changes_in_steps(wall_now=self.wall())
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            await asyncio.sleep(0)

    async def _send(self, client: aiomqtt.Client, outbox: Outbox) -> None:
        """Services first, then manifests and statuses, then clears, each acknowledged."""
        await self._publish_all(client, outbox.services)
        await self._publish_all(client, outbox.manifests)
        await self._publish_all(client, [(topic, b"") for topic in outbox.clears])

    async def _publish_all(self, client: aiomqtt.Client,
                           messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish retained QoS 1 messages, at most ``PUBLISH_WINDOW`` awaiting a PUBACK."""
        pending = iter(messages)

        async def worker() -> None:
            for topic, payload in pending:  # the workers share one iterator
                await client.publish(topic, payload, qos=1, retain=True,
                                     timeout=ACK_TIMEOUT)
                self.published += 1

        async with asyncio.TaskGroup() as group:
            for _ in range(min(PUBLISH_WINDOW, len(messages))):
                group.create_task(worker())


async def _stop(*tasks: asyncio.Task[None]) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again any that swallowed it."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: a failure here was already reported or is moot


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
