"""Each cluster speaks only for itself (issue #17), against a real mosquitto.

Several instances run in one process, each with its own Registry and
FederationBus (``tests.integration.test_bus.Instance``) and its own cluster's
Ed25519 key; attackers are plain MQTT clients holding what a compromised
member holds (its broker credentials and its cluster's private key). While a
key rolls or a federation migrates from HMAC, a recorder samples every
instance's answers and cluster states every few milliseconds: "no answer
changed" means no sample ever differed. Waits are bounded polls, never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from feddns.checking import load_checked
from feddns.config import BUS_ALLOWED_CIDRS, BUS_DENIED_CIDRS
from feddns.model.registry import ClusterState
from feddns.model.services import Service
from feddns.sources.mqtt.addresses import AddressPolicy
from feddns.sources.mqtt.codec import Codec
from feddns.sources.mqtt.keys import KeyRing
from feddns.sources.mqtt.sealing import BusKeys
from feddns.sources.mqtt.signatures import PublicKeys, SigningKey, public_pem, write_key_pair
from feddns.sources.mqtt.topics import Topics
from tests.integration.test_bus import WEB, Instance, web
from tests.mosquitto import Mosquitto, make_password_file, mosquitto
from tests.support import ServerThread, eventually, write_federation

REPO = Path(__file__).resolve().parents[2]
SHIPPED_ACL = REPO / "docker" / "mosquitto.acl"
SECRET = b"the-federation-shared-secret-0123"
CLUSTER_IPS = {"east": "10.96.1.10", "west": "10.96.3.10", "north": "10.96.4.10"}
ALL = sorted(CLUSTER_IPS.values())
SLOW = {"heartbeat_interval": 0.5, "peer_timeout": 10.0}
"""Freshness that a loaded machine cannot miss: every state sample must stay fresh."""


def svc(cluster: str, ip: str = "1") -> Service:
    """Cluster's web service; ``ip`` varies its endpoint (not its answered cluster IP)."""
    n = {"east": 1, "west": 3, "north": 4}[cluster]
    return web(f"10.{n}.0.{ip}", cluster_ip=CLUSTER_IPS[cluster])


def keys(private: SigningKey | None, public: dict[str, list[SigningKey]], *,
         hmac: bool = False) -> BusKeys:
    return BusKeys(hmac=KeyRing({"k1": SECRET}, signing_id="k1") if hmac else None,
                   public=PublicKeys({c: [k.public for k in ks] for c, ks in public.items()}),
                   private={private.cluster: private} if private is not None else None)


def attacker_codec(prefix: str, federation: str, cluster: str, key: SigningKey) -> Codec:
    """Seals messages for ``cluster``'s topics with ``key`` (another cluster's, stolen)."""
    return Codec(Topics(prefix, federation), BusKeys(private={cluster: key}),
                 AddressPolicy(BUS_ALLOWED_CIDRS, BUS_DENIED_CIDRS), max_payload_size=1 << 20)


class Recorder:
    """Samples answers and cluster states of instances every few ms, in the background."""

    def __init__(self, *instances: Instance) -> None:
        self.instances = instances
        self.samples: list[tuple[str, Any, dict[str, ClusterState]]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for inst in self.instances:
                states = {c: inst.state(c) for c in inst.registry.clusters}
                self.samples.append((inst.own, inst.answer(), states))
            await asyncio.sleep(0.01)

    async def stop(self) -> list[tuple[str, Any, dict[str, ClusterState]]]:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        return self.samples


@contextlib.contextmanager
def recording_never_differs(recorder_samples: list[Any]) -> Iterator[None]:
    yield
    assert len(recorder_samples) > 10, "the recorder hardly ran"
    odd = [s for s in recorder_samples if s[1] != ALL
           or any(state is not ClusterState.FRESH for state in s[2].values())]
    assert not odd, f"{len(odd)} of {len(recorder_samples)} samples differ, first: {odd[0]}"


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


KEYS = {c: SigningKey.generate(c) for c in ("east", "west", "north")}
EVERYONE = {c: [k] for c, k in KEYS.items()}


@pytest.fixture
async def trio(broker: Mosquitto, prefix: str) -> AsyncIterator[dict[str, Instance]]:
    """East, west and north, each signing with its own key and holding everyone's public."""
    out = {c: Instance(broker, prefix, own=c, clusters=tuple(CLUSTER_IPS), services=[svc(c)],
                       keyring=keys(KEYS[c], EVERYONE), **SLOW).start()
           for c in CLUSTER_IPS}
    try:
        await eventually(lambda: all(i.answer() == ALL and all(
            i.state(c) is ClusterState.FRESH for c in CLUSTER_IPS) for i in out.values()),
            within=15.0)
        yield out
    finally:
        await asyncio.gather(*(i.stop() for i in out.values()))


async def test_a_message_for_east_signed_by_wests_key_is_rejected_at_every_peer_and_east_answers_on(
        broker: Mosquitto, prefix: str, trio: dict[str, Instance]) -> None:
    east = trio["east"]
    session = trio["west"].bus.merger.peers["east"].session
    forger = attacker_codec(prefix, "fed", "east", KEYS["west"])  # west, compromised
    now = time.time()
    attacks = [
        # East's web service pointed elsewhere, a manifest without it, east "offline".
        forger.service("east", web("10.6.6.6", cluster_ip="10.6.6.6"), instance="east-x",
                       gen=2**62, ts=now),
        forger.snapshot("east", [], instance="east-x", gen=2**62, ts=now),
        forger.status("east", online=False, session=session or 0, state=ClusterState.STALE,
                      clusters=("east",), instance="east-x", gen=2**62, ts=now),
    ]
    async with aiomqtt.Client("127.0.0.1", broker.port) as attacker:
        for topic, payload in attacks:
            await attacker.publish(topic, payload, qos=1)
    await eventually(lambda: all(i.bus.stats().rejected == {"wrong_signer": len(attacks)}
                                 for i in trio.values()))
    for inst in trio.values():
        assert inst.answer() == ALL, inst.own
        assert inst.service("east") == svc("east"), inst.own
        assert inst.state("east") is ClusterState.FRESH, inst.own
    assert trio["north"].bus.stats().peers["east"].signed_with == f"ed25519 {KEYS['east'].key_id}"
    # East itself goes on publishing, signed with its own key, and is heard everywhere.
    east.set(svc("east", "2"))
    await eventually(lambda: trio["north"].service("east") == svc("east", "2"))


async def test_a_per_cluster_key_roll_loses_no_message_and_changes_no_answer(
        broker: Mosquitto, prefix: str, trio: dict[str, Instance]) -> None:
    old, new = KEYS["east"], SigningKey.generate("east")
    rolling = {**EVERYONE, "east": [old, new]}
    after = {**EVERYONE, "east": [new]}
    recorder = Recorder(*trio.values())
    steps: list[tuple[str, dict[str, BusKeys]]] = [
        ("1. east's new public key at every instance (peers first, east last)",
         {"west": keys(KEYS["west"], rolling), "north": keys(KEYS["north"], rolling),
          "east": keys(old, rolling)}),
        ("2. east signs with the new key (and republishes at once)",
         {"east": keys(new, rolling)}),
        ("3. the old key retired everywhere",
         {c: keys(new if c == "east" else KEYS[c], after) for c in CLUSTER_IPS}),
    ]
    with recording_never_differs(recorder.samples):
        for n, (_, changes) in enumerate(steps, start=2):
            for cluster, ring in changes.items():
                trio[cluster].bus.set_keyring(ring)
            for cluster, inst in trio.items():  # a change from every cluster, each step
                inst.set(svc(cluster, str(n)))
            await eventually(lambda: all(  # awaited at once
                other.service(c) == svc(c, str(n))  # noqa: B023
                for other in trio.values() for c in CLUSTER_IPS))
        await recorder.stop()
    assert all(i.bus.stats().rejected == {} for i in trio.values())
    assert trio["west"].bus.stats().peers["east"].signed_with == f"ed25519 {new.key_id}"
    # Everything retained at the broker is signed with the new key: a peer that joins now,
    # holding only the new key, loads east whole and rejects nothing.
    late = Instance(broker, prefix, own="south", clusters=(*CLUSTER_IPS, "south"),
                    services=[], keyring=keys(SigningKey.generate("south"), after)).start()
    try:
        await eventually(lambda: late.service("east") == svc("east", "4")
                         and late.state("east") is ClusterState.FRESH)
        assert late.bus.stats().rejected == {}
    finally:
        await late.stop()


async def test_an_hmac_federation_migrated_to_signatures_step_by_step_loses_no_answer(
        broker: Mosquitto, prefix: str) -> None:
    names = ("east", "west", "north")
    trio = {c: Instance(broker, prefix, own=c, clusters=names, services=[svc(c)],
                        keyring=keys(None, {}, hmac=True), **SLOW).start() for c in names}
    try:
        await eventually(lambda: all(i.answer() == ALL and all(
            i.state(c) is ClusterState.FRESH for c in names) for i in trio.values()),
            within=15.0)
        assert trio["west"].bus.stats().peers["east"].signed_with == "hmac k1"
        recorder = Recorder(*trio.values())
        steps: list[dict[str, BusKeys]] = [
            # 1. Every instance accepts both: HMAC, and each cluster's public key.
            {c: keys(None, EVERYONE, hmac=True) for c in names},
            # 2. Publishers switch to their own key, one at a time (HMAC still accepted).
            {"east": keys(KEYS["east"], EVERYONE, hmac=True)},
            {"west": keys(KEYS["west"], EVERYONE, hmac=True)},
            {"north": keys(KEYS["north"], EVERYONE, hmac=True)},
            # 3. HMAC removed everywhere: only signatures from here on.
            {c: keys(KEYS[c], EVERYONE) for c in names},
        ]
        with recording_never_differs(recorder.samples):
            for n, changes in enumerate(steps, start=2):
                for cluster, ring in changes.items():
                    trio[cluster].bus.set_keyring(ring)
                for cluster, inst in trio.items():
                    inst.set(svc(cluster, str(n)))
                await eventually(lambda: all(  # awaited at once
                    other.service(c) == svc(c, str(n))  # noqa: B023
                    for other in trio.values() for c in names))
            await recorder.stop()
        assert all(i.bus.stats().rejected == {} for i in trio.values())
        assert {n: p.signed_with for n, p in trio["west"].bus.stats().peers.items()} == {
            c: f"ed25519 {KEYS[c].key_id}" for c in ("east", "north")}
        # The old shared secret (leaked, say) no longer speaks for anyone.
        hmac_forger = Codec(Topics(prefix, "fed"), KeyRing({"k1": SECRET}, signing_id="k1"),
                            AddressPolicy(BUS_ALLOWED_CIDRS, BUS_DENIED_CIDRS),
                            max_payload_size=1 << 20)
        topic, payload = hmac_forger.service("east", web("10.6.6.6", cluster_ip="10.6.6.6"),
                                             instance="x", gen=2**62, ts=time.time())
        async with aiomqtt.Client("127.0.0.1", broker.port) as attacker:
            await attacker.publish(topic, payload, qos=1)
        await eventually(lambda: trio["west"].bus.stats().rejected == {"unknown_key": 1})
        assert trio["west"].answer() == ALL
    finally:
        await asyncio.gather(*(i.stop() for i in trio.values()))


# --- the broker's ACL (defence in depth) ---------------------------------------------------


DEMO = {"east-a": ("east", "10.96.1.10"), "west.prod": ("west", "10.96.3.10")}
DEMO_KEYS = {c: SigningKey.generate(c) for c in DEMO}


def demo_instance(broker: Mosquitto, cluster: str, **creds: Any) -> Instance:
    """A demo instance (federation ``demo``, prefix ``feddns``, as the shipped ACL says)."""
    return Instance(broker, "feddns", own=cluster, clusters=tuple(DEMO),
                    services=[web(cluster_ip=DEMO[cluster][1])], federation="demo",
                    keyring=keys(DEMO_KEYS[cluster], {c: [k] for c, k in DEMO_KEYS.items()}),
                    **creds)


async def forge_wests_service(broker: Mosquitto, *, east: dict[str, Any],
                              reader: dict[str, Any]) -> list[bytes]:
    """East's credentials and east-a's key publish west.prod's service, then a marker.

    The marker is what a compromised east may publish: a status of east-a, signed with
    its key. One connection publishes both in order, so once a reader of both topics
    has the marker, the forged message was either delivered before it or refused.
    Returns the forged messages the reader received.
    """
    forged = attacker_codec("feddns", "demo", "west.prod", DEMO_KEYS["east-a"]).service(
        "west.prod", web("10.6.6.6", cluster_ip="10.6.6.6"), instance="east-a-x", gen=2**62,
        ts=time.time())
    marker = attacker_codec("feddns", "demo", "east-a", DEMO_KEYS["east-a"]).status(
        "east-a", online=True, session=2**62, state=ClusterState.FRESH, instance="east-a-x",
        gen=2**62, ts=time.time())
    seen: list[bytes] = []
    async with aiomqtt.Client("127.0.0.1", broker.port, **reader) as watcher:
        await watcher.subscribe(forged[0], qos=1)
        await watcher.subscribe(marker[0], qos=1)
        async with aiomqtt.Client("127.0.0.1", broker.port, **east) as compromised:
            await compromised.publish(*forged, qos=1, retain=True)
            await compromised.publish(*marker, qos=1)
        async with asyncio.timeout(10):
            async for message in watcher.messages:
                if message.topic.matches(marker[0]) and message.payload == marker[1]:
                    break
                if message.topic.matches(forged[0]) and not message.retain:
                    assert isinstance(message.payload, bytes)
                    seen.append(message.payload)  # delivered live: it got through
    return seen


async def test_the_shipped_acl_refuses_a_publish_outside_own_topics_and_receivers_reject_it_anyway(
        tmp_path: Path) -> None:
    passwords = make_password_file(tmp_path / "passwd", "east", "east-password",
                                   ("west", "west-password"))
    east_creds = {"username": "east", "password": "east-password"}
    west_creds = {"username": "west", "password": "west-password"}
    with mosquitto(tmp_path / "acl", password_file=passwords, acl_file=SHIPPED_ACL) as guarded:
        (tmp_path / "east.pw").write_text("east-password\n")
        (tmp_path / "west.pw").write_text("west-password\n")
        a = demo_instance(guarded, "east-a", username="east",
                          password_file=str(tmp_path / "east.pw")).start()
        b = demo_instance(guarded, "west.prod", username="west",
                          password_file=str(tmp_path / "west.pw")).start()
        try:
            # With per-instance credentials and the ACL, the federation works as before.
            await eventually(lambda: a.service("west.prod") is not None
                             and b.service("east-a") is not None, within=15.0)
            held = a.service("west.prod")
            # A compromised east: its credentials, east-a's private key, west's topic.
            assert await forge_wests_service(guarded, east=east_creds, reader=west_creds) == []
            assert "Denied PUBLISH" in guarded.log and "west.prod/services/shop/web" in guarded.log
            assert a.service("west.prod") == held and b.bus.stats().rejected == {}
            # West's retained message is still west's own (nothing was overwritten).
            async with aiomqtt.Client("127.0.0.1", guarded.port, **east_creds) as late:
                await late.subscribe(Topics("feddns", "demo").service("west.prod", WEB), qos=1)
                async with asyncio.timeout(10):
                    retained = await anext(aiter(late.messages))
            assert isinstance(retained.payload, bytes)
            assert f"{DEMO_KEYS['west.prod'].key_id}:".encode() in retained.payload[:200]
        finally:
            await asyncio.gather(a.stop(), b.stop())
    # The same attack through a broker without the ACL gets through, and every receiver
    # rejects it: west's answers stay west's.
    with mosquitto(tmp_path / "open") as open_broker:
        a = demo_instance(open_broker, "east-a").start()
        b = demo_instance(open_broker, "west.prod").start()
        try:
            await eventually(lambda: a.service("west.prod") is not None
                             and b.service("east-a") is not None, within=15.0)
            held = a.service("west.prod")
            assert len(await forge_wests_service(open_broker, east={}, reader={})) == 1
            await eventually(lambda: a.bus.stats().rejected == {"wrong_signer": 1}
                             and b.bus.stats().rejected == {"wrong_signer": 1})
            assert a.service("west.prod") == held
            assert a.answer() == sorted(ip for _, ip in DEMO.values())
        finally:
            await asyncio.gather(a.stop(), b.stop())


# --- keys change with a reload, never a restart ---------------------------------------------


def test_a_reload_rereads_the_key_files_and_switches_the_signer_without_a_restart(
        tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    public = tmp_path / "public"  # a ConfigMap, as the kubelet mounts it
    public.mkdir()
    (public / "west.pub").write_bytes(public_pem(KEYS["west"].public))
    first, _, _ = write_key_pair(tmp_path / "secret", "east")
    config = write_federation(tmp_path, {"east": {"services": []}}, extra={"bus": {
        "broker": "127.0.0.1", "port": broker.port, "topic_prefix": f"r{broker.port}",
        "private_keys": [{"cluster": "east", "file": str(first)}],
        "public_keys_dir": str(public)}})
    data = yaml.safe_load(config.read_text())
    data["clusters"].append({"name": "west", "region": "r2", "zones": ["z1"],
                             "source": {"type": "bus"}})
    config.write_text(yaml.safe_dump(data))
    server = ServerThread(load_checked(config), config_path=config).start(wait_loaded=False)
    try:
        app = server.app
        assert app is not None and app.bus is not None
        bus = app.bus
        assert server.call(lambda: bus.codec.keys.public.ids("west")) == (KEYS["west"].key_id,)
        # West rolls: its next public key lands in the directory; east switches its key.
        rolled = SigningKey.generate("west")
        (public / "west_next.pub").write_bytes(public_pem(rolled.public))
        second, _, second_id = write_key_pair(tmp_path / "secret", "east", label="next")
        data["bus"]["private_keys"] = [{"cluster": "east", "file": str(second)}]
        config.write_text(yaml.safe_dump(data))
        with caplog.at_level(logging.INFO, logger="feddns"):
            assert asyncio.run_coroutine_threadsafe(app.reload(), server.loop).result(30)
        assert set(server.call(lambda: bus.codec.keys.public.ids("west"))) == {
            KEYS["west"].key_id, rolled.key_id}
        assert server.call(bus.codec.keys.signer_ids) == (f"east:{second_id}",)
        messages = [r.getMessage() for r in caplog.records]
        assert not any("bus changed; it takes a restart" in m for m in messages)
        assert any(m.startswith(f"bus: the signer changed (signing with east {second_id}")
                   for m in messages)
    finally:
        server.stop()
