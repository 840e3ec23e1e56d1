"""The static source: data file validation, conversion to the model, and polling.

Problems in the data file are reported with their key paths like config
problems; conversion applies the EndpointSlice v1 defaults at the door; and
the poller applies good edits, keeps the last good data through a broken
edit (logging it once), and gives a cluster missing from the file an empty
snapshot. Polling tests wait with bounded loops, never bare sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from feddns.errors import ConfigError
from feddns.model.registry import ClusterState, Registry
from feddns.model.services import Endpoint, Port, Protocol, Service, ServiceType
from feddns.sources import static as static_module
from feddns.sources.static import StaticSource, load_static, parse_static
from tests.support import eventually


def one(**service: Any) -> dict[str, Any]:
    """File data with a single service in cluster ``east``."""
    base = {"namespace": "shop", "name": "web", "cluster_ips": ["10.96.0.1"]}
    base.update(service)
    return {"clusters": {"east": {"services": [base]}}}


def problems_of(raw: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_static(raw, "services.yaml")
    assert info.value.source == "services.yaml"
    return info.value.problems


def converted(**service: Any) -> Service:
    return parse_static(one(**service), "f")["east"].services[("shop", "web")]


# --- validation ----------------------------------------------------------------------------

PROBLEMS = [
    (one(cluster_ips=[]), "clusters.east.services[0].cluster_ips: a ClusterIP service needs"),
    ({"clusters": {"east": {"services": [{"namespace": "shop", "name": "web"}]}}},
     "clusters.east.services[0].cluster_ips: a ClusterIP service needs cluster_ips"),
    (one(type="LoadBalancer", cluster_ips=[]),
     "clusters.east.services[0].cluster_ips: a LoadBalancer service needs cluster_ips"),
    (one(type="Headless"),
     "clusters.east.services[0].cluster_ips: a Headless service has no cluster_ips"),
    (one(type="Headless", cluster_ips=[], load_balancer_ips=["192.0.2.1"]),
     "clusters.east.services[0].load_balancer_ips: a Headless service has no"),
    (one(cluster_ips=["10.96.0.300"]), "clusters.east.services[0].cluster_ips[0]: '10.96.0.300'"),
    (one(endpoints=[{"address": "10.1.0.1"}, {"address": "nope"}]),
     "clusters.east.services[0].endpoints[1].address:"),
    (one(endpoints=[{"addresses": ["10.1.0.1", "fd00::zz"]}]),
     "clusters.east.services[0].endpoints[0].addresses[1]:"),
    (one(endpoints=[{"ready": True}]),
     "clusters.east.services[0].endpoints[0]: give 'address' or 'addresses'"),
    (one(endpoints=[{"address": "10.1.0.1", "hostname": "Web_0"}]),
     "clusters.east.services[0].endpoints[0].hostname:"),
    (one(endpoints=[{"address": "10.1.0.1", "redy": True}]),
     "clusters.east.services[0].endpoints[0].redy: unknown key"),
    (one(ports=[{"name": "http", "port": 0}]), "clusters.east.services[0].ports[0].port:"),
    (one(ports=[{"name": "HTTP", "port": 80}]), "clusters.east.services[0].ports[0].name:"),
    (one(ports=[{"port": 80, "protocol": "ICMP"}]),
     "clusters.east.services[0].ports[0].protocol:"),
    (one(type="NodePort"), "clusters.east.services[0].type: input should be"),
    (one(namespace="Shop"), "clusters.east.services[0].namespace:"),
    ({"clusters": {"East": {}}}, "clusters.East: 'East' is not a cluster id"),
    ({"clusters": {"a.b.c": {}}}, "clusters.a.b.c: 'a.b.c' is not a cluster id"),
    ({"clusters": {"east": {"servcies": []}}}, "clusters.east.servcies: unknown key"),
    ({"clusters": {"east": {"services": [one()["clusters"]["east"]["services"][0]] * 2}}},
     "clusters.east.services[1]: shop/web is listed twice"),
    ([1, 2], "(top level): input should be a valid dictionary"),
]


@pytest.mark.parametrize(("raw", "expected"), PROBLEMS, ids=[p[1] for p in PROBLEMS])
def test_each_data_problem_is_reported_with_its_key_path(raw: Any, expected: str) -> None:
    found = problems_of(raw)
    assert any(line.startswith(expected) for line in found), found


def test_duplicate_services_in_two_clusters_are_all_reported_at_once() -> None:
    svc = one()["clusters"]["east"]["services"][0]
    found = problems_of({"clusters": {"east": {"services": [svc, svc]},
                                      "west": {"services": [svc, svc, svc]}}})
    assert found == [
        "clusters.east.services[1]: shop/web is listed twice",
        "clusters.west.services[1]: shop/web is listed twice",
        "clusters.west.services[2]: shop/web is listed twice",
    ]


def test_an_empty_file_has_no_clusters() -> None:
    assert parse_static(None, "f") == {}


def test_a_yaml_data_file_with_a_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("clusters:\n  east: {services: [\n")
    with pytest.raises(ConfigError) as info:
        load_static(path)
    assert info.value.problems[0].startswith("line 3, column 1: invalid YAML")


def test_a_json_data_file_is_read_and_its_errors_reported(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"clusters": {"east": {"services": []}}}')
    assert set(load_static(path)) == {"east"}
    path.write_text('{"clusters": ')
    with pytest.raises(ConfigError) as info:
        load_static(path)
    assert info.value.problems[0].startswith("invalid JSON")
    with pytest.raises(ConfigError) as info:
        load_static(tmp_path / "absent.json")
    assert info.value.problems[0].startswith("cannot read file")


# --- conversion ----------------------------------------------------------------------------


def test_absent_conditions_follow_endpointslice_v1() -> None:
    [ep] = converted(endpoints=[{"address": "10.1.0.1"}]).endpoints
    assert (ep.ready, ep.serving, ep.terminating) == (True, True, False)


@pytest.mark.parametrize(("given", "expected"), [
    ({"ready": False}, (False, True, False)),
    ({"serving": False}, (True, False, False)),
    ({"terminating": True}, (True, True, True)),
    ({"ready": False, "serving": True, "terminating": True}, (False, True, True)),
])
def test_explicit_conditions_are_kept(given: dict[str, bool], expected: tuple[bool, ...]) -> None:
    [ep] = converted(endpoints=[{"address": "10.1.0.1", **given}]).endpoints
    assert (ep.ready, ep.serving, ep.terminating) == expected


def test_a_service_converts_to_the_model_with_canonical_addresses() -> None:
    svc = converted(
        type="LoadBalancer", cluster_ips=["10.96.0.1", "FD00:0::96"],
        load_balancer_ips=["203.0.113.9"],
        ports=[{"name": "http", "port": 80}, {"port": 53, "protocol": "UDP"}],
        endpoints=[{"address": "10.1.0.1", "hostname": "web-0", "zone": "z1", "node": "n1",
                    "target": "pod-0"}],
    )
    assert svc == Service(
        "shop", "web", ServiceType.LOAD_BALANCER, cluster_ips=("10.96.0.1", "fd00::96"),
        load_balancer_ips=("203.0.113.9",),
        ports=(Port("http", 80, Protocol.TCP), Port("", 53, Protocol.UDP)),
        endpoints=(Endpoint("10.1.0.1", hostname="web-0", zone="z1", node="n1",
                            target="pod-0"),),
    )


def test_an_addresses_list_expands_to_one_endpoint_per_address() -> None:
    svc = converted(endpoints=[{"addresses": ["10.1.0.1", "fd00::1"], "hostname": "web-0",
                                "ready": False}])
    assert svc.endpoints == (Endpoint("10.1.0.1", ready=False, hostname="web-0"),
                             Endpoint("fd00::1", ready=False, hostname="web-0"))


def test_duplicate_addresses_are_merged_keeping_the_most_available_condition() -> None:
    svc = converted(endpoints=[
        {"address": "10.1.0.1", "ready": False, "serving": False, "terminating": True},
        {"addresses": ["10.1.0.2", "10.1.0.1"], "ready": False, "serving": True},
        {"address": "10.1.0.1", "zone": "z9"},
        {"address": "10.1.0.2", "ready": False, "serving": False},
        {"address": "fd00:0::1"},
        {"address": "FD00::1", "ready": False},
    ])
    assert svc.endpoints == (
        Endpoint("10.1.0.1", zone="z9"),  # the ready one won, in the first position
        Endpoint("10.1.0.2", ready=False, serving=True),  # serving beats not serving
        Endpoint("fd00::1"),  # same address in another spelling
    )


def test_the_demo_data_loads_for_its_three_clusters() -> None:
    demo = Path(__file__).resolve().parents[2] / "config" / "demo-services.yaml"
    data = load_static(demo)
    assert set(data) == {"east-a", "east-b", "west.prod"}
    assert data["west.prod"].services[("data", "db")].is_headless


# --- polling -------------------------------------------------------------------------------

GOOD = {"clusters": {"east": {"services": [
    {"namespace": "shop", "name": "web", "cluster_ips": ["10.96.0.1"],
     "endpoints": [{"address": "10.1.0.1"}]}]}}}


def web_ips(registry: Registry, cluster: str = "east") -> tuple[str, ...] | None:
    snap = registry.clusters[cluster].snapshot
    if snap is None or ("shop", "web") not in snap.services:
        return None
    return snap.services[("shop", "web")].cluster_ips



def source(path: Path, clusters: list[str], registry: Registry, *,
           poll: float = 0.0) -> StaticSource:
    ticks = iter(range(1, 10_000))
    return StaticSource(path, clusters, registry, poll_interval=poll,
                        clock=lambda: float(next(ticks)))


def east_source(tmp: Path, *, poll: float = 0.0) -> tuple[Path, Registry, StaticSource]:
    """Cluster east's source on a file holding GOOD: (the file, the registry, the source)."""
    path = tmp / "s.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    registry = Registry.for_clusters(["east"])
    return path, registry, source(path, ["east"], registry, poll=poll)


async def test_load_once_applies_the_file_and_skips_an_unchanged_one(tmp_path: Path) -> None:
    _, registry, src = east_source(tmp_path)
    assert await src.load_once() is True
    assert web_ips(registry) == ("10.96.0.1",)
    assert registry.clusters["east"].state is ClusterState.FRESH
    assert registry.clusters["east"].last_sync == 1.0  # from the injected clock
    assert await src.load_once() is False  # same bytes: not even parsed again


async def test_a_cluster_missing_from_the_file_gets_an_empty_snapshot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    registry = Registry.for_clusters(["east", "west"])
    with caplog.at_level(logging.WARNING, logger="feddns.sources.static"):
        assert await source(path, ["east", "west"], registry).load_once()
    snap = registry.clusters["west"].snapshot
    assert snap is not None
    assert dict(snap.services) == {}
    assert registry.is_loaded  # so unknown names can answer NXDOMAIN
    assert any("no data for cluster west" in r.getMessage() for r in caplog.records)


async def test_clusters_in_the_file_but_not_in_the_config_are_ignored(tmp_path: Path) -> None:
    data = {"clusters": {**GOOD["clusters"], "stray": {"services": []}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    registry = Registry.for_clusters(["east"])
    assert await source(path, ["east"], registry).load_once()
    assert set(registry.clusters) == {"east"}


async def test_a_broken_edit_keeps_the_last_good_data_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, registry, src = east_source(tmp_path)
    await src.load_once()
    path.write_text(yaml.safe_dump(one(cluster_ips=[])))
    with caplog.at_level(logging.ERROR, logger="feddns.sources.static"):
        for _ in range(3):
            assert await src.load_once() is False
    assert web_ips(registry) == ("10.96.0.1",)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "clusters.east.services[0].cluster_ips" in errors[0]
    assert "keeping the last good data" in errors[0]


async def test_a_deleted_file_keeps_the_last_good_data(tmp_path: Path) -> None:
    path, registry, src = east_source(tmp_path)
    await src.load_once()
    path.unlink()
    assert await src.load_once() is False
    assert web_ips(registry) == ("10.96.0.1",)


async def test_a_second_identical_breakage_after_a_revert_is_logged_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: reverting to the last good bytes did not end the error episode, so
    # the same mistake made again later was never logged.
    path = tmp_path / "s.yaml"
    good, bad = yaml.safe_dump(GOOD), yaml.safe_dump(one(cluster_ips=[]))
    path.write_text(good)
    registry = Registry.for_clusters(["east"])
    src = source(path, ["east"], registry)
    await src.load_once()
    with caplog.at_level(logging.ERROR, logger="feddns.sources.static"):
        for text in (bad, good, bad):
            path.write_text(text)
            assert await src.load_once() is False
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2


async def test_the_poller_applies_a_fixed_edit_after_a_broken_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    registry = Registry.for_clusters(["east"])
    changes: list[int] = []
    registry.on_change = lambda: changes.append(1)
    src = source(path, ["east"], registry, poll=0.01)
    task = asyncio.create_task(src.run())
    try:
        await eventually(lambda: web_ips(registry) == ("10.96.0.1",))
        with caplog.at_level(logging.ERROR, logger="feddns.sources.static"):
            # Written whole (renamed into place): the poller sees the broken file, not a
            # truncated one on its way (that case is the next test's).
            replace_text(path, "clusters: {east: [\n")  # broken YAML
            await eventually(lambda: any(r.levelno == logging.ERROR for r in caplog.records))
            assert web_ips(registry) == ("10.96.0.1",)
            fixed = one(cluster_ips=["10.96.0.2"])
            replace_text(path, yaml.safe_dump(fixed))
            await eventually(lambda: web_ips(registry) == ("10.96.0.2",))
        assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
        assert changes
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def replace_text(path: Path, text: str) -> None:
    """Write ``path`` whole: to a new name, renamed over it."""
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    os.replace(new, path)


async def test_an_emptied_file_keeps_the_last_good_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A writer that truncates the file before writing it (a shell's `>`, an editor
    # saving in place) shows an empty file for a moment: not "no services".
    path, registry, src = east_source(tmp_path, poll=0.01)
    task = asyncio.create_task(src.run())
    try:
        await eventually(lambda: web_ips(registry) == ("10.96.0.1",))
        with caplog.at_level(logging.ERROR, logger="feddns.sources.static"):
            path.write_text("")
            await eventually(lambda: any("the file is empty" in r.getMessage()
                                         for r in caplog.records))
            assert web_ips(registry) == ("10.96.0.1",)
            path.write_text(yaml.safe_dump(one(cluster_ips=["10.96.0.2"])))
            await eventually(lambda: web_ips(registry) == ("10.96.0.2",))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_an_empty_file_is_an_error_that_says_so(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("\n  \n")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_static(path)


async def test_a_zero_poll_interval_reads_the_file_once_and_returns(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    registry = Registry.for_clusters(["east"])
    await asyncio.wait_for(source(path, ["east"], registry, poll=0).run(), timeout=5)
    assert web_ips(registry) == ("10.96.0.1",)


async def test_a_file_unreadable_from_the_start_is_not_said_to_keep_good_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: the log claimed "keeping the last good data" when there was none.
    registry = Registry.for_clusters(["east"])
    with caplog.at_level(logging.ERROR, logger="feddns.sources.static"):
        assert await source(tmp_path / "absent.yaml", ["east"], registry).load_once() is False
    [message] = [r.getMessage() for r in caplog.records]
    assert "cannot read" in message
    assert "last good data" not in message
    assert "SERVFAIL" in message
    assert registry.clusters["east"].snapshot is None


def test_a_services_policy_block_becomes_its_dns_policy() -> None:
    snaps = parse_static({"clusters": {"east": {"services": [{
        "namespace": "shop", "name": "web", "cluster_ips": ["10.96.0.1"],
        "policy": {"weights": {"east": 90, "west.prod": 10}, "regions": ["us-east"],
                   "none_healthy": "fail-open"},
    }]}}}, "data.yaml")
    policy = snaps["east"].services[("shop", "web")].policy
    assert policy is not None
    assert dict(policy.weights) == {"east": 90.0, "west.prod": 10.0}
    assert policy.regions == ("us-east",)
    assert policy.none_healthy == "fail-open"


def test_a_bad_policy_is_reported_with_its_key_path() -> None:
    with pytest.raises(ConfigError) as err:
        parse_static({"clusters": {"east": {"services": [{
            "namespace": "shop", "name": "web", "cluster_ips": ["10.96.0.1"],
            "policy": {"none_healthy": "sometimes"},
        }]}}}, "data.yaml")
    assert any(p.startswith("clusters.east.services[0].policy.none_healthy:")
               for p in err.value.problems)


class FrozenStat:
    """``os.stat`` results that never change: the stamp alone cannot tell edits apart."""

    def __init__(self, *, mtime: float) -> None:
        self.st_mtime_ns = self.st_ctime_ns = int(mtime * 1e9)
        self.st_size, self.st_ino, self.st_dev = 100, 1, 1


async def test_a_poll_of_a_settled_unchanged_file_only_stats_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Polling used to read and SHA-256 the whole file on the event loop every interval.
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    real_stat = os.stat
    settled = FrozenStat(mtime=time.time() - 60)  # written and changed a minute ago
    monkeypatch.setattr(static_module.os, "stat", lambda p, **kw: settled
                        if Path(p) == path else real_stat(p, **kw))
    registry = Registry.for_clusters(["east"])
    src = source(path, ["east"], registry)
    assert await src.load_once()

    def no_reading(self: Path) -> bytes:
        raise AssertionError(f"{self} read although its stat did not change")

    monkeypatch.setattr(Path, "read_bytes", no_reading)
    fresh = registry.clusters["east"].last_fresh
    assert await src.load_once() is False
    assert registry.clusters["east"].last_fresh > fresh  # still confirmed as healthy


async def test_an_edit_within_one_timestamp_tick_of_the_last_read_is_still_seen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    real_stat = os.stat
    frozen = FrozenStat(mtime=time.time())

    def stat(p: Any, **kwargs: Any) -> Any:
        return frozen if Path(p) == path else real_stat(p, **kwargs)

    monkeypatch.setattr(static_module.os, "stat", stat)
    registry = Registry.for_clusters(["east"])
    src = source(path, ["east"], registry)
    assert await src.load_once()
    path.write_text(yaml.safe_dump(one(cluster_ips=["10.96.0.2"])))
    assert await src.load_once()  # same stamp, but read too soon after it to trust it
    assert web_ips(registry) == ("10.96.0.2",)
    frozen = FrozenStat(mtime=time.time() - 60)
    assert await src.load_once() is False  # read once more: now settled
    path.write_text(yaml.safe_dump(GOOD))
    assert await src.load_once() is False  # a settled, unchanged stamp is trusted
