"""Reloading the config of a running feddns: applied without dropping queries, or rejected.

A real server (in a thread, reloaded with ``App.reload()``) checks what a
valid change does (a new TTL in answers, a removed cluster's addresses gone
and only those, an added cluster's arriving, the query log switched on) and
that an invalid file changes nothing and is logged, while a client keeps
asking throughout and gets every answer. A real ``feddns serve`` subprocess
checks the signal itself: SIGHUP with a valid file, then with a broken one.
Every wait is a bounded poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
import yaml

from feddns.config import load_settings
from tests.ports import free_port
from tests.support import ServerThread, ask, make_query, records, wait_until, write_federation

REPO = Path(__file__).resolve().parents[2]
WEB = "web.shop.svc.clusterset.local."


def svc(ip: str, cluster_ip: str, name: str = "web") -> dict[str, Any]:
    return {"namespace": "shop", "name": name, "cluster_ips": [cluster_ip],
            "ports": [{"name": "http", "port": 80}], "endpoints": [{"address": ip}]}


CLUSTERS = {"east": {"services": [svc("10.1.0.1", "10.96.1.10")]},
            "west": {"services": [svc("10.2.0.1", "10.96.2.10")]}}


def config_data(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def rewrite(path: Path, **changes: Any) -> None:
    data = config_data(path)
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[section] = value
    path.write_text(yaml.safe_dump(data))


def reload(server: ServerThread) -> bool:
    app = server.app
    assert app is not None
    fut = asyncio.run_coroutine_threadsafe(app.reload(), server.loop)
    return bool(fut.result(30))


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    config = write_federation(tmp_path, CLUSTERS)
    server = ServerThread(load_settings(config), config_path=config).start()
    assert server.app is not None
    try:
        yield server, config
    finally:
        server.stop()


def test_a_new_record_ttl_is_in_the_answers_after_a_reload(
        running: tuple[ServerThread, Path]) -> None:
    server, config = running
    assert {r.split()[1] for r in records(ask(server.port, make_query(WEB)))} == {"5"}
    serial = server.app.table.serial  # type: ignore[union-attr]
    rewrite(config, dns__record_ttl=7)
    assert reload(server) is True
    assert records(ask(server.port, make_query(WEB))) == [
        f"{WEB} 7 IN A 10.96.1.10", f"{WEB} 7 IN A 10.96.2.10"]
    assert server.app.table.serial > serial  # type: ignore[union-attr]
    assert server.app.stats.reloads["success"] == 1  # type: ignore[union-attr]


def test_removing_a_cluster_drops_only_its_addresses(
        running: tuple[ServerThread, Path]) -> None:
    server, config = running
    data = config_data(config)
    data["clusters"] = [c for c in data["clusters"] if c["name"] != "west"]
    config.write_text(yaml.safe_dump(data))
    assert reload(server) is True
    assert records(ask(server.port, make_query(WEB))) == [f"{WEB} 5 IN A 10.96.1.10"]
    app = server.app
    assert app is not None
    assert list(app.registry.clusters) == ["east"]
    assert [s.clusters for s in app.supervisor.sources.values()] == [  # type: ignore[union-attr]
        ["east"]]


def test_an_added_cluster_answers_once_its_source_delivered(
        running: tuple[ServerThread, Path], tmp_path: Path) -> None:
    server, config = running
    north = tmp_path / "north.yaml"
    north.write_text(yaml.safe_dump({"clusters": {"north": {
        "services": [svc("10.3.0.1", "10.96.3.10")]}}}))
    data = config_data(config)
    data["clusters"].append({"name": "north", "region": "region-2", "zones": ["zone-9"],
                             "source": {"type": "static", "file": str(north),
                                        "poll_interval": 0.05}})
    config.write_text(yaml.safe_dump(data))
    assert reload(server) is True
    wait_until(lambda: len(ask(server.port, make_query(WEB)).answer[0]) == 3)
    assert records(ask(server.port, make_query(WEB))) == [
        f"{WEB} 5 IN A 10.96.1.10", f"{WEB} 5 IN A 10.96.2.10", f"{WEB} 5 IN A 10.96.3.10"]


@pytest.mark.parametrize("broken", [
    "dns:\n  record_ttl: seven\n",
    "clusters: [\n",
    "dns: {record_ttl: 7}\nunknown_section: {}\n",
], ids=["bad value", "bad yaml", "unknown key"])
def test_an_invalid_file_is_rejected_logged_and_changes_nothing(
        running: tuple[ServerThread, Path], broken: str,
        caplog: pytest.LogCaptureFixture) -> None:
    server, config = running
    before = records(ask(server.port, make_query(WEB)))
    table = server.app.table  # type: ignore[union-attr]
    config.write_text(broken)
    with caplog.at_level(logging.ERROR, logger="feddns.app"):
        assert reload(server) is False
    assert server.app.table is table  # type: ignore[union-attr]
    assert records(ask(server.port, make_query(WEB))) == before
    (line,) = [r.getMessage() for r in caplog.records if "reload" in r.getMessage()]
    assert line.startswith(f"reload rejected, still serving the previous config: {config}")
    stats = server.app.stats  # type: ignore[union-attr]
    assert (stats.reloads["failure"], stats.last_reload_ok) == (1, False)


def test_a_listen_change_is_logged_as_needing_a_restart(
        running: tuple[ServerThread, Path], caplog: pytest.LogCaptureFixture) -> None:
    server, config = running
    rewrite(config, dns__listen=["127.0.0.1:53"], dns__record_ttl=9)
    with caplog.at_level(logging.WARNING, logger="feddns.app"):
        assert reload(server) is True
    # ServerThread passes --listen, so only the dns.listen of the file changed: ignored.
    assert not any("dns.listen" in r.getMessage() for r in caplog.records)
    rewrite(config, federation="renamed")
    with caplog.at_level(logging.WARNING, logger="feddns.app"):
        assert reload(server) is True
    assert any("federation changed; it takes a restart" in r.getMessage()
               for r in caplog.records)
    assert {r.split()[1] for r in records(ask(server.port, make_query(WEB)))} == {"9"}


def test_a_reload_can_switch_the_query_log_on(
        running: tuple[ServerThread, Path], caplog: pytest.LogCaptureFixture) -> None:
    server, config = running
    rewrite(config, observe__query_log=True)
    with caplog.at_level(logging.INFO, logger="feddns.query"):
        assert reload(server) is True
        ask(server.port, make_query(WEB, "TXT"))
        wait_until(lambda: any(r.name == "feddns.query" for r in caplog.records))
    assert [r.getMessage().split()[-3:] for r in caplog.records
            if r.name == "feddns.query"] == [[WEB, "TXT", "NOERROR"]]


def test_no_query_goes_unanswered_while_a_large_table_is_rebuilt(tmp_path: Path) -> None:
    many = [svc(f"10.1.{i // 250}.{i % 250 + 1}", f"10.96.{i // 250}.{i % 250 + 1}",
                name=f"svc-{i}") for i in range(3000)]
    config = write_federation(tmp_path, {"east": {"services": many}})
    server = ServerThread(load_settings(config), config_path=config).start()
    assert server.app is not None
    answers: list[int] = []
    failures: list[str] = []
    done = threading.Event()

    def client() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2.0)
            i = 0
            while not done.is_set():
                q = make_query(f"svc-{i % 3000}.shop.svc.clusterset.local.")
                try:
                    reply = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=2.0,
                                          sock=s)
                except dns.exception.Timeout:
                    failures.append(f"timeout on query {i}")
                else:
                    answers.append(reply.rcode())
                i += 1

    thread = threading.Thread(target=client)
    try:
        thread.start()
        wait_until(lambda: len(answers) > 50)
        rewrite(config, dns__record_ttl=8)
        assert reload(server) is True
        count = len(answers)
        wait_until(lambda: len(answers) > count + 50)
    finally:
        done.set()
        thread.join(10)
        server.stop()
    assert failures == []
    assert set(answers) == {dns.rcode.NOERROR}


# --- the signal, on a real process --------------------------------------------------------



def ttl_of(port: int) -> int | None:
    with contextlib.suppress(OSError, dns.exception.Timeout):
        reply = dns.query.udp(make_query(WEB), "127.0.0.1", port=port, timeout=0.5)
        if reply.answer:
            return int(reply.answer[0].ttl)
    return None


def test_sighup_reloads_a_valid_file_and_keeps_running_on_a_broken_one(tmp_path: Path) -> None:
    config = write_federation(tmp_path, CLUSTERS, extra={"observe": {"listen": None}})
    port = free_port()
    log_file = tmp_path / "feddns.log"
    with log_file.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feddns", "serve", "-c", str(config),
             "--listen", f"127.0.0.1:{port}"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_until(lambda: proc.poll() is None and ttl_of(port) == 5, timeout=15)
        rewrite(config, dns__record_ttl=7)
        os.kill(proc.pid, signal.SIGHUP)
        wait_until(lambda: ttl_of(port) == 7, timeout=10)
        config.write_text("dns:\n  record_ttl: -1\n")
        os.kill(proc.pid, signal.SIGHUP)
        wait_until(lambda: "reload rejected" in log_file.read_text(), timeout=10)
        assert proc.poll() is None
        assert ttl_of(port) == 7
        assert "dns.record_ttl: input should be greater than or equal to 0" in \
            log_file.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0
    text = log_file.read_text()
    assert "reloaded " in text and text.count("reload rejected") == 1
    # One line per event: no per-query lines, and the failed reload is one line.
    assert not any(WEB in line for line in text.splitlines())
