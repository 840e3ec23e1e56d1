"""UDP and TCP throughput, CPU per query and latency of feddns against Knot DNS, in one run.

Generates a federation (bench/dataset.py), serves it with feddns and the equivalent
static zone with Knot DNS (one UDP and one TCP worker; its threads re-pinned, since
knotd pins itself), both servers up at once and pinned to CPU 1, dnsperf on CPU 0.
Every measurement alternates between the two servers, run by run (feddns, Knot,
feddns, Knot...), so a busy moment on the shared machine hits both alike. It prints:

* UDP at full load (``dnsperf -c 10 -q 100``): ``feddns-qps``, ``knot-qps``,
  ``qps-ratio-vs-knot``, ``feddns-server-us-per-query``, ``knot-server-us-per-query``,
  ``cpu-ratio-vs-knot`` (Knot's CPU microseconds per answered query divided by
  feddns's: dnsperf bounds QPS, CPU per query is the capacity figure);
* TCP over persistent connections, as CoreDNS's ``forward`` and NodeLocal DNSCache
  (``force_tcp``) keep them (``dnsperf -m tcp -c 10 -q 20``): ``feddns-tcp-qps``,
  ``knot-tcp-qps``, ``feddns-tcp-server-us-per-query``,
  ``knot-tcp-server-us-per-query``, ``tcp-cpu-ratio-vs-knot``;
* TCP over short connections of 10 queries each (``-O num-queries-per-conn=10``): a
  10,000-line query file, so each pass through it is 1,000 connections, ``--short-passes``
  passes per run: ``feddns-tcp-short-server-us-per-query``,
  ``knot-tcp-short-server-us-per-query``, ``tcp-short-connections-cpu-ratio-vs-knot``;
* latency at half of feddns's maximum UDP rate (``dnsperf -Q``, per-query latencies
  from ``dnsperf -v``), both servers at the same rate: p50/p95/p99 per server,
  ``p99-latency-ms-at-half-max`` (feddns) and ``p99-ratio-vs-knot-at-half-max``;
* ``loop-lag-max-ms-under-load``: the worst event-loop lag feddns reported
  (``feddns_event_loop_lag_seconds``, the largest lag of the last 10 s, read every
  10 s of each run and at its end) during its full-load runs, UDP and TCP;
* ``feddns-qps-located``: the UDP mix from clients in three zones (per-zone answers);
* ``feddns-lost``, ``knot-lost``: UDP queries lost (median);
* ``resperf-max-qps-no-loss`` for both, with ``--resperf``;
* with ``--with-page``, the cost of the federation page to the DNS path: ``--runs``
  more pairs of UDP runs on the same feddns process, alternately with no page and with
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

Every figure is the median of ``--runs`` runs; each run's values are printed as
``#`` lines. ``--feddns-tree DIR`` runs feddns from another source tree;
``--baseline-tree DIR`` adds a third server, feddns from that tree (named ``before``), to
every alternation of the full-load runs, and prints its figures and ratios too (a
before/after comparison in the same run).

    .venv/bin/python -m bench.perf_vs_knot [--seconds 10] [--runs 3] [--resperf] [--with-page]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
SHORT_QUERIES = 10_000
"""Lines of the short-connection query file: 1,000 connections of 10 queries per pass."""
PER_CONNECTION = 10
LAG_WINDOW = 10.0
"""Seconds of samples ``feddns_event_loop_lag_seconds`` covers (observe.counting)."""


@dataclass
class Server:
    """One server under test."""

    name: str
    port: int
    pid: int
    metrics: str | None = None
    """feddns's /metrics URL (None for Knot)."""


@contextlib.contextmanager
def feddns(config: Path, port: int, *, tree: Path | None = None,
           name: str = "feddns") -> Iterator[Server]:
    """Run feddns on ``config`` pinned to CPU 1 (from ``tree`` if given)."""
    observe = free_port()
    cmd = [*taskset(1), sys.executable, "-m", "feddns", "serve", "-c", str(config),
           "--listen", f"127.0.0.1:{port}", "--observe-listen", f"127.0.0.1:{observe}",
           "--log-level", "warning"]
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    proc = subprocess.Popen(cmd, cwd=tree or REPO, env=env)
    try:
        wait_for_dns(port, PROBE, timeout=120)
        yield Server(name, port, proc.pid, f"http://127.0.0.1:{observe}/metrics")
    finally:
        stop_process(proc, timeout=15)


@contextlib.contextmanager
def knot(zone: Path, port: int, folder: Path) -> Iterator[Server]:
    """Run knotd with one UDP and one TCP worker, all its threads pinned to CPU 1."""
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
        yield Server("knot", port, proc.pid)
    finally:
        stop_process(proc, timeout=15)


def loop_lag(url: str) -> float:
    """``feddns_event_loop_lag_seconds`` from /metrics (the worst lag of the last 10 s)."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(r"^feddns_event_loop_lag_seconds (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


class LagWatch:
    """Reads feddns's loop lag every ``LAG_WINDOW`` s of a run and at its end; keeps the max.

    Each reading covers the 10 s before it, so a run of 10 s or more is covered by
    readings whose windows lie inside it (a shorter run's reading reaches back before
    its start).
    """

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LagWatch:
        if self.url is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        assert self.url is not None
        while not self._stop.wait(LAG_WINDOW):
            self.values.append(loop_lag(self.url))

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(10)
            assert self.url is not None
            self.values.append(loop_lag(self.url))

    @property
    def worst_ms(self) -> float:
        """The largest lag read, in milliseconds (NaN for Knot)."""
        return max(self.values) * 1000 if self.values else float("nan")


def located_runs(port: int, queries: Path, *, seconds: float) -> float:
    """Three dnsperf processes (one per client zone) sharing CPU 0; total QPS."""
    exe = shutil.which("dnsperf") or "dnsperf"
    procs = [
        subprocess.Popen([*taskset(0), exe, "-s", "127.0.0.1", "-p", str(port), "-a",
                          dataset.client_address(c), "-d", str(queries), "-l", str(seconds),
                          "-c", "4", "-q", "40", "-t", "2"],
                         stdout=subprocess.PIPE, text=True)
        for c in range(3)
    ]
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


Measure = Callable[[Server], PerfResult]


def alternate(kind: str, servers: list[Server], runs: int, measure: Measure,
              lags: dict[str, list[float]] | None = None) -> dict[str, list[PerfResult]]:
    """``runs`` rounds of ``measure`` on each server in turn; print each run."""
    results: dict[str, list[PerfResult]] = {s.name: [] for s in servers}
    for i in range(runs):
        for server in servers:
            with LagWatch(server.metrics if lags is not None else None) as watch:
                r = measure(server)
            lag = ""
            if lags is not None and server.metrics is not None:
                lags.setdefault(server.name, []).append(watch.worst_ms)
                lag = f", loop lag max {watch.worst_ms:.2f} ms"
            print(f"# {kind} {server.name} run {i + 1}: {r.qps:.0f} qps, "
                  f"{r.completed} answered, lost {r.lost}, avg {r.latency_avg_ms:.3f} ms, "
                  f"{r.server_us_per_query or 0:.2f} us/query{lag}", flush=True)
            results[server.name].append(r)
    return results


def us(results: list[PerfResult]) -> float:
    """Median server CPU microseconds per answered query."""
    return median([r.server_us_per_query or 0.0 for r in results])


def ratio(knot_us: float, fed_us: float) -> float:
    """Knot's CPU per query over feddns's (1: as cheap as Knot)."""
    return knot_us / fed_us if fed_us else float("nan")


def idle_cpu_ms_per_second(pid: int, seconds: float) -> float:
    """The server's CPU milliseconds per second over ``seconds`` with no DNS load."""
    before = cpu_seconds(pid)
    started = time.monotonic()
    time.sleep(seconds)  # measuring a rate over wall time, not waiting for an event
    return (cpu_seconds(pid) - before) * 1000 / (time.monotonic() - started)


def open_page(driver: Any, http: str) -> None:
    """The page open and updating, with a service's decision shown (every poll runs)."""
    from bench.ui import MATRIX_SHOWN, poll

    driver.get(f"{http}/ui")
    poll(driver, MATRIX_SHOWN, timeout=60)
    driver.find_element("id", "decision-service").send_keys("ns-1/svc-1")
    driver.find_element("id", "decision-go").click()
    poll(driver, "return document.getElementById('explain-lines')", timeout=30)


def page_runs(server: Server, queries: Path, *, seconds: float,
              runs: int) -> tuple[list[PerfResult], list[PerfResult], float, float]:
    """Alternate full-load UDP runs without and with the page open.

    Returns (closed runs, open runs, idle CPU ms/s with the page closed, with it open).
    """
    from tests import browser

    if (reason := browser.missing()) is not None:
        raise SystemExit(f"--with-page: {reason}")
    assert server.metrics is not None
    http = server.metrics.removesuffix("/metrics")
    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if mine is not None and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})  # Chromium and its driver inherit CPU 0, with dnsperf
    closed, opened = [], []
    try:
        with browser.chromium() as driver:
            # What the page costs the server by itself: CPU with no queries, page closed
            # then open (robust to a busy machine, unlike throughput).
            idle_closed = idle_cpu_ms_per_second(server.pid, 3 * seconds)
            open_page(driver, http)
            idle_open = idle_cpu_ms_per_second(server.pid, 3 * seconds)
            print(f"# feddns idle: {idle_closed:.2f} ms CPU/s page closed, "
                  f"{idle_open:.2f} page open", flush=True)
            for i in range(runs):
                driver.get("about:blank")
                r = run_dnsperf(server.port, queries, seconds=seconds, server_pid=server.pid)
                closed.append(r)
                print(f"# feddns page closed {i + 1}: {r.qps:.0f} qps, "
                      f"{r.server_us_per_query or 0:.3f} us/query", flush=True)
                open_page(driver, http)
                r = run_dnsperf(server.port, queries, seconds=seconds, server_pid=server.pid)
                opened.append(r)
                print(f"# feddns page open {i + 1}: {r.qps:.0f} qps, "
                      f"{r.server_us_per_query or 0:.3f} us/query", flush=True)
    finally:
        if mine is not None:
            os.sched_setaffinity(0, mine)
    return closed, opened, idle_closed, idle_open


def main() -> None:
    """Run the comparison and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--short-passes", type=int, default=5,
                        help="passes through the 10,000-line file per short-connection run")
    parser.add_argument("--resperf", action="store_true")
    parser.add_argument("--skip-knot", action="store_true",
                        help="feddns only (the CI smoke run)")
    parser.add_argument("--feddns-tree", type=Path, default=None,
                        help="run feddns from this source tree (a before/after comparison)")
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="also run feddns from this tree as 'before' in the full-load runs")
    parser.add_argument("--with-page", action="store_true",
                        help="also measure with the federation page open and updating")
    args = parser.parse_args()
    shape = dataset.Shape(clusters=args.clusters, services=args.services)
    load = os.getloadavg()
    print(f"# load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{args.runs} runs of {args.seconds:g} s; feddns from "
          f"{args.feddns_tree or REPO}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = dataset.write(folder, shape)
        queries = paths["queries"]
        short = folder / "short-queries.txt"
        short.write_text("\n".join(queries.read_text().splitlines()[:SHORT_QUERIES]) + "\n")
        with contextlib.ExitStack() as stack:
            fed = stack.enter_context(feddns(paths["config"], free_port(),
                                             tree=args.feddns_tree))
            servers = [fed]
            if not args.skip_knot:
                servers.append(stack.enter_context(knot(paths["zone"], free_port(), folder)))
            if args.baseline_tree is not None:
                servers.append(stack.enter_context(feddns(
                    paths["config"], free_port(), tree=args.baseline_tree, name="before")))
            for server in servers:  # warm-up: one pass, every answer compiled and memoized
                run_dnsperf(server.port, queries, seconds=None, passes=1,
                            server_pid=server.pid)
                run_dnsperf(server.port, queries, seconds=1, mode="tcp", clients=10,
                            outstanding=20, server_pid=server.pid)
            lags: dict[str, list[float]] = {}
            udp = alternate("udp", servers, args.runs, lambda s: run_dnsperf(
                s.port, queries, seconds=args.seconds, server_pid=s.pid), lags)
            tcp = alternate("tcp", servers, args.runs, lambda s: run_dnsperf(
                s.port, queries, seconds=args.seconds, mode="tcp", clients=10,
                outstanding=20, server_pid=s.pid), lags)
            short_runs = alternate("tcp-short", servers, args.runs, lambda s: run_dnsperf(
                s.port, short, seconds=None, passes=args.short_passes, mode="tcp",
                clients=10, outstanding=20, server_pid=s.pid,
                extra=["-O", f"num-queries-per-conn={PER_CONNECTION}"]))
            fed_qps = median([r.qps for r in udp["feddns"]])
            half = fed_qps / 2
            latencies: dict[str, list[list[float]]] = {s.name: [] for s in servers}
            for i in range(args.runs):
                for server in servers:
                    if server.name == "before":
                        continue
                    lat = latency_run(server.port, queries, qps=half,
                                      seconds=min(args.seconds, 10))
                    latencies[server.name].append(lat)
                    print(f"# latency at {half:.0f} qps {server.name} run {i + 1}: p50 "
                          f"{pct(lat, 50):.3f} p95 {pct(lat, 95):.3f} p99 {pct(lat, 99):.3f}"
                          f" max {lat[-1] if lat else float('nan'):.3f} ms "
                          f"({len(lat)} answers)", flush=True)
            located = located_runs(fed.port, queries, seconds=args.seconds)
            page = page_runs(fed, queries, seconds=args.seconds, runs=args.runs) \
                if args.with_page else None
            resperf = {s.name: resperf_max(s.port, queries, max_qps=int(fed_qps * 2))
                       for s in servers if s.name != "before"} if args.resperf else {}
            print(f"# feddns process CPU seconds in total: {cpu_seconds(fed.pid):.1f}")
    load = os.getloadavg()
    print(f"# load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    def p(name: str, q: float) -> float:
        return median([pct(lat, q) for lat in latencies[name]])

    figure("feddns-qps", fed_qps)
    figure("feddns-lost", int(median([float(r.lost) for r in udp["feddns"]])))
    figure("feddns-server-us-per-query", us(udp["feddns"]))
    figure("feddns-tcp-qps", median([r.qps for r in tcp["feddns"]]))
    figure("feddns-tcp-server-us-per-query", us(tcp["feddns"]))
    figure("feddns-tcp-short-server-us-per-query", us(short_runs["feddns"]))
    figure("feddns-qps-located", located)
    figure("feddns-latency-p50-ms-at-half-max", p("feddns", 50))
    figure("feddns-latency-p95-ms-at-half-max", p("feddns", 95))
    figure("p99-latency-ms-at-half-max", p("feddns", 99))
    figure("loop-lag-max-ms-under-load", max(lags["feddns"]))
    if "feddns" in resperf:
        figure("feddns-resperf-max-qps-no-loss", resperf["feddns"])
    if page is not None:
        closed_us, open_us = us(page[0]), us(page[1])
        page_ms = page[3] - page[2]
        figure("feddns-server-us-per-query-page-closed", closed_us)
        figure("feddns-server-us-per-query-page-open", open_us)
        figure("feddns-qps-page-closed", median([r.qps for r in page[0]]))
        figure("feddns-qps-page-open", median([r.qps for r in page[1]]))
        figure("page-cost-percent", (open_us / closed_us - 1) * 100)
        # The page's own cost (idle server): at full load the server is one busy core,
        # and the page takes this share of it from the queries.
        figure("page-idle-cpu-ms-per-second", page_ms)
        figure("page-share-of-a-core-percent", page_ms / 10)
    if args.skip_knot:
        return
    figure("knot-qps", median([r.qps for r in udp["knot"]]))
    figure("knot-lost", int(median([float(r.lost) for r in udp["knot"]])))
    figure("knot-server-us-per-query", us(udp["knot"]))
    figure("knot-tcp-qps", median([r.qps for r in tcp["knot"]]))
    figure("knot-tcp-server-us-per-query", us(tcp["knot"]))
    figure("knot-tcp-short-server-us-per-query", us(short_runs["knot"]))
    figure("qps-ratio-vs-knot", fed_qps / median([r.qps for r in udp["knot"]]))
    figure("cpu-ratio-vs-knot", ratio(us(udp["knot"]), us(udp["feddns"])))
    figure("tcp-cpu-ratio-vs-knot", ratio(us(tcp["knot"]), us(tcp["feddns"])))
    figure("tcp-short-connections-cpu-ratio-vs-knot",
           ratio(us(short_runs["knot"]), us(short_runs["feddns"])))
    if page is not None:
        knot_us = us(udp["knot"])
        figure("cpu-ratio-vs-knot-page-closed", ratio(knot_us, us(page[0])))
        figure("cpu-ratio-vs-knot-page-open", ratio(knot_us, us(page[1])))
        # The same from the page's idle cost: a saturated core gives the page its share.
        figure("cpu-ratio-vs-knot-page-open-derived",
               ratio(knot_us, us(udp["feddns"])) * (1 - (page[3] - page[2]) / 1000))
    figure("knot-latency-p50-ms-at-half-max", p("knot", 50))
    figure("knot-latency-p95-ms-at-half-max", p("knot", 95))
    figure("knot-latency-p99-ms-at-half-max", p("knot", 99))
    figure("p99-ratio-vs-knot-at-half-max", p("feddns", 99) / p("knot", 99))
    if "knot" in resperf:
        figure("knot-resperf-max-qps-no-loss", resperf["knot"])
    if args.baseline_tree is not None:
        figure("before-server-us-per-query", us(udp["before"]))
        figure("before-tcp-server-us-per-query", us(tcp["before"]))
        figure("before-tcp-short-server-us-per-query", us(short_runs["before"]))
        figure("before-cpu-ratio-vs-knot", ratio(us(udp["knot"]), us(udp["before"])))
        figure("before-tcp-cpu-ratio-vs-knot", ratio(us(tcp["knot"]), us(tcp["before"])))
        figure("before-tcp-short-connections-cpu-ratio-vs-knot",
               ratio(us(short_runs["knot"]), us(short_runs["before"])))
        figure("before-loop-lag-max-ms-under-load", max(lags["before"]))
    print(f"# date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")


if __name__ == "__main__":
    main()
