"""Warm start at 200,000 endpoints: time from process start to correct answers, sources dead.

A first feddns serves a generated federation (10 clusters x 2,000 services x 10
endpoints) from static data and writes its snapshot; then feddns is restarted
with every source unreachable (API servers refusing connections) and a UDP client polls
every 5 ms until the answer is right. Prints ``warm-start-seconds`` (median of
``--runs``; goal under 1 s) and the snapshot size.

    .venv/bin/python -m bench.warm_start [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query

from bench import dataset
from bench.harness import REPO, figure, median, stop_process, taskset
from feddns.sources import snapshot
from tests.ports import free_port

PROBE = "svc-1.ns-1.svc.clusterset.local"


def answers(port: int) -> bool:
    """True when the probe name answers with all ten clusters' addresses."""
    try:
        reply = dns.query.udp(dns.message.make_query(PROBE, "A"), "127.0.0.1", port=port,
                              timeout=0.05)
    except Exception:
        return False
    return sum(len(r) for r in reply.answer) == 10


def run_once(config: Path, port: int, *,
             timeout: float = 60.0) -> tuple[float, subprocess.Popen[bytes]]:
    """Start feddns; return the seconds until the probe answers, and the process."""
    started = time.monotonic()
    proc = subprocess.Popen([*taskset(1), sys.executable, "-m", "feddns", "serve", "-c",
                             str(config), "--listen", f"127.0.0.1:{port}",
                             "--log-level", "warning"], cwd=REPO)
    deadline = started + timeout
    while time.monotonic() < deadline:
        if answers(port):
            return time.monotonic() - started, proc
        time.sleep(0.005)
    proc.kill()
    raise RuntimeError("feddns did not answer in time")


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--keep", help="write into this folder and keep it (debugging)")
    args = parser.parse_args()
    shape = dataset.Shape(clusters=10, services=args.services, endpoints=10)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        paths = dataset.write(folder, shape, query_count=10)
        snap = folder / "snapshot"
        cfg = json.loads(paths["config"].read_text())
        cfg["snapshot"] = {"path": str(snap), "interval": 0.5}
        live = folder / "live.yaml"
        live.write_text(json.dumps(cfg))
        port = free_port()
        seconds, proc = run_once(live, port, timeout=300)
        print(f"# cold start from static data: {seconds:.2f} s", flush=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until a snapshot holding every cluster exists
            try:
                if len(snapshot.decode(snap.read_bytes())[2]) == shape.clusters:
                    break
            except (OSError, snapshot.SnapshotError):
                pass
            time.sleep(0.2)
        stop_process(proc)
        for c in cfg["clusters"]:
            # Every source unreachable (a missing data file would be a config error).
            c["source"] = dataset.unreachable_source(folder, c["name"])
        dead = folder / "dead.yaml"
        dead.write_text(json.dumps(cfg))
        times = []
        for i in range(args.runs):
            seconds, proc = run_once(dead, port)
            stop_process(proc)
            print(f"# warm start {i + 1}: {seconds:.3f} s", flush=True)
            times.append(seconds)
        figure("warm-start-endpoints", shape.clusters * shape.services * shape.endpoints)
        figure("snapshot-mib", snap.stat().st_size / 2**20)
        figure("warm-start-seconds", median(times))


if __name__ == "__main__":
    main()
