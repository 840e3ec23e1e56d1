"""Two full feddns instances, one per cluster, federated over a real mosquitto.

Each instance watches only its own fake Kubernetes API server and publishes its
cluster on the bus; each answers for both clusters. Asserted on DNS answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from feddns.config import load_settings
from tests.fakekube import FakeFederation, make_endpointslice, make_service
from tests.mosquitto import Mosquitto
from tests.support import ServerThread, ask, make_query, records, wait_until

pytest_plugins = ["tests.fakekube.fixtures"]

NAME = "web.shop.svc.clusterset.local"


def a_records(port: int, name: str = NAME) -> list[str]:
    return sorted(line.split()[-1] for line in records(ask(port, make_query(name, "A"))))


def publish_web(fed: FakeFederation, cluster: str, cluster_ip: str, ready: bool = True) -> None:
    c = fed[cluster]
    c.apply_service(make_service("shop", "web", cluster_ips=[cluster_ip],
                                 ports=[{"name": "http", "port": 80}]))
    c.apply_endpointslice(make_endpointslice(
        "shop", "web-1", "web",
        endpoints=[{"addresses": [f"10.{cluster_ip.rsplit('.', maxsplit=1)[-1]}.0.1"],
                    "conditions": {"ready": ready}}]))


def instance_config(tmp: Path, fed: FakeFederation, own: str, broker: Mosquitto,
                    key: Path) -> Path:
    kubeconfig = fed.write_kubeconfig(tmp / f"kubeconfig-{own}")
    clusters = []
    for c in fed:
        source: dict[str, Any] = (
            {"type": "kubernetes", "kubeconfig": str(kubeconfig), "context": c.name,
             "read_timeout": 1.0, "backoff_max": 0.5}
            if c.name == own else {"type": "bus"})
        clusters.append({"name": c.name, "region": "r1", "zones": ["z1"], "source": source})
    cfg = {
        "federation": "test",
        "dns": {"listen": ["127.0.0.1:0"]},
        "observe": {"listen": None},
        "selection": {"hold_down": 0, "readmit_after": 0},
        "clusters": clusters,
        "bus": {"broker": "127.0.0.1", "port": broker.port, "topic_prefix": f"t{broker.port}",
                "keys": [{"id": "k1", "secret_file": str(key)}],
                "heartbeat_interval": 0.3, "peer_timeout": 1.0, "republish_interval": 2.0,
                "backoff_max": 0.3, "keepalive": 5, "connect_timeout": 2.0},
    }
    path = tmp / f"feddns-{own}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path



@pytest.fixture
def pair(tmp_path: Path, broker: Mosquitto,
         fake_federation_factory: Callable[..., FakeFederation]
         ) -> Iterator[tuple[FakeFederation, ServerThread, ServerThread]]:
    fed = fake_federation_factory(("east", "west"))
    publish_web(fed, "east", "10.96.0.1")
    publish_web(fed, "west", "10.96.0.2")
    key = tmp_path / "bus-key"
    key.write_text("a-shared-federation-secret-0123456789")
    a = ServerThread(load_settings(instance_config(tmp_path, fed, "east", broker, key)))
    b = ServerThread(load_settings(instance_config(tmp_path, fed, "west", broker, key)))
    a.start(wait_loaded=False)
    b.start(wait_loaded=False)
    try:
        yield fed, a, b
    finally:
        a.stop()
        b.stop()


def test_each_instance_answers_for_both_clusters_through_the_bus(
        pair: tuple[FakeFederation, ServerThread, ServerThread]) -> None:
    _, a, b = pair
    for server in (a, b):
        wait_until(lambda s=server: a_records(s.port) == ["10.96.0.1", "10.96.0.2"],
                   timeout=15)


def test_a_change_in_cluster_a_reaches_instance_b_answers(
        pair: tuple[FakeFederation, ServerThread, ServerThread]) -> None:
    fed, _, b = pair
    wait_until(lambda: a_records(b.port) == ["10.96.0.1", "10.96.0.2"], timeout=15)
    publish_web(fed, "east", "10.96.0.1", ready=False)
    wait_until(lambda: a_records(b.port) == ["10.96.0.2"], timeout=10)
    publish_web(fed, "east", "10.96.0.9")
    wait_until(lambda: a_records(b.port) == ["10.96.0.2", "10.96.0.9"], timeout=10)


def test_with_the_broker_down_every_instance_keeps_answering_and_local_changes_apply(
        pair: tuple[FakeFederation, ServerThread, ServerThread], broker: Mosquitto) -> None:
    fed, a, b = pair
    for server in (a, b):
        wait_until(lambda s=server: a_records(s.port) == ["10.96.0.1", "10.96.0.2"],
                   timeout=15)
    broker.stop()
    # The peer's data turns stale (silence), the local cluster stays fresh and wins.
    wait_until(lambda: a_records(b.port) == ["10.96.0.2"], timeout=10)
    publish_web(fed, "west", "10.96.0.7")
    wait_until(lambda: a_records(b.port) == ["10.96.0.7"], timeout=10)
    # On A too, the silent peer (stale) leaves the answer to the fresh local cluster.
    assert a_records(a.port) == ["10.96.0.1"]
    broker.restart()
    wait_until(lambda: a_records(a.port) == ["10.96.0.1", "10.96.0.7"], timeout=15)
