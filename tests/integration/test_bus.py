"""The MQTT federation bus against a real mosquitto, with several instances in one process.

Each test starts its own broker on a free loopback port (tests/mosquitto.py)
and uses a unique topic prefix. Every instance has its own Registry and
FederationBus, as separate feddns processes would; one test runs an instance
in a subprocess to kill it with SIGKILL. Waits are bounded polls of a
condition, never sleeps standing in for synchronisation.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import aiomqtt
import dns.message
import dns.rcode
import pytest

from feddns.config import BUS_DENIED_CIDRS, BusConfig, Settings
from feddns.model.registry import ClusterState, Registry
from feddns.model.services import ClusterSnapshot, Endpoint, Port, Service
from feddns.sources.mqtt import FederationBus, KeyRing, Reason
from feddns.sources.mqtt.addresses import AddressPolicy
from feddns.sources.mqtt.codec import Codec
from feddns.sources.mqtt.publishing import Outbox
from feddns.sources.mqtt.sealing import BusKeys
from feddns.sources.mqtt.topics import Topics
from feddns.table.compiler import sync_table
from tests.mosquitto import (
    Mosquitto,
    make_password_file,
    make_tls_files,
    mosquitto,
)
from tests.support import eventually
from tests.unit.dnscase import make_handler, make_table

K1 = b"integration-key-one-0123456789"
K2 = b"integration-key-two-0123456789"
REPO = Path(__file__).resolve().parents[2]
WEB = ("shop", "web")


def web(ip: str = "10.1.0.1", *, cluster_ip: str = "10.96.1.10") -> Service:
    return Service("shop", "web", cluster_ips=(cluster_ip,), ports=(Port("http", 80),),
                   endpoints=(Endpoint(ip, zone="z1"),))


def api(ip: str = "10.2.0.1") -> Service:
    return Service("shop", "api", cluster_ips=("10.96.2.20",), ports=(Port("http", 80),),
                   endpoints=(Endpoint(ip, zone="z1"),))


def bus_settings(port: int, prefix: str, **overrides: Any) -> BusConfig:
    data: dict[str, Any] = {
        "broker": "127.0.0.1", "port": port, "topic_prefix": prefix,
        "keys": [{"id": "k1", "secret_env": "UNUSED"}],
        "heartbeat_interval": 0.3, "peer_timeout": 1.0, "republish_interval": 30.0,
        "backoff_max": 0.3, "keepalive": 5, "connect_timeout": 2.0,
        "max_payload_size": 64 * 1024,
    }
    data.update(overrides)
    return BusConfig.model_validate(data)


class Instance:
    """The bus half of one feddns instance: a Registry, a FederationBus and an answer table."""

    def __init__(self, broker: Mosquitto, prefix: str, *, own: str, clusters: tuple[str, ...],
                 services: list[Service] | None = None, keys: dict[str, bytes] | None = None,
                 signing: str = "k1", keyring: KeyRing | BusKeys | None = None,
                 federation: str = "fed", **overrides: Any) -> None:
        self.own = own
        self.registry = Registry.for_clusters(clusters)
        if services is not None:
            self.registry.replace(ClusterSnapshot.from_services(own, services),
                                  now=time.monotonic())
        self.bus = FederationBus(
            bus_settings(broker.port, prefix, **overrides), federation=federation,
            registry=self.registry, own_clusters={own},
            keyring=keyring or KeyRing(keys or {"k1": K1}, signing_id=signing),
        )
        # What the lead wires in app.py: compile, then tell the bus.
        self.registry.on_change = self.bus.notify
        self.table = make_table(Settings(), serial=1)
        self.handler = make_handler(self.table)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Instance:
        self.task = asyncio.create_task(self.bus.run())
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    def set(self, service: Service | None, key: tuple[str, str] = WEB) -> None:
        """A change made by this instance's own source (``key`` only for a deletion)."""
        key = service.key if service is not None else key
        self.registry.put_service(self.own, key, service, now=time.monotonic())

    def service(self, cluster: str, key: tuple[str, str] = WEB) -> Service | None:
        snapshot = self.registry.clusters[cluster].snapshot
        return None if snapshot is None else snapshot.services.get(key)

    def state(self, cluster: str) -> ClusterState:
        return self.registry.clusters[cluster].state

    def answer(self, name: str = "web.shop.svc.clusterset.local.") -> list[str] | str:
        """A addresses this instance would answer (sorted), or the rcode when not NOERROR."""
        sync_table(self.table, self.registry, wall_now=time.time())
        reply = self.handler.handle_udp(dns.message.make_query(name, "A").to_wire())
        assert reply is not None
        msg = dns.message.from_wire(reply)
        if msg.rcode() != dns.rcode.NOERROR:
            return dns.rcode.to_text(msg.rcode())
        return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)




@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def pair(broker: Mosquitto, prefix: str) -> AsyncIterator[tuple[Instance, Instance]]:
    """Instance A owns east, B owns west; each knows both; both synced."""
    a = Instance(broker, prefix, own="east", clusters=("east", "west"), services=[web()]).start()
    b = Instance(broker, prefix, own="west", clusters=("east", "west"),
                 services=[web("10.3.0.1", cluster_ip="10.96.3.10")]).start()
    try:
        await eventually(lambda: a.state("west") is ClusterState.FRESH
                         and b.state("east") is ClusterState.FRESH)
        yield a, b
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_a_change_in_one_instances_own_cluster_reaches_the_others_registry_and_answers(
        pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    assert b.service("east") == web()
    assert b.answer() == ["10.96.1.10", "10.96.3.10"]
    sent: list[tuple[int, int, int]] = []
    changes = a.bus.publisher.changes_in_steps

    def recording(**kwargs: Any) -> Generator[None, None, Outbox]:
        out = yield from changes(**kwargs)
        if len(out):
            sent.append((len(out.services), len(out.manifests), len(out.clears)))
        return out

    a.bus.publisher.changes_in_steps = recording  # type: ignore[method-assign]
    a.set(web("10.1.0.2"))
    await eventually(lambda: b.service("east") == web("10.1.0.2"))
    assert sent == [(1, 0, 0)]  # one service message, not the cluster, no manifest
    a.set(api())
    await eventually(lambda: b.service("east", ("shop", "api")) == api())
    a.set(None, ("shop", "api"))
    await eventually(lambda: b.service("east", ("shop", "api")) is None)
    a.set(None)
    await eventually(lambda: b.service("east") is None)
    assert b.answer() == ["10.96.3.10"]
    assert b.state("east") is ClusterState.FRESH
    assert b.bus.stats().rejected == {}


async def test_with_the_broker_down_data_is_kept_and_local_changes_apply_then_all_converge(
        broker: Mosquitto, pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    a.set(api())  # a service only east has
    await eventually(lambda: b.service("east", ("shop", "api")) == api())
    broker.stop()
    await eventually(lambda: not a.bus.connected and not b.bus.connected)
    a.set(web("10.1.0.5"))
    assert a.service("east") == web("10.1.0.5")  # local changes apply locally
    assert "10.96.1.10" in a.answer()
    await eventually(lambda: b.state("east") is ClusterState.STALE)  # will or peer_timeout
    assert b.service("east") == web()  # stale, never absent
    assert b.answer("api.shop.svc.clusterset.local.") == ["10.96.2.20"]
    broker.start()  # no persistence: every retained message is gone
    await eventually(lambda: b.service("east") == web("10.1.0.5")
                     and b.state("east") is ClusterState.FRESH
                     and a.state("west") is ClusterState.FRESH)
    assert b.bus.stats().connects == 2


async def test_a_peer_joining_after_retained_state_was_lost_converges_within_one_republish(
        broker: Mosquitto, prefix: str) -> None:
    a = Instance(broker, prefix, own="east", clusters=("east",), services=[web()],
                 republish_interval=1.5).start()
    topics = Topics(prefix, "fed")
    try:
        await eventually(lambda: a.bus.stats().published >= 3)  # status, web, manifest
        # Retained state lost behind A's back (a failed-over broker without persistence).
        async with aiomqtt.Client("127.0.0.1", broker.port) as wiper:
            for topic in (topics.snapshot("east"), topics.service("east", WEB)):
                await wiper.publish(topic, b"", qos=1, retain=True)
        c = Instance(broker, prefix, own="north", clusters=("east", "north"),
                     services=[]).start()
        try:
            await eventually(lambda: c.bus.connected)
            assert c.registry.clusters["east"].snapshot is None  # unknown, not empty
            # Only the gap repair brings it back before the next republish (30 s here).
            await eventually(lambda: c.service("east") == web(), within=15.0)
        finally:
            await c.stop()
    finally:
        await a.stop()


async def test_a_broker_killed_with_persistence_restores_old_state_that_nobody_goes_back_to(
        tmp_path: Path, prefix: str) -> None:
    # failure-modes.md row 13: a crash loses the retained updates since the last save;
    # the restored, older state must not win over what peers hold, and the owner's
    # republish after reconnecting brings every peer, old or new, to the current state.
    with mosquitto(tmp_path / "broker", persistence=True) as broker:
        a = Instance(broker, prefix, own="east", clusters=("east",), services=[web()]).start()
        b = Instance(broker, prefix, own="west", clusters=("east", "west"),
                     services=[]).start()
        try:
            await eventually(lambda: b.service("east") == web())
            database = tmp_path / "broker" / "mosquitto.db"
            assert broker.proc is not None
            broker.proc.send_signal(signal.SIGUSR1)  # mosquitto: save persistence now
            await eventually(lambda: database.exists() and database.stat().st_size > 0)
            a.set(web("10.1.0.2"))  # after the save: lost by the crash below
            await eventually(lambda: b.service("east") == web("10.1.0.2"))
            # A is away while the broker crashes and comes back, so that B surely meets
            # the restored, older state (A republishes at once when it reconnects, which
            # would otherwise overwrite it first, some of the time).
            await a.stop()
            broker.restart(kill=True)  # SIGKILL, then start on the same port and database
            deadline = time.monotonic() + 15
            while b.bus.stats().rejected.get(Reason.OLD_GENERATION.value, 0) < 1:
                assert b.service("east") == web("10.1.0.2"), "B went back to old state"
                assert time.monotonic() < deadline, "B never met the restored old state"
                await asyncio.sleep(0.02)
            assert b.service("east") == web("10.1.0.2")
            # The owner comes back and republishes: a new peer, which took the old state
            # from the broker, converges to the current one too.
            c = Instance(broker, prefix, own="north", clusters=("east", "north"),
                         services=[]).start()
            a = Instance(broker, prefix, own="east", clusters=("east",),
                         services=[web("10.1.0.2")]).start()
            try:
                await eventually(lambda: c.service("east") == web("10.1.0.2"), within=15)
                assert b.service("east") == web("10.1.0.2")
            finally:
                await c.stop()
        finally:
            await asyncio.gather(a.stop(), b.stop())


async def test_two_replicas_of_one_cluster_stay_connected_and_either_keeps_it_fresh(
        broker: Mosquitto, prefix: str) -> None:
    # failure-modes.md row 14: a broker disconnects the older of two sessions with one
    # ClientId, and the two would take turns for ever. Each process makes its own id.
    r1 = Instance(broker, prefix, own="east", clusters=("east",), services=[web()]).start()
    r2 = Instance(broker, prefix, own="east", clusters=("east",), services=[web()]).start()
    b = Instance(broker, prefix, own="west", clusters=("east", "west"), services=[]).start()
    try:
        assert r1.bus.client_id != r2.bus.client_id
        # Both replicas heard online many times over (heartbeats every 0.3 s) ...
        await eventually(lambda: b.service("east") == web()
                         and b.bus.stats().received >= 30, within=10.0)
        # ... and neither was ever pushed off the broker by the other.
        assert r1.bus.stats().connects == r2.bus.stats().connects == 1
        assert r1.bus.connected and r2.bus.connected
        assert "already connected" not in broker.log
        # A rolling restart: r1 stops cleanly ("offline"); r2 still publishes east, so
        # the peer keeps it fresh through more than peer_timeout (1 s) of r2's heartbeats.
        await eventually(lambda: b.state("east") is ClusterState.FRESH)
        await r1.stop()
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert b.state("east") is ClusterState.FRESH, "a replica's restart made it stale"
            await asyncio.sleep(0.02)
        await r2.stop()
        await eventually(lambda: b.state("east") is ClusterState.STALE)
    finally:
        await asyncio.gather(r1.stop(), r2.stop(), b.stop())


def _child() -> None:
    """Instance A in its own process (for SIGKILL); configured through the environment."""
    async def main() -> None:
        registry = Registry.for_clusters(["east"])
        registry.replace(ClusterSnapshot.from_services("east", [web()]), now=time.monotonic())
        bus = FederationBus(
            bus_settings(int(os.environ["BUS_PORT"]), os.environ["BUS_PREFIX"],
                         peer_timeout=60.0),
            federation="fed", registry=registry, own_clusters={"east"},
            keyring=KeyRing({"k1": os.environb[b"BUS_KEY"]}, signing_id="k1"),
        )
        await bus.run()

    asyncio.run(main())


async def test_an_instance_killed_without_disconnecting_is_marked_stale_by_its_last_will(
        broker: Mosquitto, prefix: str) -> None:
    b = Instance(broker, prefix, own="west", clusters=("east", "west"), services=[],
                 peer_timeout=60.0).start()
    env = {**os.environ, "BUS_PORT": str(broker.port), "BUS_PREFIX": prefix,
           "BUS_KEY": K1.decode()}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from tests.integration.test_bus import _child; _child()",
        cwd=REPO, env=env)
    try:
        await eventually(lambda: b.state("east") is ClusterState.FRESH, within=15.0)
        assert b.service("east") == web()
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 5)
        # peer_timeout is 60 s: only the broker's last will can make this quick.
        await eventually(lambda: b.state("east") is ClusterState.STALE, within=5.0)
        assert b.service("east") == web()
        assert b.bus.stats().peers["east"].online is False
    finally:
        if child.returncode is None:
            child.kill()
            await asyncio.wait_for(child.wait(), 5)
        await b.stop()


async def test_forged_replayed_wrong_key_bad_address_and_oversized_messages_are_rejected(
        broker: Mosquitto, prefix: str, pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    topics = Topics(prefix, "fed")
    topic = topics.service("east", WEB)
    async with aiomqtt.Client("127.0.0.1", broker.port) as attacker:
        await attacker.subscribe(topic, qos=1)
        captured = (await anext(aiter(attacker.messages))).payload  # A's retained web
        assert isinstance(captured, bytes)
        a.set(web("10.1.0.7"))
        await eventually(lambda: b.service("east") == web("10.1.0.7"))

        def signer(keys: dict[str, bytes], signing: str = "k1") -> Codec:
            return Codec(topics, KeyRing(keys, signing_id=signing),
                         AddressPolicy(["0.0.0.0/0"], BUS_DENIED_CIDRS),
                         max_payload_size=1 << 20)

        def sealed(codec: Codec, service: Service, ts: float | None = None) -> bytes:
            return codec.service("east", service, instance="mallory", gen=2**62,
                                 ts=time.time() if ts is None else ts)[1]

        attacks = {
            Reason.BAD_MAC: [captured.replace(b"10.1.0.1", b"10.6.6.6"),
                             sealed(signer({"k1": b"guessed-secret-0123456789"}), web("10.6.6.6"))],
            Reason.UNKNOWN_KEY: [sealed(signer({"k9": K1}, "k9"), web("10.6.6.6"))],
            Reason.OLD_GENERATION: [captured],
            Reason.REPLAY: [sealed(signer({"k1": K1}), web("10.6.6.6"), ts=time.time() - 1000)],
            Reason.ADDRESS: [sealed(signer({"k1": K1}), web("127.0.0.1")),
                             sealed(signer({"k1": K1}), web(cluster_ip="169.254.169.254"))],
            Reason.OVERSIZED: [b"x" * (64 * 1024 + 1)],
        }
        for payloads in attacks.values():
            for payload in payloads:
                await attacker.publish(topic, payload, qos=1)
    expected = {reason.value: len(p) for reason, p in attacks.items()}
    await eventually(lambda: b.bus.stats().rejected == expected)
    assert b.service("east") == web("10.1.0.7")
    assert b.answer() == ["10.96.1.10", "10.96.3.10"]
    assert b.state("east") is ClusterState.FRESH


async def test_a_key_roll_with_the_new_key_added_on_some_instances_first_loses_no_update(
        pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    old, both, new = {"k1": K1}, {"k1": K1, "k2": K2}, {"k2": K2}
    steps = [
        (old, "k1", both, "k1"),  # 1. B learns k2 first; everyone still signs with k1
        (both, "k1", both, "k1"),  # 2. A learns k2 too
        (both, "k2", both, "k1"),  # 3. A signs with k2 (B accepts it since step 1)
        (both, "k2", both, "k2"),  # 4. B signs with k2
        (new, "k2", new, "k2"),  # 5. k1 retired everywhere
    ]
    for n, (a_keys, a_signing, b_keys, b_signing) in enumerate(steps, start=1):
        a.bus.set_keyring(KeyRing(a_keys, signing_id=a_signing))
        b.bus.set_keyring(KeyRing(b_keys, signing_id=b_signing))
        east, west = web(f"10.1.0.{10 + n}"), web(f"10.3.0.{10 + n}", cluster_ip="10.96.3.10")
        a.set(east)
        b.set(west)
        await eventually(lambda: b.service("east") == east  # noqa: B023 (awaited at once)
                         and a.service("west") == west)  # noqa: B023
    assert a.bus.stats().rejected == {} and b.bus.stats().rejected == {}


async def test_signing_with_a_key_a_peer_lacks_is_repaired_by_the_next_republish(
        broker: Mosquitto, prefix: str) -> None:
    a = Instance(broker, prefix, own="east", clusters=("east", "west"), services=[web()],
                 republish_interval=1.0).start()
    b = Instance(broker, prefix, own="west", clusters=("east", "west"), services=[]).start()
    try:
        await eventually(lambda: b.state("east") is ClusterState.FRESH)
        a.bus.set_keyring(KeyRing({"k1": K1, "k2": K2}, signing_id="k2"))  # too early
        a.set(web("10.1.0.8"))
        await eventually(lambda: b.bus.stats().rejected.get("unknown_key", 0) > 0)
        assert b.service("east") == web()
        b.bus.set_keyring(KeyRing({"k1": K1, "k2": K2}, signing_id="k1"))
        await eventually(lambda: b.service("east") == web("10.1.0.8"), within=3.0)
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_a_cluster_known_directly_and_through_the_bus_keeps_answering_if_either_fails(
        broker: Mosquitto, prefix: str) -> None:
    a = Instance(broker, prefix, own="east", clusters=("east",), services=[web()]).start()
    replica = Instance(broker, prefix, own="east", clusters=("east",), services=[web()]).start()
    try:
        await eventually(lambda: "east" in replica.bus.stats().peers
                         and replica.bus.stats().peers["east"].complete)
        # The replica's own watch is lost: A's newer data is used, but stays stale.
        replica.registry.set_state("east", ClusterState.STALE, now=time.monotonic())
        a.set(web("10.1.0.9"))
        await eventually(lambda: replica.service("east") == web("10.1.0.9"))
        assert replica.state("east") is ClusterState.STALE
        assert replica.answer() == ["10.96.1.10"]
        # The watch is back and re-lists: the direct source wins, the bus stands aside.
        replica.registry.replace(ClusterSnapshot.from_services("east", [web("10.1.0.4")]),
                                 now=time.monotonic())
        a.set(web("10.1.0.10"))
        await eventually(lambda: replica.bus.merger.peers["east"].services[WEB][1]
                         == web("10.1.0.10"))
        replica.bus.merger.flush(now=time.monotonic())
        assert replica.service("east") == web("10.1.0.4")
        assert replica.state("east") is ClusterState.FRESH
    finally:
        await asyncio.gather(a.stop(), replica.stop())


async def test_a_broker_down_at_startup_delays_nothing_and_is_joined_when_it_appears(
        tmp_path: Path, prefix: str) -> None:
    broker = Mosquitto(tmp_path / "late")  # port chosen, process not started
    a = Instance(broker, prefix, own="east", clusters=("east",), services=[web()])
    started = time.monotonic()
    a.start()
    assert a.answer() == ["10.96.1.10"]  # local data answers at once
    try:
        await eventually(lambda: a.bus.stats().last_error is not None)
        assert not a.bus.connected and time.monotonic() - started < 2.0
        broker.start()
        await eventually(lambda: a.bus.connected and a.bus.stats().published >= 3)
    finally:
        await a.stop()
        broker.stop()


async def test_an_instance_shutting_down_cleanly_is_marked_stale_at_once(
        broker: Mosquitto, prefix: str) -> None:
    a = Instance(broker, prefix, own="east", clusters=("east",), services=[web()]).start()
    b = Instance(broker, prefix, own="west", clusters=("east", "west"), services=[],
                 heartbeat_interval=10.0, peer_timeout=60.0).start()
    try:
        await eventually(lambda: b.state("east") is ClusterState.FRESH)
        await a.stop()  # "offline" is published, then DISCONNECT (which discards the will)
        await eventually(lambda: b.state("east") is ClusterState.STALE, within=2.0)
        assert b.service("east") == web()
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_a_10000_service_cluster_loads_whole_at_a_peer_subscribing_later(
        broker: Mosquitto, prefix: str) -> None:
    # With the README's broker settings (max_queued_messages 100000) the whole retained
    # backlog arrives at once; the test below joins through mosquitto's defaults.
    services = [Service(f"team-{i % 50}", f"svc-{i:05d}", cluster_ips=(f"10.96.{i // 250}.1",),
                        ports=(Port("http", 80),),
                        endpoints=(Endpoint(f"10.1.{i // 250}.{i % 250 + 1}"),))
                for i in range(10_000)]
    a = Instance(broker, prefix, own="east", clusters=("east",), services=services).start()
    try:
        await eventually(lambda: a.bus.stats().published >= 10_002, within=20.0)
        c = Instance(broker, prefix, own="north", clusters=("east", "north"),
                     services=[]).start()
        try:
            await eventually(lambda: c.registry.clusters["east"].snapshot is not None,
                             within=20.0)
            snapshot = c.registry.clusters["east"].snapshot
            assert snapshot is not None and len(snapshot.services) == 10_000
            assert c.bus.stats().dropped == 0
            a.set(None, ("team-7", "svc-00007"))
            await eventually(lambda: c.service("east", ("team-7", "svc-00007")) is None)
        finally:
            await c.stop()
    finally:
        await a.stop()


async def test_a_peer_joining_through_a_broker_with_default_queues_asks_for_what_it_missed(
        tmp_path: Path, prefix: str) -> None:
    # mosquitto's default max_queued_messages (1000) makes the broker drop what a new
    # subscriber cannot take fast enough from a 10,000-message retained backlog (QoS 0
    # included); the peer finds the gaps in the manifest and asks for them by topic.
    services = [Service(f"team-{i % 50}", f"svc-{i:05d}", cluster_ips=(f"10.96.{i // 250}.1",),
                        ports=(Port("http", 80),),
                        endpoints=tuple(Endpoint(f"10.{e + 1}.{i // 250}.{i % 250 + 1}",
                                                 zone=f"zone-{e}") for e in range(8)))
                for i in range(10_000)]
    with mosquitto(tmp_path / "broker", max_queued_messages=None) as broker:
        # No republish within the test: on a busy host a 10,000-message republish every
        # 30 s keeps the bus busy enough to hold the repair back (it waits for a backlog
        # to finish arriving), and the republish, not the repair, would fill the gaps.
        a = Instance(broker, prefix, own="east", clusters=("east",), services=services,
                     republish_interval=3600.0).start()
        try:
            await eventually(lambda: a.bus.stats().published >= 10_002, within=30.0)
            c = Instance(broker, prefix, own="north", clusters=("east", "north"),
                         services=[], republish_interval=3600.0).start()
            try:
                await eventually(lambda: c.registry.clusters["east"].snapshot is not None
                                 and len(c.registry.clusters["east"].snapshot.services)
                                 == 10_000, within=60.0)
                # The test tested something: the broker did drop, the peer did ask.
                assert "Outgoing messages are being dropped" in broker.log
                assert c.bus.stats().gap_requests > 0
                assert c.state("east") is ClusterState.FRESH
            finally:
                await c.stop()
        finally:
            await a.stop()


async def test_a_broker_requiring_tls_and_a_password_is_joined_only_with_both(
        tmp_path: Path, prefix: str) -> None:
    ca, cert, key = make_tls_files(tmp_path / "tls")
    passwords = make_password_file(tmp_path / "passwd", "feddns", "right-password")
    (tmp_path / "good").write_text("right-password\n")
    (tmp_path / "bad").write_text("wrong-password\n")
    with mosquitto(tmp_path / "broker", tls=(ca, cert, key), password_file=passwords) as broker:
        tls = {"ca_file": str(ca)}
        good = Instance(broker, prefix, own="east", clusters=("east",), services=[web()],
                        tls=tls, username="feddns", password_file=str(tmp_path / "good"))
        bad = Instance(broker, prefix, own="west", clusters=("west",), services=[],
                       tls=tls, username="feddns", password_file=str(tmp_path / "bad"))
        plain = Instance(broker, prefix, own="north", clusters=("north",), services=[],
                         username="feddns", password_file=str(tmp_path / "good"))
        for instance in (good, bad, plain):
            instance.start()
        try:
            await eventually(lambda: good.bus.connected and good.bus.stats().published >= 3)
            await eventually(lambda: bad.bus.stats().last_error is not None
                             and plain.bus.stats().last_error is not None)
            assert not bad.bus.connected and not plain.bus.connected
        finally:
            await asyncio.gather(good.stop(), bad.stop(), plain.stop())
