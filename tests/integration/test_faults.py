"""Faults to survive (failure-modes.md §8) that no other test file covers.

Disk full while saving a snapshot, and a wall-clock step: each injected for real
(a tiny tmpfs, a wall clock that jumps) against the running server.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from feddns.config import load_settings
from feddns.sources import snapshot
from tests.support import ServerThread, ask, make_query, records, wait_until, write_federation


def service(i: int) -> dict[str, object]:
    return {"namespace": "shop", "name": f"svc-{i}", "cluster_ips": [f"10.96.{i // 250}.{i % 250}"],
            "ports": [{"name": "http", "port": 80}],
            "endpoints": [{"address": f"10.1.{i // 250}.{i % 250}"}]}


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a real ENOSPC for the snapshot writer."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_keeps_the_last_good_snapshot_and_the_server_answering(
        tmp_path: Path, tiny_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    snap = tiny_disk / "snapshot"
    config = write_federation(tmp_path, {"east": {"services": [service(0)]}},
                              extra={"snapshot": {"path": str(snap), "interval": 0.1}})
    data = tmp_path / "services.yaml"
    with caplog.at_level(logging.ERROR), ServerThread(load_settings(config)) as server:
        wait_until(snap.exists)
        assert len(snapshot.decode(snap.read_bytes())[2]["east"].snapshot.services) == 1
        # Far more data than 64 KiB can hold: every later save hits ENOSPC.
        data.write_text(yaml.safe_dump({"clusters": {"east": {"services": [
            service(i) for i in range(1500)]}}}))
        last = "svc-1499.shop.svc.clusterset.local"
        wait_until(lambda: bool(records(ask(server.port, make_query(last)))), timeout=20)
        wait_until(lambda: any("cannot save the snapshot" in r.getMessage()
                               for r in caplog.records), timeout=10)
        # The last good snapshot is intact (never truncated by the failed saves).
        kept = snapshot.decode(snap.read_bytes())[2]["east"].snapshot.services
        assert len(kept) == 1
        kept_files = {"snapshot", "snapshot.fresh"}  # the snapshot and its freshness file
        assert not [p for p in tiny_disk.iterdir() if p.name not in kept_files], "no temp left"
        assert records(ask(server.port, make_query("svc-0.shop.svc.clusterset.local")))
    errors = [r for r in caplog.records if "cannot save the snapshot" in r.getMessage()]
    assert len(errors) == 1, "logged once per episode, not per attempt"


class SteppedWall:
    """A wall clock an NTP step moves by ``offset`` seconds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.mark.parametrize("step", [2 * 86400.0, -2 * 86400.0])
def test_a_wall_clock_step_changes_neither_freshness_nor_answers_and_serials_never_go_back(
        tmp_path: Path, step: float) -> None:
    config = write_federation(tmp_path, {"east": {"services": [service(0)]}},
                              extra={"freshness": {"max_stale": 60}})
    wall = SteppedWall()
    with ServerThread(load_settings(config), wall=wall) as server:
        assert server.app is not None
        name = "svc-0.shop.svc.clusterset.local"
        before = records(ask(server.port, make_query(name)))
        serial = server.call(lambda: server.app.table.serial)  # type: ignore[union-attr]
        wall.offset = step
        (tmp_path / "services.yaml").write_text(yaml.safe_dump(
            {"clusters": {"east": {"services": [service(0), service(1)]}}}))
        wait_until(lambda: bool(records(ask(server.port, make_query(
            "svc-1.shop.svc.clusterset.local")))))
        assert records(ask(server.port, make_query(name))) == before
        assert server.call(lambda: server.app.table.serial) > serial  # type: ignore[union-attr]
        state = server.call(lambda: server.app.registry.clusters["east"].state.value)  # type: ignore[union-attr]
        assert state == "fresh"
