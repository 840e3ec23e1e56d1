"""The Kubernetes source against fake API servers, asserting on feddns's DNS answers.

Each test runs the real feddns (its real ``kubernetes`` client, unmodified) against
in-repo fake API servers (tests/fakekube) and checks what a DNS client sees.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from feddns.config import load_settings
from feddns.model.registry import ClusterState
from tests.fakekube import FakeCluster, FakeFederation, make_endpointslice, make_service
from tests.support import ServerThread, ask, make_query, records, wait_until

pytest_plugins = ["tests.fakekube.fixtures"]

NAME = "web.shop.svc.clusterset.local"


def a_records(port: int, name: str = NAME) -> list[str] | str:
    """The A addresses answered (sorted), or the rcode text when not NOERROR."""
    reply = ask(port, make_query(name, "A"))
    if reply.rcode() != 0:
        import dns.rcode

        return dns.rcode.to_text(reply.rcode())
    return sorted(line.split()[-1] for line in records(reply))


def web(cluster: FakeCluster, ips: list[str], *, ready: bool = True, cluster_ip: str) -> None:
    """Publish shop/web with one slice holding ``ips``."""
    cluster.apply_service(make_service("shop", "web", cluster_ips=[cluster_ip],
                                       ports=[{"name": "http", "port": 80}]))
    cluster.apply_endpointslice(make_endpointslice(
        "shop", "web-abc", "web",
        endpoints=[{"addresses": [ip], "conditions": {"ready": ready}} for ip in ips],
        ports=[{"name": "http", "port": 8080}]))


def config_for(tmp: Path, fed: FakeFederation, **source: Any) -> Path:
    """A feddns config with one kubernetes-sourced cluster per fake cluster."""
    kubeconfig = fed.write_kubeconfig(tmp / "kubeconfig")
    cfg = {
        "dns": {"listen": ["127.0.0.1:0"]},
        # These tests are about the source, not about failover: a lost cluster keeps
        # counting as fresh (long hold-down), so its kept data stays in the answers.
        "selection": {"hold_down": 3600, "readmit_after": 0},
        "clusters": [
            {
                "name": c.name,
                "region": "r1",
                "zones": ["z1"],
                "source": {"type": "kubernetes", "kubeconfig": str(kubeconfig),
                           "context": c.name, "read_timeout": 1.0, "backoff_max": 0.5,
                           **source},
            }
            for c in fed
        ],
    }
    path = tmp / "feddns.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def federation(fake_federation_factory: Callable[..., FakeFederation]) -> FakeFederation:
    fed = fake_federation_factory(("east", "west.prod"))
    web(fed["east"], ["10.1.0.1"], cluster_ip="10.96.0.1")
    web(fed["west.prod"], ["10.2.0.1"], cluster_ip="10.96.0.2")
    return fed


@pytest.fixture
def feddns(tmp_path: Path, federation: FakeFederation) -> Iterator[ServerThread]:
    server = ServerThread(load_settings(config_for(tmp_path, federation)))
    with server:
        yield server


def state(server: ServerThread, cluster: str) -> ClusterState:
    assert server.app is not None
    return server.call(lambda: server.app.registry.clusters[cluster].state)  # type: ignore[union-attr]


def test_initial_sync_answers_every_clusters_service_address(feddns: ServerThread) -> None:
    assert a_records(feddns.port) == ["10.96.0.1", "10.96.0.2"]


def test_endpoint_ready_changes_and_removal_reach_dns(feddns: ServerThread,
                                                      federation: FakeFederation) -> None:
    east = federation["east"]
    web(east, ["10.1.0.1"], ready=False, cluster_ip="10.96.0.1")
    wait_until(lambda: a_records(feddns.port) == ["10.96.0.2"])
    web(east, ["10.1.0.1", "10.1.0.2"], cluster_ip="10.96.0.1")
    wait_until(lambda: a_records(feddns.port) == ["10.96.0.1", "10.96.0.2"])
    east.delete_endpointslice("shop", "web-abc")
    wait_until(lambda: a_records(feddns.port) == ["10.96.0.2"])


def test_headless_endpoints_are_merged_across_slices_without_duplicates(
        feddns: ServerThread, federation: FakeFederation) -> None:
    east = federation["east"]
    east.apply_service(make_service("data", "db", headless=True,
                                    ports=[{"name": "pg", "port": 5432}]))
    for slice_name, ips in (("db-1", ["10.1.1.1", "10.1.1.2"]), ("db-2", ["10.1.1.2", "10.1.1.3"])):
        east.apply_endpointslice(make_endpointslice(
            "data", slice_name, "db", endpoints=[{"addresses": [ip]} for ip in ips],
            ports=[{"name": "pg", "port": 5432}]))
    wait_until(lambda: a_records(feddns.port, "db.data.svc.clusterset.local")
               == ["10.1.1.1", "10.1.1.2", "10.1.1.3"])


def test_service_deleted_while_the_watch_was_down_vanishes_after_the_410_relist(
        feddns: ServerThread, federation: FakeFederation) -> None:
    east = federation["east"]
    east.apply_service(make_service("shop", "old", cluster_ips=["10.96.9.9"]))
    east.apply_endpointslice(make_endpointslice("shop", "old-1", "old",
                                                endpoints=[{"addresses": ["10.1.9.9"]}]))
    wait_until(lambda: a_records(feddns.port, "old.shop.svc.clusterset.local") == ["10.96.9.9"])
    lists_before = east.list_requests["services"]
    east.refuse()
    wait_until(lambda: state(feddns, "east") is ClusterState.STALE)
    east.delete_service("shop", "old")
    east.expire_history()
    east.accept()
    wait_until(lambda: east.list_requests["services"] > lists_before)
    wait_until(lambda: a_records(feddns.port, "old.shop.svc.clusterset.local") == "NXDOMAIN")
    assert state(feddns, "east") is ClusterState.FRESH


def test_silent_partition_is_detected_within_the_timeout_and_recovers(
        feddns: ServerThread, federation: FakeFederation) -> None:
    east = federation["east"]
    east.partition()
    # read_timeout is 1 s: the idle stream times out, then the reconnection does.
    wait_until(lambda: state(feddns, "east") is ClusterState.STALE, timeout=5)
    assert a_records(feddns.port) == ["10.96.0.1", "10.96.0.2"], "stale data is kept"
    east.heal()
    wait_until(lambda: state(feddns, "east") is ClusterState.FRESH, timeout=10)
    web(east, ["10.1.0.1"], cluster_ip="10.96.0.3")
    wait_until(lambda: a_records(feddns.port) == ["10.96.0.2", "10.96.0.3"])


def test_mid_stream_disconnect_resumes_without_relist_and_loses_nothing(
        feddns: ServerThread, federation: FakeFederation) -> None:
    east = federation["east"]
    lists = east.list_requests["endpointslices"]
    east.drop_watches()
    web(east, ["10.1.0.1"], ready=False, cluster_ip="10.96.0.1")
    wait_until(lambda: a_records(feddns.port) == ["10.96.0.2"])
    web(east, ["10.1.0.7"], cluster_ip="10.96.0.1")
    wait_until(lambda: a_records(feddns.port) == ["10.96.0.1", "10.96.0.2"])
    assert east.list_requests["endpointslices"] == lists, "resumed from the last resourceVersion"


def test_a_kubeconfig_broken_after_start_keeps_the_last_good_credentials_and_says_which_file(
        tmp_path: Path, feddns: ServerThread, federation: FakeFederation,
        caplog: pytest.LogCaptureFixture) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    good = kubeconfig.read_text()
    with caplog.at_level(logging.ERROR):
        kubeconfig.write_text("clusters: [broken\n")  # a botched rotation
        federation["east"].drop_watches()  # the next request re-reads the credentials
        web(federation["east"], ["10.1.0.1"], cluster_ip="10.96.0.7")
        wait_until(lambda: a_records(feddns.port) == ["10.96.0.2", "10.96.0.7"])
        assert state(feddns, "east") is ClusterState.FRESH
        wait_until(lambda: any(str(kubeconfig) in r.getMessage() and "keeping the last good"
                               in r.getMessage() for r in caplog.records))
    kubeconfig.write_text(good)


def test_401_keeps_data_and_a_rotated_token_on_disk_recovers_without_restart(
        tmp_path: Path, fake_federation_factory: Callable[..., FakeFederation]) -> None:
    fed = fake_federation_factory(("east",), token_files=False)
    east = fed["east"]
    web(east, ["10.1.0.1"], cluster_ip="10.96.0.1")
    cfg = config_for(tmp_path, fed)
    with ServerThread(load_settings(cfg)) as server:
        assert a_records(server.port) == ["10.96.0.1"]
        east.rotate_token("rotated-token")
        east.drop_watches()
        wait_until(lambda: state(server, "east") is ClusterState.STALE)
        assert a_records(server.port) == ["10.96.0.1"], "401 never means zero endpoints"
        assert east.auth_failures > 0
        fed.write_kubeconfig(tmp_path / "kubeconfig")  # the new token reaches the disk
        wait_until(lambda: state(server, "east") is ClusterState.FRESH, timeout=10)
        web(east, ["10.1.0.1"], cluster_ip="10.96.0.5")
        wait_until(lambda: a_records(server.port) == ["10.96.0.5"])


def test_403_keeps_the_last_data_and_marks_the_cluster_stale(
        feddns: ServerThread, federation: FakeFederation) -> None:
    east = federation["east"]
    east.forbid("endpointslices")
    east.drop_watches()
    wait_until(lambda: state(feddns, "east") is ClusterState.STALE)
    assert a_records(feddns.port) == ["10.96.0.1", "10.96.0.2"]
    east.allow("endpointslices")
    wait_until(lambda: state(feddns, "east") is ClusterState.FRESH, timeout=10)


def test_an_api_server_down_at_startup_does_not_block_the_other_clusters(
        tmp_path: Path, federation: FakeFederation) -> None:
    federation["west.prod"].refuse()
    server = ServerThread(load_settings(config_for(tmp_path, federation)))
    server.start(wait_loaded=False)  # the server answers while west.prod is unreachable
    try:
        wait_until(lambda: a_records(server.port) == ["10.96.0.1"])
        assert state(server, "west.prod") is ClusterState.SYNCING
        # Unknown names may exist in the cluster not heard from: SERVFAIL, not NXDOMAIN.
        assert a_records(server.port, "nope.shop.svc.clusterset.local") == "SERVFAIL"
        federation["west.prod"].accept()
        wait_until(lambda: a_records(server.port) == ["10.96.0.1", "10.96.0.2"], timeout=10)
        assert a_records(server.port, "nope.shop.svc.clusterset.local") == "NXDOMAIN"
    finally:
        server.stop()


def test_exported_only_serves_services_with_a_serviceexport(
        tmp_path: Path, fake_federation_factory: Callable[..., FakeFederation]) -> None:
    fed = fake_federation_factory(("east",))
    east = fed["east"]
    web(east, ["10.1.0.1"], cluster_ip="10.96.0.1")
    east.apply_service(make_service("shop", "api", cluster_ips=["10.96.0.9"]))
    east.apply_endpointslice(make_endpointslice("shop", "api-1", "api",
                                                endpoints=[{"addresses": ["10.1.0.9"]}]))
    east.apply_serviceexport("shop", "api")
    with ServerThread(load_settings(config_for(tmp_path, fed, exported_only=True))) as server:
        assert a_records(server.port, "api.shop.svc.clusterset.local") == ["10.96.0.9"]
        assert a_records(server.port) == "NXDOMAIN"
        east.apply_serviceexport("shop", "web")
        wait_until(lambda: a_records(server.port) == ["10.96.0.1"])
        east.delete_serviceexport("shop", "api")
        wait_until(lambda: a_records(server.port, "api.shop.svc.clusterset.local") == "NXDOMAIN")


def test_an_http_410_on_a_watch_request_relists_instead_of_marking_the_cluster_lost(
        feddns: ServerThread, federation: FakeFederation) -> None:
    east = federation["east"]
    lists = east.list_requests["services"]
    east.delete_service("shop", "web")  # missed below: the watch is broken first
    east.fail_next(1, status=410, resource="services")
    east.drop_watches("services")
    wait_until(lambda: east.list_requests["services"] > lists)
    wait_until(lambda: a_records(feddns.port) == ["10.96.0.2"])
    assert state(feddns, "east") is ClusterState.FRESH


def test_paged_lists_with_one_odd_slice_load_every_endpoint_through_an_outage_sequence(
        tmp_path: Path, federation: FakeFederation) -> None:
    """45 slices, one of them odd, while another member is down at start.

    The first list reads pages of 20, a re-list after a blip and a 410 pages of 10;
    each time the odd slice's page goes down the lenient path (``"ready": "yes"``
    counts as ready, a null address is skipped) and the others take msgspec's
    structs. Every endpoint is loaded each time, and the member down at start joins
    when it comes back.
    """
    east = federation["east"]
    east.apply_service(make_service("data", "db", headless=True,
                                    ports=[{"name": "pg", "port": 5432}]))
    expected = []
    for s in range(45):
        endpoints: list[dict[str, Any]] = [
            {"addresses": [f"10.3.{s}.{e}"], "zone": "z1", "nodeName": f"n{e}",
             "targetRef": {"kind": "Pod", "name": f"db-{s}-{e}"}} for e in range(1, 3)]
        if s == 30:
            endpoints = [{"addresses": ["10.3.30.1", None], "conditions": {"ready": "yes"}},
                         {"addresses": ["10.3.30.2"], "conditions": {"ready": True}}]
        expected += [f"10.3.{s}.1", f"10.3.{s}.2"]
        east.apply_endpointslice(make_endpointslice("data", f"db-{s}", "db",
                                                    endpoints=endpoints))
    expected.sort()
    federation["west.prod"].refuse()
    server = ServerThread(load_settings(config_for(tmp_path, federation)))

    def east_db() -> list[str]:
        snapshot = server.call(lambda: server.app.registry.clusters["east"].snapshot)  # type: ignore[union-attr]
        service = None if snapshot is None else snapshot.services.get(("data", "db"))
        assert service is None or all(ep.ready for ep in service.endpoints)
        return [] if service is None else sorted(ep.address for ep in service.endpoints)

    server.start(wait_loaded=False)
    try:
        wait_until(lambda: east_db() == expected)
        assert state(server, "west.prod") is ClusterState.SYNCING
        lists_before = east.list_requests["endpointslices"]
        east.refuse()
        wait_until(lambda: state(server, "east") is ClusterState.STALE)
        east.expire_history()
        east.accept()
        wait_until(lambda: east.list_requests["endpointslices"] >= lists_before + 5)
        wait_until(lambda: state(server, "east") is ClusterState.FRESH)
        assert east_db() == expected
        federation["west.prod"].accept()
        wait_until(lambda: a_records(server.port) == ["10.96.0.1", "10.96.0.2"], timeout=10)
        assert east_db() == expected
    finally:
        server.stop()
