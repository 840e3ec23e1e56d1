"""Failover, stale serving and warm start, seen by a DNS client of the running server."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.rcode
import pytest
import yaml

from feddns.config import load_settings
from feddns.model.registry import ClusterState
from tests.fakekube import FakeCluster, FakeFederation, make_endpointslice, make_service
from tests.support import ServerThread, ask, make_query, records, wait_until

pytest_plugins = ["tests.fakekube.fixtures"]

NAME = "web.shop.svc.clusterset.local"


def web(cluster: FakeCluster, ip: str, cluster_ip: str) -> None:
    cluster.apply_service(make_service("shop", "web", cluster_ips=[cluster_ip],
                                       ports=[{"name": "http", "port": 80}]))
    cluster.apply_endpointslice(make_endpointslice(
        "shop", "web-1", "web", endpoints=[{"addresses": [ip]}]))


def config(tmp: Path, fed: FakeFederation, **extra: Any) -> Path:
    kubeconfig = fed.write_kubeconfig(tmp / "kubeconfig")
    cfg: dict[str, Any] = {
        "federation": "test",
        "dns": {"listen": ["127.0.0.1:0"]},
        "clusters": [
            {"name": c.name, "region": "r1", "zones": ["z1"],
             "source": {"type": "kubernetes", "kubeconfig": str(kubeconfig), "context": c.name,
                        "read_timeout": 1.0, "backoff_max": 0.5}}
            for c in fed
        ],
        **extra,
    }
    path = tmp / "feddns.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def answer(port: int, *, edns: bool = False) -> dns.message.Message:
    return ask(port, make_query(NAME, "A", edns=0 if edns else None))


def addresses(port: int) -> list[str]:
    return sorted(line.split()[-1] for line in records(answer(port)))


@pytest.fixture
def federation(fake_federation_factory: Callable[..., FakeFederation]) -> FakeFederation:
    fed = fake_federation_factory(("east", "west"))
    web(fed["east"], "10.1.0.1", "10.96.0.1")
    web(fed["west"], "10.2.0.1", "10.96.0.2")
    return fed


def test_a_lost_clusters_addresses_leave_the_answers_within_hold_down_plus_one_second(
        tmp_path: Path, federation: FakeFederation) -> None:
    hold_down = 1.0
    cfg = config(tmp_path, federation, selection={"hold_down": hold_down, "readmit_after": 0})
    with ServerThread(load_settings(cfg)) as server:
        assert addresses(server.port) == ["10.96.0.1", "10.96.0.2"]
        lost_at = time.monotonic()
        federation["east"].refuse()
        wait_until(lambda: addresses(server.port) == ["10.96.0.2"], timeout=10, interval=0.05)
        elapsed = time.monotonic() - lost_at
        assert elapsed <= hold_down + 5.0, f"failover took {elapsed:.2f} s"
        # Not before the hold-down: a blip shorter than it changes nothing.
        assert elapsed >= hold_down * 0.9


def test_when_every_cluster_is_lost_stale_answers_carry_ttl_30_and_ede_3(
        tmp_path: Path, federation: FakeFederation) -> None:
    cfg = config(tmp_path, federation, selection={"hold_down": 0, "readmit_after": 0})
    with ServerThread(load_settings(cfg)) as server:
        for c in federation:
            c.refuse()

        def all_stale() -> bool:
            assert server.app is not None
            return server.call(lambda: all(
                e.state is ClusterState.STALE for e in server.app.registry.clusters.values()))

        wait_until(all_stale)
        wait_until(lambda: {r.split()[1] for r in records(answer(server.port))} == {"30"})
        reply = answer(server.port, edns=True)
        assert sorted(r.split()[-1] for r in records(reply)) == ["10.96.0.1", "10.96.0.2"]
        assert [o.code for o in reply.options if o.otype == dns.edns.EDE] == [3]
        assert answer(server.port).opt is None, "no EDE without EDNS"


def test_a_restart_with_every_source_unreachable_answers_from_the_snapshot_within_a_second(
        tmp_path: Path, federation: FakeFederation) -> None:
    snap = tmp_path / "state" / "snapshot"
    cfg = config(tmp_path, federation, snapshot={"path": str(snap), "interval": 0.1})
    with ServerThread(load_settings(cfg)) as server:
        assert addresses(server.port) == ["10.96.0.1", "10.96.0.2"]
        wait_until(snap.exists)
    for c in federation:
        c.refuse()
    started = time.monotonic()
    server = ServerThread(load_settings(cfg))
    server.start(wait_loaded=False)
    try:
        wait_until(lambda: addresses(server.port) == ["10.96.0.1", "10.96.0.2"], timeout=10,
                   interval=0.01)
        # Every source is refused: these answers come from the snapshot (the 1 s goal is
        # measured by bench/warm_start.py; a loaded test machine may take longer).
        assert time.monotonic() - started < 10.0
        reply = answer(server.port)
        assert {r.split()[1] for r in records(reply)} == {"30"}, "snapshot data is stale"
        # The snapshot counts as synced for the sync gate: a restart during an outage of
        # every source answers NXDOMAIN for unknown names at once (musl's getaddrinfo
        # fails a whole lookup on SERVFAIL), and the instance is ready.
        missing = ask(server.port, make_query("new.shop.svc.clusterset.local", "A"))
        assert missing.rcode() == dns.rcode.NXDOMAIN
        assert server.call(lambda: server.app is not None and server.app.is_ready)
    finally:
        server.stop()


@pytest.mark.parametrize("content", [b"", b"garbage", b"feddns-snapshot 1 00 5\nabcde",
                                     b"feddns-snapshot 99 00 2\n{}"])
def test_a_corrupt_or_newer_snapshot_is_ignored_with_a_warning_and_the_server_starts(
        tmp_path: Path, federation: FakeFederation, caplog: pytest.LogCaptureFixture,
        content: bytes) -> None:
    snap = tmp_path / "snapshot"
    snap.write_bytes(content)
    cfg = config(tmp_path, federation, snapshot={"path": str(snap)})
    with caplog.at_level(logging.WARNING), ServerThread(load_settings(cfg)) as server:
        assert addresses(server.port) == ["10.96.0.1", "10.96.0.2"]
    assert any("ignoring snapshot" in r.getMessage() for r in caplog.records)
