"""``feddns soak`` against the real server: a clean 60 s run with churn, and runs that must fail.

The server runs in-process (``ServerThread``) with its HTTP endpoint on a free
port and a static data file with a ClusterIP service in two clusters, a
LoadBalancer service, a dual-stack headless service with named endpoints,
and a service with nothing ready. The 60-second soak rewrites that file
between rounds (endpoints flipped, added and removed) and must see every
answer agree with ``/debug`` (the slow test: ``-m "not slow"`` skips it, CI
runs it). The soak must also be able to fail: pointed at one server's DNS
and another's ``/debug`` (whose data differ) it reports mismatches and exits
1; ``feddns soak`` on the command line exits 0 on a healthy instance and 2
on an unreachable one.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from feddns.soak import Target, expectations, soak
from tests.support import ServerThread, serve, write_federation

OBSERVE = {"observe": {"listen": "127.0.0.1:0"}}


def web(cluster_ip: str, endpoint: str) -> dict[str, Any]:
    return {"namespace": "shop", "name": "web", "cluster_ips": [cluster_ip],
            "ports": [{"name": "http", "port": 80}],
            "endpoints": [{"address": endpoint, "zone": "zone-1"},
                          {"address": endpoint[:-1] + "9", "ready": False}]}


CLUSTERS: dict[str, Any] = {
    "east": {"services": [
        web("10.96.1.10", "10.1.1.11"),
        {"namespace": "shop", "name": "checkout", "type": "LoadBalancer",
         "cluster_ips": ["10.96.1.20"], "load_balancer_ips": ["203.0.113.20"],
         "ports": [{"name": "https", "port": 443}], "endpoints": [{"address": "10.1.2.11"}]},
        {"namespace": "data", "name": "db", "type": "Headless",
         "ports": [{"name": "pg", "port": 5432}],
         "endpoints": [{"address": "10.1.3.10", "hostname": "db-0"},
                       {"address": "fd00:1::10", "hostname": "db-0"},
                       {"address": "10.1.3.11", "hostname": "db-1"}]},
        {"namespace": "shop", "name": "legacy", "cluster_ips": ["10.96.1.30"],
         "ports": [{"port": 80}], "endpoints": [{"address": "10.1.4.10", "ready": False}]},
    ]},
    "west": {"services": [
        web("10.96.2.10", "10.2.1.11"),
        {"namespace": "data", "name": "db", "type": "Headless",
         "ports": [{"name": "pg", "port": 5432}],
         "endpoints": [{"address": "10.2.3.10", "hostname": "db-0"}]},
    ]},
}
TOPOLOGY = {"east": ("region-1", ["zone-1"]), "west": ("region-2", ["zone-2"])}


@contextlib.contextmanager
def start(tmp: Path, clusters: dict[str, Any]) -> Iterator[ServerThread]:
    config = write_federation(tmp, clusters, topology=TOPOLOGY, extra=OBSERVE)
    with serve(config) as server:
        yield server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with start(tmp_path, CLUSTERS) as running:
        yield running


def url_of(server: ServerThread) -> str:
    assert server.app is not None and server.app.http is not None
    host, port = server.app.http.address  # type: ignore[misc]
    return f"http://{host}:{port}"


def summary(lines: list[str]) -> dict[str, float]:
    out = {}
    for line in lines:
        key, sep, value = line.partition(": ")
        if sep and key.startswith("soak-"):
            out[key] = float(value)
    return out


@pytest.mark.slow
def test_a_sixty_second_soak_with_churn_sees_every_answer_agree_with_the_server(
        server: ServerThread, tmp_path: Path) -> None:
    data = tmp_path / "services.yaml"
    original = data.read_text()
    lines: list[str] = []
    code = soak(Target("127.0.0.1", server.port, url_of(server)), duration=60,
                churn_file=data, out=lines.append,
                # The soak shares the server's process and a busy CI machine: p99 moves
                # by tens of percent from noise alone (70 % seen), so the drift limit here
                # only catches gross slowdowns; long soaks on quiet machines use 20 %.
                rss_growth_percent=10.0, p99_drift_percent=400.0)
    report = "\n".join(lines[-12:])
    figures = summary(lines)
    assert code == 0, report
    assert figures["soak-mismatches"] == 0, report
    assert figures["soak-failures"] == 0, report
    assert figures["soak-rounds"] >= 30, report
    # Every round asked its names over UDP and TCP, and the data really changed.
    assert figures["soak-queries"] >= figures["soak-rounds"] * 8, report
    assert yaml.safe_load(data.read_text()) != yaml.safe_load(original)


def test_a_soak_against_a_server_whose_data_differ_reports_mismatches_and_fails(
        server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> None:
    moved = yaml.safe_load(yaml.safe_dump(CLUSTERS))
    moved["east"]["services"][0]["cluster_ips"] = ["10.96.1.99"]   # web answers elsewhere
    moved["east"]["services"][2]["endpoints"][2]["address"] = "10.1.3.99"  # db-1 moved
    with start(tmp_path_factory.mktemp("other"), moved) as other:
        lines: list[str] = []
        # DNS of one server, /debug of the other: the soak must notice.
        code = soak(Target("127.0.0.1", server.port, url_of(other)), duration=1.0,
                    interval=0.2, out=lines.append)
    text = "\n".join(lines)
    assert code == 1, text
    assert summary(lines)["soak-mismatches"] > 0, text
    assert "mismatch: web.shop.svc.clusterset.local. A" in text
    assert "mismatch: db-1.east.db.data.svc.clusterset.local. A" in text


def test_expectations_follow_the_plan_for_levels_weights_regions_and_the_record_cap(
        server: ServerThread) -> None:
    target = Target("127.0.0.1", server.port, url_of(server))
    listing = target.get_json("/debug?services=1")
    assert listing["services"] == ["data/db", "shop/checkout", "shop/legacy", "shop/web"]
    assert listing["origins"] == [{"name": "clusterset.local.",
                                   "service_address": "load-balancer"}]
    got = {(e.name, e.qtype): (sorted(e.allowed), e.count)
           for key in listing["services"]
           for e in expectations(target.get_json(f"/debug?service={key}"),
                                 "clusterset.local.")}
    assert got == {
        ("web.shop.svc.clusterset.local.", "A"): (["10.96.1.10", "10.96.2.10"], 2),
        ("checkout.shop.svc.clusterset.local.", "A"): (["203.0.113.20"], 1),
        ("db.data.svc.clusterset.local.", "A"): (["10.1.3.10", "10.1.3.11", "10.2.3.10"], 3),
        ("db.data.svc.clusterset.local.", "AAAA"): (["fd00:1::10"], 1),
        ("db-0.east.db.data.svc.clusterset.local.", "A"): (["10.1.3.10"], 1),
        ("db-0.east.db.data.svc.clusterset.local.", "AAAA"): (["fd00:1::10"], 1),
        ("db-1.east.db.data.svc.clusterset.local.", "A"): (["10.1.3.11"], 1),
        ("db-0.west.db.data.svc.clusterset.local.", "A"): (["10.2.3.10"], 1),
    }  # legacy has nothing ready: fail-closed NODATA, nothing to expect


def test_feddns_soak_on_the_command_line_exits_0_on_a_healthy_instance_and_2_when_unreachable(
        server: ServerThread) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "feddns", "soak", *args],
                              capture_output=True, text=True, timeout=60, check=False)

    ok = run("--server", f"127.0.0.1:{server.port}", "--url", url_of(server),
             "--duration", "0.5", "--interval", "0.2", "--max-p99-drift", "1000",
             "--max-rss-growth", "100")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "soak-mismatches: 0" in ok.stdout
    down = run("--server", f"127.0.0.1:{server.port}", "--url", "http://127.0.0.1:9",
               "--duration", "5")
    assert down.returncode == 2, down.stdout + down.stderr
    assert "cannot read the target" in down.stdout
