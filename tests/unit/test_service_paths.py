"""The service data of issue #13 travels every path a service takes, unchanged.

Load-balancer hostnames, ExternalName targets, ``trafficDistribution`` and the
policy's shares, answer mode and capacity-awareness: from the static file, over
the bus (signed, verified), and through the warm-start snapshot, the model
object that comes out equals the one that went in. Older forms still read: a
bus message without the new fields, and a snapshot of format 2.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from typing import Any

import pytest

from feddns.errors import ConfigError
from feddns.model.services import (
    ClusterSnapshot,
    Endpoint,
    Port,
    Service,
    ServicePolicy,
    ServiceType,
)
from feddns.sources import snapshot
from feddns.sources.mqtt.addresses import AddressPolicy
from feddns.sources.mqtt.codec import Codec, Reason, Rejected, ServiceMessage
from feddns.sources.mqtt.keys import KeyRing
from feddns.sources.mqtt.topics import Topics
from feddns.sources.static import parse_static

WALL = 1_800_000_000.0

CHECKOUT = Service(
    "shop", "checkout", ServiceType.LOAD_BALANCER, cluster_ips=("10.96.1.20",),
    load_balancer_hostnames=("a1b2-123.us-east-1.elb.amazonaws.com",),
    ports=(Port("https", 443),), endpoints=(Endpoint("10.1.1.21", zone="z1"),),
    traffic_distribution="PreferClose",
    policy=ServicePolicy(weights=(("east", 2.0),), shares=(("west.prod", 10.0),),
                         answer_mode="subset", capacity_aware=True))
BILLING = Service("shop", "billing", ServiceType.EXTERNAL_NAME,
                  external_name="billing.example.com")
PLAIN = Service("shop", "web", cluster_ips=("10.96.1.10",), ports=(Port("http", 80),),
                endpoints=(Endpoint("10.1.1.11"),))
SERVICES = (CHECKOUT, BILLING, PLAIN)

STATIC = {"clusters": {"east": {"services": [
    {"namespace": "shop", "name": "checkout", "type": "LoadBalancer",
     "cluster_ips": ["10.96.1.20"],
     "load_balancer_hostnames": ["A1B2-123.us-east-1.ELB.amazonaws.com."],
     "ports": [{"name": "https", "port": 443}],
     "endpoints": [{"address": "10.1.1.21", "zone": "z1"}],
     "traffic_distribution": "PreferClose",
     "policy": {"weights": {"east": 2}, "shares": {"west.prod": 10}, "answer_mode": "subset",
                "capacity_aware": True}},
    {"namespace": "shop", "name": "billing", "type": "ExternalName",
     "external_name": "billing.example.com"},
    {"namespace": "shop", "name": "web", "cluster_ips": ["10.96.1.10"],
     "ports": [{"name": "http", "port": 80}], "endpoints": [{"address": "10.1.1.11"}]},
]}}}


def test_the_static_file_gives_the_same_services() -> None:
    snap = parse_static(STATIC, "data.yaml")["east"]
    assert snap.services == {s.key: s for s in SERVICES}


@pytest.mark.parametrize(("service", "problem"), [
    ({"name": "x", "type": "ExternalName"}, "needs external_name"),
    ({"name": "x", "type": "ExternalName", "external_name": "x.example.com",
      "cluster_ips": ["10.96.0.1"]}, "cluster_ips: an ExternalName service has no cluster_ips"),
    ({"name": "x", "type": "ExternalName", "external_name": "x.example.com",
      "endpoints": [{"address": "10.1.0.1"}]}, "an ExternalName service has no endpoints"),
    ({"name": "x", "cluster_ips": ["10.96.0.1"], "external_name": "x.example.com"},
     "only an ExternalName service has an external_name"),
    ({"name": "x", "type": "ExternalName", "external_name": "not a name"},
     "is not a DNS host name"),
    ({"name": "x", "type": "Headless", "load_balancer_hostnames": ["lb.example.com"]},
     "a Headless service has no load-balancer ingress"),
    ({"name": "x", "cluster_ips": ["10.96.0.1"],
      "policy": {"shares": {"a": 60, "b": 50}}}, "shares add up to more than 100 percent"),
])
def test_static_data_of_the_new_kinds_is_checked(service: dict[str, Any], problem: str) -> None:
    raw = {"clusters": {"east": {"services": [{"namespace": "shop", **service}]}}}
    with pytest.raises(ConfigError) as info:
        parse_static(raw, "data.yaml")
    assert any(problem in p for p in info.value.problems), info.value.problems


def _codec() -> Codec:
    return Codec(Topics("feddns", "fed"), KeyRing({"k1": b"secret-0123456789abcdef"},
                                                  signing_id="k1"),
                 AddressPolicy(("0.0.0.0/0", "::/0"), ()), max_payload_size=256 * 1024)


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_a_bus_message_gives_the_same_service(service: Service) -> None:
    codec = _codec()
    topic, payload = codec.service("east", service, instance="east-a", gen=1, ts=WALL)
    msg = codec.decode(topic, payload)
    assert isinstance(msg, ServiceMessage) and msg.service == service


def test_a_service_without_the_new_data_is_sent_without_the_new_keys() -> None:
    codec = _codec()
    _, payload = codec.service("east", PLAIN, instance="east-a", gen=1, ts=WALL)
    body = json.loads(payload.split(b"\n", 1)[1])["service"]
    assert set(body) == {"namespace", "name", "cluster_ips", "ports", "endpoints"}


def test_a_message_of_an_older_peer_without_the_new_keys_still_decodes() -> None:
    codec = _codec()
    topic = codec.topics.service("east", ("shop", "web"))
    body = {"v": 1, "kind": "service", "origin": "east", "instance": "east-a", "gen": 1,
            "ts": WALL, "service": {"namespace": "shop", "name": "web",
                                    "cluster_ips": ["10.96.1.10"],
                                    "ports": [{"name": "http", "port": 80}],
                                    "endpoints": [{"address": "10.1.1.11"}]}}
    msg = codec.decode(topic, codec.seal(topic, body))
    assert isinstance(msg, ServiceMessage) and msg.service == PLAIN


def test_a_bus_message_with_a_bad_hostname_is_refused_as_malformed() -> None:
    codec = _codec()
    topic = codec.topics.service("east", ("shop", "x"))
    body = {"v": 1, "kind": "service", "origin": "east", "instance": "east-a", "gen": 1,
            "ts": WALL, "service": {"namespace": "shop", "name": "x", "type": "LoadBalancer",
                                    "load_balancer_hostnames": ["bad name!"]}}
    with pytest.raises(Rejected) as info:
        codec.decode(topic, codec.seal(topic, body))
    assert info.value.reason is Reason.MALFORMED


def test_the_snapshot_gives_the_same_services() -> None:
    saved = {"east": snapshot.SavedCluster(ClusterSnapshot.from_services("east", SERVICES),
                                           WALL)}
    _, _, clusters = snapshot.decode(snapshot.encode(saved, federation="f", wall=WALL))
    assert clusters["east"].snapshot.services == {s.key: s for s in SERVICES}


def test_a_format_2_snapshot_is_still_read() -> None:
    old = ("shop", "web", "ClusterIP", ("10.96.1.10",), (), (("http", 80, "TCP"),),
           (("10.1.1.11", True, True, False, None, None, None, None),),
           ((("east", 3.0),), None, "servfail"))
    body = pickle.dumps(("f", WALL, (("east", WALL, (old,)),)), protocol=5)
    data = (snapshot.MAGIC + f" 2 {hashlib.sha256(body).hexdigest()} {len(body)}\n".encode()
            + body)
    _, _, clusters = snapshot.decode(data)
    svc = clusters["east"].snapshot.services[("shop", "web")]
    assert svc == Service("shop", "web", cluster_ips=("10.96.1.10",), ports=(Port("http", 80),),
                          endpoints=(Endpoint("10.1.1.11"),),
                          policy=ServicePolicy((("east", 3.0),), None, "servfail"))
