"""Throughput, CPU per query and latency of feddns against Knot DNS, in the same session.

Generates a federation (bench/dataset.py), serves it with feddns and the equivalent
static zone with Knot DNS (one UDP worker; its threads re-pinned, since knotd pins
itself), each server pinned to CPU 1 and dnsperf to CPU 0, and prints:

* ``feddns-qps``, ``knot-qps``, ``qps-ratio-vs-knot``: median of ``--runs`` dnsperf runs
  of ``--seconds`` each at full load, the same query file, from a client feddns cannot
  place (so both servers give the same answers);
* ``feddns-server-us-per-query``, ``knot-server-us-per-query``, ``cpu-ratio-vs-knot``
  (Knot's CPU microseconds per answered query divided by feddns's);
* ``feddns-qps-located``: the same mix from clients in three zones (per-zone answers);
* ``feddns-lost``, ``knot-lost``: queries lost (median);
* ``p99-latency-ms-at-half-max`` (and p50/p95, for both servers): dnsperf -Q at half
  of feddns's maximum, per-query latencies;
* ``resperf-max-qps-no-loss`` for both, with ``--resperf``;
* with ``--with-page``, the cost of the federation page to the DNS path: ``--runs``
  more pairs of runs on the same feddns process, alternately with no page and with
  ``/ui`` open and updating in Debian's headless Chromium (on CPU 0, with dnsperf; a
  service's decision shown, so every poll of the page runs), and
  ``cpu-ratio-vs-knot-page-open`` / ``-page-closed`` and ``page-cost-percent`` (the
  extra server CPU per query with the page open). On a busy machine that difference
  drowns in noise, so the page's own cost is also measured where noise cannot hide
  it: the server's CPU with no queries, page closed then open (``3 * --seconds``
  each), as ``page-idle-cpu-ms-per-second``; at full load the server is one busy core,
  of which the page takes ``page-share-of-a-core-percent``, hence
  ``cpu-ratio-vs-knot-page-open-derived`` (``cpu-ratio-vs-knot`` times one minus that
  share).

    .venv/bin/python -m bench.perf_vs_knot [--seconds 15] [--runs 3] [--resperf] [--with-page]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import dataset
from bench.harness import (
    REPO,
    PerfResult,
    cpu_seconds,
    figure,
    median,
    run_dnsperf,
    stop_process,
    taskset,
    wait_for_dns,
)
from tests.ports import free_port

PROBE = "svc-1.ns-1.svc.clusterset.local"


@contextlib.contextmanager
def feddns(config: Path, port: int, http: int) -> Iterator[int]:
    """Run feddns on ``config`` pinned to CPU 1 (its page on ``http``); yield its pid."""
    cmd = [*taskset(1), sys.executable, "-m", "feddns", "serve", "-c", str(config),
           "--listen", f"127.0.0.1:{port}", "--observe-listen", f"127.0.0.1:{http}",
           "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=REPO)
    try:
        wait_for_dns(port, PROBE, timeout=120)
        yield proc.pid
    finally:
        stop_process(proc, timeout=15)


@contextlib.contextmanager
def knot(zone: Path, port: int, folder: Path) -> Iterator[int]:
    """Run knotd with one UDP worker, all its threads pinned to CPU 1; yield its pid."""
    exe = shutil.which("knotd") or "/usr/sbin/knotd"
    if not os.path.exists(exe):
        raise RuntimeError("knotd is not installed (Debian package knot; `make bench-deps`)")
    run = folder / "knot"
    run.mkdir(exist_ok=True)
    conf = run / "knot.conf"
    conf.write_text(f"""server:
    rundir: "{run}"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    udp-max-payload: 1232
database:
    storage: "{run}"
template:
  - id: default
    storage: "{run}"
    semantic-checks: off
zone:
  - domain: clusterset.local
    file: "{zone}"
""")
    proc = subprocess.Popen([*taskset(1), exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_dns(port, PROBE, timeout=60)
        if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
            subprocess.run(["taskset", "-a", "-p", "-c", "1", str(proc.pid)],
                           check=True, stdout=subprocess.DEVNULL)
        yield proc.pid
    finally:
        stop_process(proc, timeout=15)


def located_runs(port: int, queries: Path, *, seconds: float, pid: int) -> float:
    """Three dnsperf processes (one per client zone) sharing CPU 0; total QPS."""
    exe = shutil.which("dnsperf") or "dnsperf"
    procs = [
        subprocess.Popen([*taskset(0), exe, "-s", "127.0.0.1", "-p", str(port), "-a",
                          dataset.client_address(c), "-d", str(queries), "-l", str(seconds),
                          "-c", "4", "-q", "40", "-t", "2"],
                         stdout=subprocess.PIPE, text=True)
        for c in range(3)
    ]
    del pid
    total = 0.0
    for p in procs:
        out, _ = p.communicate()
        for line in out.splitlines():
            if "Queries per second:" in line:
                total += float(line.split()[-1])
    return total


def latency_run(port: int, queries: Path, *, qps: float, seconds: float) -> list[float]:
    """Per-query latencies (ms) from ``dnsperf -v`` at a fixed rate."""
    exe = shutil.which("dnsperf") or "dnsperf"
    cmd = [*taskset(0), exe, "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
           "-l", str(seconds), "-c", "10", "-q", "500", "-Q", str(int(qps)), "-t", "2", "-v"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    latencies = []
    for line in out.splitlines():
        # "> NOERROR name type 0.000123"; a lost query's line has no latency.
        if line.startswith(">"):
            try:
                latencies.append(float(line.split()[-1]) * 1000)
            except ValueError:
                continue
    return sorted(latencies)


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile of sorted values."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def resperf_max(port: int, queries: Path, *, max_qps: int, ramp: int = 20) -> float:
    """Resperf's highest rate with no loss (its 'Maximum throughput' line)."""
    exe = shutil.which("resperf") or "resperf"
    with tempfile.TemporaryDirectory() as tmp:
        # resperf uses each query once: repeat the file to cover the whole ramp.
        lines = queries.read_text().splitlines()
        needed = max_qps * ramp // 2 + len(lines)
        data = Path(tmp) / "resperf-queries.txt"
        data.write_text("\n".join(lines * (needed // max(1, len(lines)) + 1)) + "\n")
        # -L 0: stop ramping at the first lost query, so the figure is the highest rate
        # answered without loss.
        cmd = [*taskset(0), exe, "-s", "127.0.0.1", "-p", str(port), "-d", str(data),
               "-m", str(max_qps), "-r", str(ramp), "-L", "0", "-P",
               f"{tmp}/resperf.gnuplot"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in (done.stdout + done.stderr).splitlines():
        if "Maximum throughput" in line:
            return float(line.split(":")[1].split()[0])
    return float("nan")


def measure(name: str, port: int, pid: int, queries: Path, *, seconds: float,
            runs: int) -> list[PerfResult]:
    """Warm up, then ``runs`` full-load dnsperf runs."""
    run_dnsperf(port, queries, seconds=2, server_pid=pid)
    results = []
    for i in range(runs):
        r = run_dnsperf(port, queries, seconds=seconds, server_pid=pid)
        print(f"# {name} run {i + 1}: {r.qps:.0f} qps, lost {r.lost}, "
              f"avg {r.latency_avg_ms:.3f} ms, {r.server_us_per_query or 0:.2f} us/query",
              flush=True)
        results.append(r)
    return results


def idle_cpu_ms_per_second(pid: int, seconds: float) -> float:
    """The server's CPU milliseconds per second over ``seconds`` with no DNS load."""
    before = cpu_seconds(pid)
    started = time.monotonic()
    time.sleep(seconds)  # measuring a rate over wall time, not waiting for an event
    return (cpu_seconds(pid) - before) * 1000 / (time.monotonic() - started)


def open_page(driver: Any, http: int) -> None:
    """The page open and updating, with a service's decision shown (every poll runs)."""
    from bench.ui import MATRIX_SHOWN, poll

    driver.get(f"http://127.0.0.1:{http}/ui")
    poll(driver, MATRIX_SHOWN, timeout=60)
    driver.find_element("id", "decision-service").send_keys("ns-1/svc-1")
    driver.find_element("id", "decision-go").click()
    poll(driver, "return document.getElementById('explain-lines')", timeout=30)


def page_runs(port: int, http: int, pid: int, queries: Path, *, seconds: float,
              runs: int) -> tuple[list[PerfResult], list[PerfResult], float, float]:
    """Alternate full-load runs without and with the page open.

    Returns (closed runs, open runs, idle CPU ms/s with the page closed, with it open).
    """
    from tests import browser

    if (reason := browser.missing()) is not None:
        raise SystemExit(f"--with-page: {reason}")
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})  # Chromium and its driver inherit CPU 0, with dnsperf
    closed, opened = [], []
    with browser.chromium() as driver:
        # What the page costs the server by itself: CPU with no queries, page closed
        # then open (robust to a busy machine, unlike throughput).
        idle_closed = idle_cpu_ms_per_second(pid, 3 * seconds)
        open_page(driver, http)
        idle_open = idle_cpu_ms_per_second(pid, 3 * seconds)
        print(f"# feddns idle: {idle_closed:.2f} ms CPU/s page closed, {idle_open:.2f} page open",
              flush=True)
        for i in range(runs):
            driver.get("about:blank")
            r = run_dnsperf(port, queries, seconds=seconds, server_pid=pid)
            closed.append(r)
            print(f"# feddns page closed {i + 1}: {r.qps:.0f} qps, "
                  f"{r.server_us_per_query or 0:.3f} us/query", flush=True)
            open_page(driver, http)
            r = run_dnsperf(port, queries, seconds=seconds, server_pid=pid)
            opened.append(r)
            print(f"# feddns page open {i + 1}: {r.qps:.0f} qps, "
                  f"{r.server_us_per_query or 0:.3f} us/query", flush=True)
    return closed, opened, idle_closed, idle_open


def main() -> None:
    """Run the comparison and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--resperf", action="store_true")
    parser.add_argument("--skip-knot", action="store_true",
                        help="feddns only (the CI smoke run)")
    parser.add_argument("--with-page", action="store_true",
                        help="also measure with the federation page open and updating")
    args = parser.parse_args()
    shape = dataset.Shape(clusters=args.clusters, services=args.services)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = dataset.write(folder, shape)
        queries = paths["queries"]
        port, http = free_port(), free_port()
        page: tuple[list[PerfResult], list[PerfResult], float, float] | None = None
        with feddns(paths["config"], port, http) as pid:
            fed = measure("feddns", port, pid, queries, seconds=args.seconds, runs=args.runs)
            fed_qps = median([r.qps for r in fed])
            located = located_runs(port, queries, seconds=args.seconds, pid=pid)
            half = fed_qps / 2
            fed_lat = latency_run(port, queries, qps=half, seconds=min(args.seconds, 10))
            fed_resperf = resperf_max(port, queries, max_qps=int(fed_qps * 1.5)) \
                if args.resperf else None
            if args.with_page:
                page = page_runs(port, http, pid, queries, seconds=args.seconds,
                                 runs=args.runs)
            cpu_total = cpu_seconds(pid)
        figure("feddns-qps", fed_qps)
        figure("feddns-lost", int(median([float(r.lost) for r in fed])))
        figure("feddns-server-us-per-query",
               median([r.server_us_per_query or 0.0 for r in fed]))
        figure("feddns-qps-located", located)
        figure("feddns-latency-p50-ms-at-half-max", pct(fed_lat, 50))
        figure("feddns-latency-p95-ms-at-half-max", pct(fed_lat, 95))
        figure("p99-latency-ms-at-half-max", pct(fed_lat, 99))
        if fed_resperf is not None:
            figure("feddns-resperf-max-qps-no-loss", fed_resperf)
        print(f"# feddns process CPU seconds in total: {cpu_total:.1f}")
        closed_us = open_us = None
        if page is not None:
            closed_us = median([r.server_us_per_query or 0.0 for r in page[0]])
            open_us = median([r.server_us_per_query or 0.0 for r in page[1]])
            figure("feddns-server-us-per-query-page-closed", closed_us)
            figure("feddns-server-us-per-query-page-open", open_us)
            figure("feddns-qps-page-closed", median([r.qps for r in page[0]]))
            figure("feddns-qps-page-open", median([r.qps for r in page[1]]))
            figure("page-cost-percent", (open_us / closed_us - 1) * 100)
            # The page's own cost (idle server): at full load the server is one busy core,
            # and the page takes this share of it from the queries.
            page_ms = page[3] - page[2]
            figure("page-idle-cpu-ms-per-second", page_ms)
            figure("page-share-of-a-core-percent", page_ms / 10)
        if args.skip_knot:
            return
        kport = free_port()
        with knot(paths["zone"], kport, folder) as kpid:
            kn = measure("knot", kport, kpid, queries, seconds=args.seconds, runs=args.runs)
            knot_lat = latency_run(kport, queries, qps=half, seconds=min(args.seconds, 10))
            knot_resperf = resperf_max(kport, queries, max_qps=int(fed_qps * 2)) \
                if args.resperf else None
        knot_qps = median([r.qps for r in kn])
        fed_us = median([r.server_us_per_query or 0.0 for r in fed])
        knot_us = median([r.server_us_per_query or 0.0 for r in kn])
        figure("knot-qps", knot_qps)
        figure("knot-lost", int(median([float(r.lost) for r in kn])))
        figure("knot-server-us-per-query", knot_us)
        figure("qps-ratio-vs-knot", fed_qps / knot_qps)
        figure("cpu-ratio-vs-knot", knot_us / fed_us if fed_us else float("nan"))
        if closed_us and open_us and page is not None:
            figure("cpu-ratio-vs-knot-page-closed", knot_us / closed_us)
            figure("cpu-ratio-vs-knot-page-open", knot_us / open_us)
            # The same from the page's idle cost: a saturated core gives the page its share.
            figure("cpu-ratio-vs-knot-page-open-derived",
                   knot_us / fed_us * (1 - (page[3] - page[2]) / 1000))
        figure("knot-latency-p50-ms-at-half-max", pct(knot_lat, 50))
        figure("knot-latency-p95-ms-at-half-max", pct(knot_lat, 95))
        figure("knot-latency-p99-ms-at-half-max", pct(knot_lat, 99))
        if knot_resperf is not None:
            figure("knot-resperf-max-qps-no-loss", knot_resperf)
        print(f"# date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")


if __name__ == "__main__":
    main()
