"""The federation bus without a broker: signed payloads, merging peers, publishing own data.

No sockets and no clock: every wall-clock and monotonic time is a number
passed in, so replay windows, silences and generations are exact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from feddns.config import (
    BUS_ALLOWED_CIDRS,
    BUS_DENIED_CIDRS,
    BusConfig,
    Settings,
    problems_from_validation,
)
from feddns.errors import ConfigError
from feddns.model.registry import ClusterState, Registry
from feddns.model.services import (
    ClusterSnapshot,
    Endpoint,
    Port,
    Service,
    ServiceKey,
    ServiceType,
)
from feddns.sources.mqtt.addresses import AddressPolicy
from feddns.sources.mqtt.brokers import BrokerRounds
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
from feddns.sources.mqtt.keys import KeyRing
from feddns.sources.mqtt.merging import Merger
from feddns.sources.mqtt.publishing import Generations, Publisher
from feddns.sources.mqtt.topics import Topics

K1 = b"first-secret-0123456789"
K2 = b"second-secret-0123456789"
TOPICS = Topics("feddns", "fed")
WALL = 1_800_000_000.0
NOW = 1000.0


def make_codec(keys: dict[str, bytes] | None = None, signing: str = "k1", *,
               max_payload_size: int = 256 * 1024,
               allowed: tuple[str, ...] = BUS_ALLOWED_CIDRS) -> Codec:
    ring = KeyRing(keys or {"k1": K1}, signing_id=signing)
    return Codec(TOPICS, ring, AddressPolicy(allowed, BUS_DENIED_CIDRS),
                 max_payload_size=max_payload_size)


def web(ip: str = "10.1.0.1", *, cluster_ip: str = "10.96.0.10", name: str = "web") -> Service:
    return Service("shop", name, cluster_ips=(cluster_ip,), ports=(Port("http", 80),),
                   endpoints=(Endpoint(ip, zone="z1", node="n1", target="web-0"),))


def service_payload(codec: Codec, service: Service, *, cluster: str = "east", gen: int = 1,
                    ts: float = WALL, instance: str = "east-aaaa") -> tuple[str, bytes]:
    return codec.service(cluster, service, instance=instance, gen=gen, ts=ts)


def reason_of(codec: Codec, topic: str, payload: bytes) -> Reason:
    with pytest.raises(Rejected) as info:
        codec.decode(topic, payload)
    return info.value.reason


# --- the codec ---------------------------------------------------------------------


def test_a_signed_service_round_trips_into_an_equal_model_object() -> None:
    codec = make_codec()
    svc = Service("shop", "db", ServiceType.HEADLESS, ports=(Port("pg", 5432),),
                  endpoints=(Endpoint("10.2.0.1", hostname="db-0", zone="z1"),
                             Endpoint("fd00::1", ready=False, serving=True, terminating=True)))
    topic, payload = service_payload(codec, svc, gen=7)
    assert topic == "feddns/fed/clusters/east/services/shop/db"
    msg = codec.decode(topic, payload)
    assert isinstance(msg, ServiceMessage)
    assert msg.service == svc
    assert (msg.header.origin, msg.header.gen, msg.header.ts, msg.header.key_id) == (
        "east", 7, WALL, "k1")


def test_a_manifest_of_10000_services_fits_the_default_size_cap() -> None:
    codec = make_codec()
    keys = [(f"team-{i % 50}", f"service-{i:05d}") for i in range(10_000)]
    topic, payload = codec.snapshot("east", keys, instance="east-aaaa", gen=1, ts=WALL)
    assert len(payload) < 256 * 1024
    msg = codec.decode(topic, payload)
    assert isinstance(msg, SnapshotMessage) and len(msg.keys) == 10_000


def test_a_headless_service_with_1000_endpoints_fits_the_default_size_cap() -> None:
    codec = make_codec()
    svc = Service("shop", "big", ServiceType.HEADLESS, ports=(Port("http", 80),), endpoints=tuple(
        Endpoint(f"10.3.{i // 250}.{i % 250 + 1}", hostname=f"big-{i}", zone=f"z{i % 3}",
                 node=f"node-{i % 40}", target=f"big-{i}") for i in range(1000)))
    topic, payload = service_payload(codec, svc)
    assert len(payload) < 64 * 1024
    assert codec.decode(topic, payload) == ServiceMessage(
        Header("east", "east-aaaa", 1, WALL, "k1"), svc)


def test_a_byte_changed_after_signing_is_rejected_as_a_bad_mac() -> None:
    codec = make_codec()
    topic, payload = service_payload(codec, web())
    forged = payload.replace(b"10.1.0.1", b"10.6.6.6")
    assert forged != payload
    assert reason_of(codec, topic, forged) is Reason.BAD_MAC


def test_a_message_moved_to_another_topic_is_rejected_as_a_bad_mac() -> None:
    codec = make_codec()
    _, payload = service_payload(codec, web())
    assert reason_of(codec, TOPICS.service("west", ("shop", "web")), payload) is Reason.BAD_MAC


def test_a_known_key_id_with_the_wrong_secret_is_rejected_as_a_bad_mac() -> None:
    topic, payload = service_payload(make_codec({"k1": b"not-the-real-secret-at-all"}), web())
    assert reason_of(make_codec(), topic, payload) is Reason.BAD_MAC


def test_a_key_id_missing_from_the_ring_is_rejected_as_an_unknown_key() -> None:
    topic, payload = service_payload(make_codec({"k9": K1}, "k9"), web())
    assert reason_of(make_codec(), topic, payload) is Reason.UNKNOWN_KEY


def test_during_a_key_roll_a_ring_with_both_keys_verifies_either_signature() -> None:
    old_only = make_codec({"k1": K1})
    both_signing_old = make_codec({"k1": K1, "k2": K2}, "k1")
    both_signing_new = make_codec({"k1": K1, "k2": K2}, "k2")
    for sender in (old_only, both_signing_old, both_signing_new):
        topic, payload = service_payload(sender, web())
        assert isinstance(both_signing_old.decode(topic, payload), ServiceMessage)
        assert isinstance(both_signing_new.decode(topic, payload), ServiceMessage)
    topic, payload = service_payload(both_signing_new, web())
    assert reason_of(old_only, topic, payload) is Reason.UNKNOWN_KEY  # step 1 comes first


@pytest.mark.parametrize("payload", [
    b"hello",
    b"fd1 k1 j\n{}",
    b"fd1 k1 x AAAA\n{}",
    b'{"kind": "service"}',
    b"fd1 k1 j !!notbase64!!\n{}",
])
def test_anything_that_is_not_a_bus_payload_is_rejected_as_malformed(payload: bytes) -> None:
    reason = reason_of(make_codec(), TOPICS.service("east", ("shop", "web")), payload)
    assert reason in (Reason.MALFORMED, Reason.BAD_MAC)


def test_a_correctly_signed_body_that_fails_the_schema_is_rejected_as_malformed() -> None:
    codec = make_codec()
    topic = TOPICS.status("east")
    body = {"v": 1, "kind": "status", "origin": "east", "instance": "i", "gen": 1, "ts": WALL,
            "online": True, "session": 1, "state": "fresh", "extra": "field"}
    assert reason_of(codec, topic, codec.seal(topic, body)) is Reason.MALFORMED
    body = {**body, "extra": None}
    del body["extra"]
    body["gen"] = -5
    assert reason_of(codec, topic, codec.seal(topic, body)) is Reason.MALFORMED


def test_a_signed_body_naming_another_cluster_than_its_topic_is_rejected() -> None:
    codec = make_codec()
    topic = TOPICS.snapshot("east")
    body = {"v": 1, "kind": "snapshot", "origin": "west", "instance": "i", "gen": 1, "ts": WALL,
            "services": []}
    assert reason_of(codec, topic, codec.seal(topic, body)) is Reason.TOPIC_MISMATCH
    topic = TOPICS.service("east", ("shop", "web"))
    body = {"v": 1, "kind": "service", "origin": "east", "instance": "i", "gen": 1, "ts": WALL,
            "service": {"namespace": "shop", "name": "api"}}
    assert reason_of(codec, topic, codec.seal(topic, body)) is Reason.TOPIC_MISMATCH


def test_an_oversized_payload_is_rejected_before_anything_else() -> None:
    codec = make_codec(max_payload_size=4096)
    assert reason_of(codec, TOPICS.status("east"), b"x" * 4097) is Reason.OVERSIZED


def test_a_small_payload_inflating_beyond_its_bound_is_rejected_as_oversized() -> None:
    codec = make_codec(max_payload_size=4096)
    topic = TOPICS.status("east")
    payload = codec.seal(topic, {"padding": "a" * (4096 * 40)})
    assert len(payload) < 4096
    assert reason_of(codec, topic, payload) is Reason.OVERSIZED


@pytest.mark.parametrize(("address", "allowed", "ok"), [
    ("10.1.2.3", BUS_ALLOWED_CIDRS, True),
    ("192.168.1.1", BUS_ALLOWED_CIDRS, True),
    ("fd00::1", BUS_ALLOWED_CIDRS, True),
    # Ordinary public load-balancer addresses, and the documentation ranges the demo uses.
    ("8.8.8.8", BUS_ALLOWED_CIDRS, True),
    ("203.0.113.20", BUS_ALLOWED_CIDRS, True),
    ("198.51.100.20", BUS_ALLOWED_CIDRS, True),
    ("192.0.2.1", BUS_ALLOWED_CIDRS, True),
    ("2001:db8::1", BUS_ALLOWED_CIDRS, True),
    ("2600:1f18::1", BUS_ALLOWED_CIDRS, True),
    ("8.8.8.8", ("10.0.0.0/8",), False),  # a narrowed allow list is obeyed
    # Never valid for a service, whatever is allowed.
    ("127.0.0.1", ("0.0.0.0/0",), False),
    ("169.254.169.254", ("0.0.0.0/0",), False),
    ("0.0.0.0", ("0.0.0.0/0",), False),
    ("0.1.2.3", ("0.0.0.0/0",), False),
    ("224.0.0.1", ("0.0.0.0/0",), False),
    ("240.0.0.1", ("0.0.0.0/0",), False),
    ("255.255.255.255", ("0.0.0.0/0",), False),
    ("::", ("::/0",), False),
    ("::1", ("::/0",), False),
    ("fe80::1", ("::/0",), False),
    ("ff02::1", ("::/0",), False),
    ("::ffff:127.0.0.1", ("::/0",), False),  # IPv4-mapped
    ("::ffff:8.8.8.8", ("::/0",), False),
    ("::169.254.169.254", ("::/0",), False),  # IPv4-compatible (deprecated)
    ("64:ff9b::a9fe:a9fe", ("::/0",), False),  # NAT64 of 169.254.169.254
    ("64:ff9b::808:808", ("::/0",), True),  # NAT64 of 8.8.8.8
    ("2002:7f00:1::1", ("::/0",), False),  # 6to4 of 127.0.0.1
    ("2001:db8::1", ("::/0",), True),
])
def test_the_address_policy_allows_only_allowed_blocks_and_never_the_denied_ones(
        address: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert AddressPolicy(allowed, ()).is_allowed(address) is ok
    assert AddressPolicy(allowed, BUS_DENIED_CIDRS).is_allowed(address) is ok


def test_loopback_and_metadata_stay_refused_with_an_empty_deny_list() -> None:
    policy = AddressPolicy(["0.0.0.0/0", "::/0"], [])
    assert not any(policy.is_allowed(a) for a in ("127.0.0.1", "169.254.169.254", "::1"))
    assert not AddressPolicy(["0.0.0.0/0"], ["203.0.113.0/24"]).is_allowed("203.0.113.20")


@pytest.mark.parametrize("service", [
    web("127.0.0.1"),
    web(cluster_ip="169.254.169.254"),
    Service("shop", "web", ServiceType.LOAD_BALANCER, load_balancer_ips=("240.0.0.8",)),
])
def test_a_signed_service_with_one_forbidden_address_is_rejected_whole(service: Service) -> None:
    codec = make_codec()
    assert reason_of(codec, *service_payload(codec, service)) is Reason.ADDRESS


@pytest.mark.parametrize(("skew", "extra_age", "ok"), [
    (0, 0, True),
    (-299, 0, True),
    (-301, 0, False),
    (299, 0, True),
    (301, 0, False),
    (-500, 300, True),   # a retained message, stored up to one republish interval earlier
    (-601, 300, False),
    (301, 300, False),   # the future is never widened
])
def test_timestamps_outside_the_replay_window_are_rejected(skew: float, extra_age: float,
                                                           ok: bool) -> None:
    header = Header("east", "i", 1, WALL + skew, "k1")
    if ok:
        check_time(header, wall_now=WALL, window=300, extra_age=extra_age)
    else:
        with pytest.raises(Rejected) as info:
            check_time(header, wall_now=WALL, window=300, extra_age=extra_age)
        assert info.value.reason is Reason.REPLAY


def test_the_key_ring_reads_files_and_variables_and_never_shows_a_secret(tmp_path: Path) -> None:
    (tmp_path / "k1").write_text(K1.decode() + "\n")
    settings = BusConfig.model_validate(
        {"broker": "localhost", "signing_key": "k2",
         "keys": [{"id": "k1", "secret_file": "k1"}, {"id": "k2", "secret_env": "BUS_K2"}]},
        context={"base_dir": tmp_path})
    ring = KeyRing.from_config(settings, environ={"BUS_K2": K2.decode()})
    assert (ring.secret("k1"), ring.secret("k2"), ring.signing_id) == (K1, K2, "k2")
    assert K1.decode() not in repr(ring) and K2.decode() not in repr(ring)


def test_a_missing_or_short_secret_is_a_config_error_naming_the_key() -> None:
    settings = BusConfig.model_validate(
        {"broker": "localhost", "keys": [{"id": "k1", "secret_env": "NOPE_NOT_SET_X"},
                                         {"id": "k2", "secret_env": "SHORT"}]})
    with pytest.raises(ConfigError) as info:
        KeyRing.from_config(settings, environ={"SHORT": "tooshort"})
    assert [p.split(":")[0] for p in info.value.problems] == ["bus.keys[0] (k1)",
                                                               "bus.keys[1] (k2)"]
    assert "tooshort" not in str(info.value)
    assert "NOPE_NOT_SET_X" not in os.environ


# --- several brokers ------------------------------------------------------------------


def settings_problems(bus: dict[str, Any]) -> list[str]:
    try:
        Settings.model_validate({"bus": {"keys": [{"id": "k1", "secret_env": "K"}], **bus}})
    except ValidationError as exc:
        return problems_from_validation(exc)
    return []


def test_one_broker_is_a_list_of_one_and_several_keep_their_order() -> None:
    keys = [{"id": "k1", "secret_env": "K"}]
    one = BusConfig.model_validate({"broker": "mqtt.example", "port": 8883, "keys": keys})
    assert [b.label for b in one.all_brokers] == ["mqtt.example:8883"]
    several = BusConfig.model_validate({"brokers": [{"host": "b", "port": 8883}, {"host": "a"},
                                                    {"host": "fd00::1"}], "keys": keys})
    assert [b.label for b in several.all_brokers] == ["b:8883", "a:1883", "[fd00::1]:1883"]


@pytest.mark.parametrize(("bus", "problem"), [
    ({}, "bus: no broker: give 'broker' (one host, with 'port') or 'brokers' (a list of"
         " {host, port}, tried in order)"),
    ({"broker": "a", "brokers": [{"host": "b"}]},
     "bus: give either 'broker' (one broker, with 'port') or 'brokers' (a list of {host,"
     " port}), not both"),
    ({"brokers": [{"host": "a"}], "port": 1884},
     "bus: 'port' goes with 'broker'; with 'brokers', give each entry its own 'port'"),
    ({"brokers": []}, "bus.brokers: list should have at least 1 item after validation, not 0"),
    ({"brokers": ["a:1883"]}, "bus.brokers: [0] is 'a:1883': give each broker as a mapping,"
                              " such as {host: a, port: 1883}"),
    ({"brokers": [{"host": "a"}, {"host": "a", "port": 1883}]},
     "bus.brokers: the same broker twice: [0] and [1] (a:1883)"),
    ({"brokers": [{"host": "a:1883"}]},
     "bus.brokers[0].host: 'a:1883': give the port with the 'port' key, not in the host name"),
    ({"brokers": [{"host": "mqtts://a"}]},
     "bus.brokers[0].host: 'mqtts://a': give the host name alone, without a scheme (TLS is"
     " the 'tls' section)"),
    ({"brokers": [{"host": "b", "port": 0}]},
     "bus.brokers[0].port: input should be greater than or equal to 1"),
    ({"brokers": [{"host": "b", "prot": 1}]},
     "bus.brokers[0].prot: unknown key (not a feddns setting; check the spelling)"),
    ({"broker": "[::1]"}, "bus.broker: '[::1]': give an IPv6 address without brackets (the"
                          " port has its own key)"),
])
def test_exactly_one_of_broker_and_brokers_is_given_and_mistakes_are_named(
        bus: dict[str, Any], problem: str) -> None:
    assert settings_problems(bus) == [problem]


def test_attempts_go_round_the_brokers_and_pause_only_after_a_whole_round_failed() -> None:
    rounds = BrokerRounds(3)
    seen = []
    for established in (False, False, False, False, True, False, False, False):
        index = rounds.index
        seen.append((index, rounds.ended(established=established)))
    # 0, 1, 2 fail: pause; 0 fails; 1 connects (then is lost): 2 at once; 2, 0, 1 fail: pause.
    assert seen == [(0, False), (1, False), (2, True), (0, False), (1, False), (2, False),
                    (0, False), (1, True)]
    single = BrokerRounds(1)
    assert single.ended(established=True) is False  # lost: reconnect at once
    assert single.ended(established=False) is True  # refused: back off
    assert single.index == 0


# --- merging peers into the registry ------------------------------------------------


class Peer:
    """A fake remote instance publishing cluster ``cluster`` with its own codec."""

    def __init__(self, cluster: str = "east", *, instance: str = "east-peer",
                 codec: Codec | None = None) -> None:
        self.cluster = cluster
        self.instance = instance
        self.codec = codec or make_codec()
        self.gen = 100
        self.session = 50

    def next(self) -> int:
        self.gen += 1
        return self.gen

    def service(self, svc: Service, *, gen: int | None = None,
                ts: float = WALL) -> tuple[str, bytes]:
        return self.codec.service(self.cluster, svc, instance=self.instance,
                                  gen=gen or self.next(), ts=ts)

    def manifest(self, *keys: ServiceKey, gen: int | None = None) -> tuple[str, bytes]:
        return self.codec.snapshot(self.cluster, keys, instance=self.instance,
                                   gen=gen or self.next(), ts=WALL)

    def status(self, *, online: bool = True, state: ClusterState = ClusterState.FRESH,
               session: int | None = None, gen: int | None = None, ts: float = WALL,
               clusters: tuple[str, ...] = ()) -> tuple[str, bytes]:
        return self.codec.status(self.cluster, online=online, session=session or self.session,
                                 state=state, clusters=clusters or (self.cluster,),
                                 instance=self.instance, gen=gen or self.next(), ts=ts)


def make_merger(*clusters: str, own: tuple[str, ...] = (), accept_unknown: bool = False,
                registry: Registry | None = None,
                allowed: tuple[str, ...] = BUS_ALLOWED_CIDRS) -> Merger:
    return Merger(registry or Registry.for_clusters(clusters or ("east", "west")),
                  make_codec(allowed=allowed),
                  own_clusters=own, instance="me-1234", peer_timeout=90.0,
                  replay_window=300.0, retained_age=330.0,
                  accept_unknown_clusters=accept_unknown)


def feed(merger: Merger, *messages: tuple[str, bytes], now: float = NOW,
         retained: bool = False, wall: float = WALL) -> None:
    for topic, payload in messages:
        merger.receive(topic, payload, retained=retained, now=now, wall_now=wall)
    merger.flush(now=now)


def services_of(merger: Merger, cluster: str = "east") -> dict[ServiceKey, Service] | None:
    snapshot = merger.registry.clusters[cluster].snapshot
    return None if snapshot is None else dict(snapshot.services)


def state_of(merger: Merger, cluster: str = "east") -> ClusterState:
    return merger.registry.clusters[cluster].state


def test_a_peer_cluster_loads_only_once_its_manifest_and_every_listed_service_arrived() -> None:
    merger, peer = make_merger(), Peer()
    db = web("10.1.0.9", name="db")
    feed(merger, peer.status(), peer.service(web()))
    assert services_of(merger) is None  # no manifest: unknown, not empty
    feed(merger, peer.manifest(("shop", "web"), ("shop", "db")))
    assert services_of(merger) is None  # db listed but not yet received (lost retained)
    assert state_of(merger) is ClusterState.SYNCING
    feed(merger, peer.service(db))
    assert services_of(merger) == {("shop", "web"): web(), ("shop", "db"): db}
    assert state_of(merger) is ClusterState.FRESH


def test_an_empty_cluster_is_loaded_as_empty_not_left_unknown() -> None:
    merger, peer = make_merger(), Peer()
    feed(merger, peer.status(), peer.manifest())
    assert services_of(merger) == {}
    assert merger.registry.is_loaded is False  # west has not been heard yet


def test_a_newer_manifest_removes_a_service_but_an_empty_retained_payload_does_not() -> None:
    merger, peer = make_merger(), Peer()
    feed(merger, peer.status(), peer.service(web()), peer.service(web(name="db")),
         peer.manifest(("shop", "web"), ("shop", "db")))
    feed(merger, (TOPICS.service("east", ("shop", "web")), b""))
    assert set(services_of(merger) or {}) == {("shop", "web"), ("shop", "db")}
    assert merger.counts["cleared"] == 1
    feed(merger, peer.manifest(("shop", "db")))
    assert set(services_of(merger) or {}) == {("shop", "db")}


def test_one_changed_service_updates_only_that_service() -> None:
    merger, peer = make_merger(), Peer()
    feed(merger, peer.status(), peer.service(web()), peer.service(web(name="db")),
         peer.manifest(("shop", "web"), ("shop", "db")))
    merger.registry.take_dirty()
    feed(merger, peer.service(web("10.1.0.2")))
    assert merger.registry.take_dirty() == [("shop", "web")]
    assert (services_of(merger) or {})[("shop", "web")] == web("10.1.0.2")


def test_duplicates_are_ignored_and_older_generations_rejected() -> None:
    merger, peer = make_merger(), Peer()
    old = peer.service(web("10.1.0.1"))
    new = peer.service(web("10.1.0.2"))
    feed(merger, peer.status(), new, peer.manifest(("shop", "web")))
    feed(merger, new, new)
    feed(merger, old)
    assert merger.counts["duplicates"] == 2
    assert merger.rejected == {Reason.OLD_GENERATION: 1}
    assert (services_of(merger) or {})[("shop", "web")] == web("10.1.0.2")


def test_a_leftover_service_missing_from_a_newer_manifest_is_not_resurrected() -> None:
    merger, peer = make_merger(), Peer()
    leftover = peer.service(web(name="gone"))
    feed(merger, peer.status(), peer.service(web()), peer.manifest(("shop", "web")))
    feed(merger, leftover, retained=True)  # its clear was lost: the manifest is newer
    assert set(services_of(merger) or {}) == {("shop", "web")}
    assert merger.rejected == {Reason.OLD_GENERATION: 1}


def test_a_service_newer_than_the_manifest_is_an_addition_on_its_way() -> None:
    merger, peer = make_merger(), Peer()
    feed(merger, peer.status(), peer.service(web()), peer.manifest(("shop", "web")))
    feed(merger, peer.service(web(name="api")))
    assert set(services_of(merger) or {}) == {("shop", "web"), ("shop", "api")}


# --- one rejected service does not hold its cluster back (issue #12) ----------------

PRIVATE = ("10.0.0.0/8",)
"""A narrowed allow list: public load-balancer addresses are refused."""
CHECKOUT: ServiceKey = ("shop", "checkout")


def checkout(lb: str = "203.0.113.20") -> Service:
    return Service("shop", "checkout", ServiceType.LOAD_BALANCER, cluster_ips=("10.96.0.20",),
                   load_balancer_ips=(lb,), ports=(Port("https", 443),),
                   endpoints=(Endpoint("10.1.0.20"),))


def test_a_service_rejected_for_its_address_does_not_keep_its_cluster_from_loading() -> None:
    merger, peer = make_merger("east", allowed=PRIVATE), Peer()
    feed(merger, peer.status(), peer.service(web()), peer.service(checkout()),
         peer.manifest(("shop", "web"), CHECKOUT))
    assert services_of(merger) == {("shop", "web"): web()}  # loaded, checkout absent
    assert state_of(merger) is ClusterState.FRESH
    assert merger.rejected == {Reason.ADDRESS: 1}
    east = merger.peers["east"]
    assert east.complete and east.rejected[CHECKOUT].reason is Reason.ADDRESS
    assert merger.gaps(TOPICS) == []


def test_the_rejection_counts_even_when_the_manifest_arrives_first() -> None:
    merger, peer = make_merger("east", allowed=PRIVATE), Peer()
    feed(merger, peer.status(), peer.manifest(("shop", "web"), CHECKOUT))
    assert merger.gaps(TOPICS) == [TOPICS.service("east", CHECKOUT),
                                   TOPICS.service("east", ("shop", "web"))]
    feed(merger, peer.service(checkout(), gen=peer.gen), peer.service(web(), gen=peer.gen))
    assert services_of(merger) == {("shop", "web"): web()}


def test_a_rejected_update_keeps_the_last_good_version_of_the_service() -> None:
    merger, peer = make_merger("east", allowed=PRIVATE), Peer()
    good = checkout("10.200.0.20")
    feed(merger, peer.status(), peer.service(web()), peer.service(good),
         peer.manifest(("shop", "web"), CHECKOUT))
    feed(merger, peer.service(checkout("203.0.113.20")))
    assert (services_of(merger) or {})[CHECKOUT] == good  # last good data still answers
    assert merger.peers["east"].rejected[CHECKOUT].reason is Reason.ADDRESS
    assert merger.gaps(TOPICS) == []
    # A newer manifest that still lists it changes nothing about that.
    feed(merger, peer.service(web(name="api")),
         peer.manifest(("shop", "web"), ("shop", "api"), CHECKOUT))
    assert (services_of(merger) or {})[CHECKOUT] == good
    assert set(services_of(merger) or {}) == {("shop", "web"), ("shop", "api"), CHECKOUT}


def test_a_later_valid_message_replaces_the_rejection() -> None:
    merger, peer = make_merger("east", allowed=PRIVATE), Peer()
    feed(merger, peer.status(), peer.service(web()), peer.service(checkout()),
         peer.manifest(("shop", "web"), CHECKOUT))
    fixed = checkout("10.200.0.21")
    feed(merger, peer.service(fixed))
    assert (services_of(merger) or {})[CHECKOUT] == fixed
    assert CHECKOUT not in merger.peers["east"].rejected
    # An older rejected message coming back (a replay, a redelivery) changes nothing.
    feed(merger, peer.service(checkout(), gen=peer.gen - 1))
    assert (services_of(merger) or {})[CHECKOUT] == fixed
    assert CHECKOUT not in merger.peers["east"].rejected


def test_a_rejected_service_dropped_by_a_newer_manifest_is_forgotten_and_asked_for_if_back(
        ) -> None:
    merger, peer = make_merger("east", allowed=PRIVATE), Peer()
    feed(merger, peer.status(), peer.service(web()), peer.service(checkout()),
         peer.manifest(("shop", "web"), CHECKOUT))
    feed(merger, peer.manifest(("shop", "web")))
    assert merger.peers["east"].rejected == {}
    feed(merger, peer.manifest(("shop", "web"), CHECKOUT))  # listed anew, its message lost
    assert merger.gaps(TOPICS) == [TOPICS.service("east", CHECKOUT)]
    assert state_of(merger) is ClusterState.FRESH  # loaded: a change on its way, not unknown


@pytest.mark.parametrize("garbage", [
    b"x" * 300_000,  # oversized
    b"hello",  # no bus header
    b"fd1 k9 j AAAA\n{}",  # unknown key
    b"fd1 k1 j AAAA\n{}",  # bad MAC
])
def test_a_forged_message_on_a_listed_service_topic_stops_the_asking_but_replaces_nothing(
        garbage: bytes) -> None:
    merger, peer = make_merger("east"), Peer()
    db = web("10.1.0.9", name="db")
    feed(merger, peer.status(), peer.service(web()), peer.manifest(("shop", "web"), ("shop", "db")))
    assert merger.gaps(TOPICS) == [TOPICS.service("east", ("shop", "db"))]
    feed(merger, (TOPICS.service("east", ("shop", "db")), garbage))
    assert services_of(merger) == {("shop", "web"): web()}  # complete, db absent
    assert merger.gaps(TOPICS) == []
    feed(merger, (TOPICS.service("east", ("shop", "web")), garbage))
    assert services_of(merger) == {("shop", "web"): web()}  # the good data stays
    feed(merger, peer.service(db))
    assert services_of(merger) == {("shop", "web"): web(), ("shop", "db"): db}
    assert set(merger.peers["east"].rejected) == {("shop", "web")}


def test_forged_messages_on_unlisted_topics_are_counted_but_not_remembered() -> None:
    merger, peer = make_merger("east"), Peer()
    feed(merger, peer.status(), peer.manifest(("shop", "web")))
    for i in range(100):
        feed(merger, (TOPICS.service("east", ("shop", f"junk-{i}")), b"hello"),
             (TOPICS.service(f"nowhere-{i}", ("shop", "web")), b"hello"))
    assert merger.rejected == {Reason.MALFORMED: 200}
    assert merger.peers["east"].rejected == {} and set(merger.peers) == {"east"}


def test_echoes_of_own_messages_are_never_rejected_by_the_local_address_policy() -> None:
    merger = make_merger("east", allowed=PRIVATE)
    me = Peer(instance="me-1234")
    feed(merger, me.service(checkout()))
    assert merger.rejected == {} and merger.counts["own"] == 1


def test_a_silent_peer_turns_stale_not_absent_and_its_next_heartbeat_revives_it() -> None:
    merger, peer = make_merger(), Peer()
    feed(merger, peer.status(), peer.service(web()), peer.manifest(("shop", "web")))
    merger.tick(now=NOW + 90)
    assert merger.registry.clusters["east"].state is ClusterState.FRESH
    merger.tick(now=NOW + 91)
    entry = merger.registry.clusters["east"]
    assert entry.state is ClusterState.STALE and "no heartbeat" in (entry.error or "")
    assert services_of(merger) == {("shop", "web"): web()}
    feed(merger, peer.status(), now=NOW + 95)
    assert merger.registry.clusters["east"].state is ClusterState.FRESH


def test_a_quiet_peers_heartbeats_are_its_freshness_not_its_last_data_change() -> None:
    merger, peer = make_merger(), Peer()
    feed(merger, peer.status(), peer.service(web()), peer.manifest(("shop", "web")))
    feed(merger, peer.status(), now=NOW + 60)  # no data change: only a heartbeat
    assert merger.registry.clusters["east"].last_fresh == NOW + 60


def test_freshness_follows_the_local_clock_not_the_senders() -> None:
    merger, peer = make_merger(), Peer()
    # The peer's clock runs 200 s ahead (inside the window): it changes nothing here.
    feed(merger, peer.status(ts=WALL + 200), peer.manifest())
    merger.tick(now=NOW + 89)
    assert merger.registry.clusters["east"].state is ClusterState.FRESH


def test_a_peer_reporting_its_own_source_stale_is_stale_here_too() -> None:
    merger, peer = make_merger(), Peer()
    feed(merger, peer.status(state=ClusterState.STALE), peer.manifest())
    assert merger.registry.clusters["east"].state is ClusterState.STALE


def test_a_last_will_marks_every_cluster_of_its_session_stale_even_when_signed_long_ago() -> None:
    merger = make_merger("east", "east2")
    east, east2 = Peer("east"), Peer("east2")
    will = east.status(online=False, session=50, gen=50, ts=WALL - 3600,
                       clusters=("east", "east2"))
    feed(merger, east.status(), east.manifest(), east2.status(), east2.manifest())
    feed(merger, will, wall=WALL + 10)
    assert merger.registry.clusters["east"].state is ClusterState.STALE
    assert merger.registry.clusters["east2"].state is ClusterState.STALE
    assert merger.registry.clusters["east"].snapshot is not None
    feed(merger, east2.status())  # a late heartbeat of the ended session
    assert state_of(merger, "east2") is ClusterState.STALE
    assert merger.rejected == {Reason.OLD_GENERATION: 1}
    feed(merger, east2.status(session=60))  # the instance is back with a new session
    assert state_of(merger, "east2") is ClusterState.FRESH


def test_a_replayed_will_of_an_earlier_session_does_not_mark_a_live_peer_stale() -> None:
    merger, peer = make_merger(), Peer()
    old_will = peer.status(online=False, session=10, gen=10, ts=WALL - 3600)
    feed(merger, peer.status(), peer.manifest())
    feed(merger, old_will)
    assert merger.registry.clusters["east"].state is ClusterState.FRESH
    assert sum(merger.rejected.values()) == 1


def test_a_clean_shutdown_offline_status_marks_the_peer_stale() -> None:
    merger, peer = make_merger(), Peer()
    feed(merger, peer.status(), peer.manifest())
    feed(merger, peer.status(online=False))
    assert merger.registry.clusters["east"].state is ClusterState.STALE


def test_replicas_publishing_one_cluster_keep_it_fresh_while_any_of_them_is_online() -> None:
    # Two feddns replicas of cluster east, each with its own session; the second one's
    # clock runs 5 s behind, so all its generations are older than the first one's.
    merger = make_merger()
    r1, r2 = Peer(instance="east-r1"), Peer(instance="east-r2")
    r2.gen, r2.session = 1, 40
    feed(merger, r1.status(), r1.manifest(), r2.status())
    assert merger.rejected == {}  # status generations are ordered per session
    assert len(merger.peers["east"].sessions) == 2
    # A rolling restart: r1 shuts down cleanly ...
    feed(merger, r1.status(online=False))
    assert state_of(merger) is ClusterState.FRESH  # r2 still publishes it
    # ... and comes back with a new session while r2 dies without a word.
    feed(merger, r1.status(session=70))
    feed(merger, r2.status(online=False, session=40, gen=2, ts=WALL - 3600))  # r2's will
    assert state_of(merger) is ClusterState.FRESH
    feed(merger, r1.status(online=False, session=70))
    assert state_of(merger) is ClusterState.STALE  # nobody publishes it any more


def test_a_cluster_is_fresh_if_any_live_replica_reports_its_source_fresh() -> None:
    merger = make_merger()
    r1, r2 = Peer(instance="east-r1"), Peer(instance="east-r2")
    r2.session = 60
    feed(merger, r1.status(state=ClusterState.STALE), r1.manifest(),
         r2.status(state=ClusterState.FRESH))
    assert state_of(merger) is ClusterState.FRESH
    merger.tick(now=NOW + 50)
    feed(merger, r1.status(state=ClusterState.STALE), now=NOW + 60)
    merger.tick(now=NOW + 100)  # r2 silent for 100 s > peer_timeout: only r1 counts
    assert state_of(merger) is ClusterState.STALE


def test_messages_from_this_very_instance_are_ignored() -> None:
    merger = make_merger()
    me = Peer(instance="me-1234")
    feed(merger, me.status(), me.manifest())
    assert merger.counts["own"] == 2 and "east" not in merger.peers


def test_an_unknown_cluster_is_rejected_unless_the_config_accepts_them() -> None:
    peer = Peer("north")
    strict = make_merger()
    feed(strict, peer.status(), peer.manifest())
    assert strict.rejected == {Reason.UNKNOWN_CLUSTER: 2}
    assert "north" not in strict.registry.clusters
    lenient = make_merger(accept_unknown=True)
    feed(lenient, peer.status(), peer.manifest())
    assert lenient.registry.clusters["north"].state is ClusterState.FRESH


def test_a_retained_message_may_be_older_than_the_live_window() -> None:
    merger, peer = make_merger(), Peer()
    old_status = peer.status(ts=WALL - 400)
    feed(merger, old_status)
    assert merger.rejected == {Reason.REPLAY: 1}
    feed(merger, old_status, retained=True)
    assert merger.peers["east"].online is True


# --- an own cluster known both directly and through the bus ------------------------


def own_setup() -> tuple[Merger, Peer]:
    registry = Registry.for_clusters(["east"])
    registry.replace(ClusterSnapshot("east", {("shop", "web"): web("10.1.0.1")}), now=NOW)
    return make_merger(own=("east",), registry=registry), Peer(instance="east-replica")


def test_the_bus_never_overwrites_an_own_cluster_whose_source_is_fresh() -> None:
    merger, replica = own_setup()
    feed(merger, replica.status(), replica.service(web("10.1.0.2")),
         replica.manifest(("shop", "web")), now=NOW + 5)
    merger.tick(now=NOW + 6)
    assert services_of(merger) == {("shop", "web"): web("10.1.0.1")}


def test_newer_bus_data_fills_an_own_cluster_whose_source_is_stale_and_keeps_it_stale() -> None:
    merger, replica = own_setup()
    merger.registry.set_state("east", ClusterState.STALE, now=NOW + 1, error="watch lost")
    feed(merger, replica.status(), replica.service(web("10.1.0.2")),
         replica.manifest(("shop", "web")), now=NOW + 5)
    assert services_of(merger) == {("shop", "web"): web("10.1.0.2")}
    assert merger.registry.clusters["east"].state is ClusterState.STALE
    assert merger.is_relayed("east")
    feed(merger, replica.service(web("10.1.0.3")), now=NOW + 6)  # keeps following the bus
    assert services_of(merger) == {("shop", "web"): web("10.1.0.3")}


def test_relayed_data_never_drops_an_own_service_whose_bus_message_was_refused() -> None:
    registry = Registry.for_clusters(["east"])
    registry.replace(ClusterSnapshot.from_services("east", [web(), checkout()]), now=NOW)
    merger = make_merger(own=("east",), registry=registry, allowed=PRIVATE)
    replica = Peer(instance="east-replica")
    merger.registry.set_state("east", ClusterState.STALE, now=NOW + 1, error="watch lost")
    feed(merger, replica.status(), replica.service(web("10.1.0.2")),
         replica.service(checkout()), replica.manifest(("shop", "web"), CHECKOUT),
         now=NOW + 5)
    assert merger.is_relayed("east")
    assert services_of(merger) == {("shop", "web"): web("10.1.0.2"), CHECKOUT: checkout()}
    feed(merger, replica.service(checkout("203.0.113.21")), now=NOW + 6)  # refused again
    assert services_of(merger) == {("shop", "web"): web("10.1.0.2"), CHECKOUT: checkout()}


def test_a_write_by_the_own_source_takes_the_cluster_back_even_in_place() -> None:
    merger, replica = own_setup()
    merger.registry.set_state("east", ClusterState.STALE, now=NOW + 1)
    feed(merger, replica.status(), replica.service(web("10.1.0.2")),
         replica.manifest(("shop", "web")), now=NOW + 5)
    assert merger.is_relayed("east")
    # Still stale, the source delivers one event (put_service edits the mapping in place).
    merger.registry.put_service("east", ("shop", "web"), web("10.1.0.8"), now=NOW + 6)
    assert not merger.is_relayed("east")
    merger.tick(now=NOW + 6.5)
    assert services_of(merger) == {("shop", "web"): web("10.1.0.8")}
    feed(merger, replica.service(web("10.1.0.3")), now=NOW + 7)  # newer than that event
    assert services_of(merger) == {("shop", "web"): web("10.1.0.3")}
    assert merger.registry.clusters["east"].state is ClusterState.STALE


def test_bus_data_older_than_the_own_sources_last_write_is_not_used() -> None:
    merger, replica = own_setup()
    feed(merger, replica.status(), replica.service(web("10.1.0.2")),
         replica.manifest(("shop", "web")), now=NOW - 5)
    merger.registry.set_state("east", ClusterState.STALE, now=NOW + 1)
    merger.tick(now=NOW + 2)
    assert services_of(merger) == {("shop", "web"): web("10.1.0.1")}


def test_the_own_source_wins_again_as_soon_as_it_is_fresh() -> None:
    merger, replica = own_setup()
    merger.registry.set_state("east", ClusterState.STALE, now=NOW + 1)
    feed(merger, replica.status(), replica.service(web("10.1.0.2")),
         replica.manifest(("shop", "web")), now=NOW + 5)
    merger.registry.replace(ClusterSnapshot("east", {("shop", "web"): web("10.1.0.7")}),
                            now=NOW + 7)
    feed(merger, replica.service(web("10.1.0.3")), now=NOW + 8)
    assert services_of(merger) == {("shop", "web"): web("10.1.0.7")}
    assert merger.registry.clusters["east"].state is ClusterState.FRESH
    assert not merger.is_relayed("east")


# --- publishing own data --------------------------------------------------------


def make_publisher(registry: Registry, wall: list[float],
                   relayed: bool = False) -> Publisher:
    return Publisher(registry, make_codec(), own_clusters=("east",), instance="east-me",
                     generations=Generations(lambda: wall[0]), is_relayed=lambda _: relayed)


def test_generations_move_forward_even_when_the_wall_clock_stands_still_or_steps_back() -> None:
    wall = [WALL]
    gens = Generations(lambda: wall[0])
    first, second = gens.next(), gens.next()
    wall[0] -= 60
    third = gens.next()
    assert first == int(WALL * 1000) and second == first + 1 and third == first + 2


def test_one_endpoint_change_publishes_one_service_message_and_nothing_else() -> None:
    registry = Registry.for_clusters(["east"])
    registry.replace(ClusterSnapshot.from_services(
        "east", [web(), web(name="db"), web(name="api")]), now=NOW)
    publisher = make_publisher(registry, [WALL])
    first = publisher.changes(wall_now=WALL)
    assert (len(first.services), len(first.manifests), first.clears) == (3, 2, [])  # + status
    registry.put_service("east", ("shop", "db"), web("10.1.0.5", name="db"), now=NOW)
    second = publisher.changes(wall_now=WALL)
    assert [t for t, _ in second.services] == ["feddns/fed/clusters/east/services/shop/db"]
    assert (second.manifests, second.clears) == ([], [])
    assert len(publisher.changes(wall_now=WALL)) == 0


def test_adding_and_removing_services_publishes_a_manifest_and_clears_the_removed() -> None:
    registry = Registry.for_clusters(["east"])
    registry.replace(ClusterSnapshot.from_services("east", [web(), web(name="db")]), now=NOW)
    publisher = make_publisher(registry, [WALL])
    publisher.changes(wall_now=WALL)
    registry.replace(ClusterSnapshot.from_services("east", [web(), web(name="api")]), now=NOW)
    out = publisher.changes(wall_now=WALL)
    assert [t for t, _ in out.services] == ["feddns/fed/clusters/east/services/shop/api"]
    assert [t for t, _ in out.manifests] == ["feddns/fed/clusters/east/snapshot"]
    assert out.clears == ["feddns/fed/clusters/east/services/shop/db"]


def test_a_syncing_own_cluster_publishes_only_its_status_and_relayed_data_is_not_echoed() -> None:
    registry = Registry.for_clusters(["east"])
    out = make_publisher(registry, [WALL]).changes(wall_now=WALL)
    assert (out.services, [t for t, _ in out.manifests]) == (
        [], ["feddns/fed/clusters/east/status"])
    registry.replace(ClusterSnapshot.from_services("east", [web()]), now=NOW)
    assert make_publisher(registry, [WALL], relayed=True).changes(wall_now=WALL).services == []


def test_warm_start_data_is_not_published_until_the_own_source_has_synced() -> None:
    registry = Registry.for_clusters(["east"])
    registry.restore(ClusterSnapshot.from_services("east", [web("10.1.0.1")]), now=NOW, age=60)
    publisher = make_publisher(registry, [WALL])
    out = publisher.changes(wall_now=WALL)
    assert out.services == [] and publisher.own_state("east") is ClusterState.SYNCING
    registry.replace(ClusterSnapshot.from_services("east", [web("10.1.0.2")]), now=NOW)
    assert len(publisher.changes(wall_now=WALL).services) == 1


def test_what_one_instance_publishes_another_rebuilds_exactly() -> None:
    source = Registry.for_clusters(["east"])
    source.replace(ClusterSnapshot.from_services("east", [web(), web(name="db")]), now=NOW)
    publisher = make_publisher(source, [WALL])
    merger = make_merger()
    publisher.session = 77
    out = publisher.changes(wall_now=WALL)
    feed(merger, *out.services, *out.manifests)
    assert services_of(merger) == dict(source.clusters["east"].snapshot.services)  # type: ignore[union-attr]
    source.put_service("east", ("shop", "db"), None, now=NOW)
    out = publisher.changes(wall_now=WALL + 1)
    feed(merger, *out.services, *out.manifests, *((t, b"") for t in out.clears))
    assert services_of(merger) == {("shop", "web"): web()}
    assert merger.registry.clusters["east"].state is ClusterState.FRESH
    assert isinstance(make_codec().decode(*publisher.statuses(online=False, wall_now=WALL)[0]),
                      StatusMessage)


def test_the_diff_pauses_every_step_services_and_a_change_made_in_a_pause_is_not_lost() -> None:
    registry = Registry.for_clusters(["east"])
    registry.replace(ClusterSnapshot.from_services(
        "east", [web(f"10.1.0.{i + 1}", name=f"s{i:02d}") for i in range(25)]), now=NOW)
    publisher = make_publisher(registry, [WALL])
    steps = publisher.changes_in_steps(wall_now=WALL, step=10)
    next(steps)  # paused after 9 services, before encoding the 10th
    # The source changes a service already diffed and adds one, during the pause.
    registry.put_service("east", ("shop", "s00"), web("10.1.9.9", name="s00"), now=NOW)
    registry.put_service("east", ("shop", "new"), web("10.1.9.8", name="new"), now=NOW)
    next(steps)  # after 19
    with pytest.raises(StopIteration) as done:
        next(steps)
    first = done.value.value
    assert len(first.services) == 25  # the copy taken at the start, no more, no less
    merger = make_merger()
    feed(merger, *first.services, *first.manifests)
    second = publisher.changes(wall_now=WALL + 1)  # the registry moved on: diff again
    assert sorted(t.rsplit("/", 1)[1] for t, _ in second.services) == ["new", "s00"]
    feed(merger, *second.services, *second.manifests)
    assert services_of(merger) == dict(registry.clusters["east"].snapshot.services)  # type: ignore[union-attr]
    assert len(publisher.changes(wall_now=WALL + 2)) == 0
