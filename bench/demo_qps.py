"""First throughput figure: dnsperf against feddns serving the embedded demo.

Runs feddns pinned to CPU 1 and dnsperf pinned to CPU 0 with a mix of the demo's
names (A, AAAA, SRV, headless endpoint names, NXDOMAIN), several times, and prints
the medians as ``demo-qps``, ``demo-latency-avg-ms`` and ``demo-queries-lost``.

    .venv/bin/python bench/demo_qps.py [--seconds 15] [--runs 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.harness import REPO, feddns_server, figure, median, run_dnsperf
from tests.ports import free_port

QUERIES = [
    ("web.shop.svc.clusterset.local", "A", 30),
    ("checkout.shop.svc.clusterset.local", "A", 10),
    ("api.shop.svc.clusterset.local", "AAAA", 10),
    ("db.data.svc.clusterset.local", "A", 10),
    ("db-0.east-a.db.data.svc.clusterset.local", "A", 5),
    ("db-0.west.prod.db.data.svc.clusterset.local", "A", 5),
    ("_http._tcp.web.shop.svc.clusterset.local", "SRV", 10),
    ("db.data.svc.clusterset.local", "SRV", 5),
    ("missing.shop.svc.clusterset.local", "A", 10),
    ("api.shop.svc.clusterset.local", "A", 5),
]


def write_queryfile(path: Path) -> None:
    """A dnsperf input with the weights above (100 lines, replayed in a loop)."""
    lines = [f"{name} {qtype}" for name, qtype, weight in QUERIES for _ in range(weight)]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        queryfile = Path(tmp) / "queries.txt"
        write_queryfile(queryfile)
        results = []
        with feddns_server(REPO / "config" / "demo.yaml", port) as proc:
            run_dnsperf(port, queryfile, seconds=2, server_pid=proc.pid)  # warm-up
            for i in range(args.runs):
                r = run_dnsperf(port, queryfile, seconds=args.seconds, server_pid=proc.pid)
                print(f"# run {i + 1}: {r.qps:.0f} qps, lost {r.lost}, "
                      f"avg {r.latency_avg_ms:.3f} ms, max {r.latency_max_ms:.3f} ms, "
                      f"server {r.server_us_per_query or 0:.2f} us/query", flush=True)
                results.append(r)
    figure("demo-qps", median([r.qps for r in results]))
    figure("demo-latency-avg-ms", median([r.latency_avg_ms for r in results]))
    figure("demo-queries-lost", int(median([float(r.lost) for r in results])))
    us = [r.server_us_per_query for r in results if r.server_us_per_query]
    if us:
        figure("demo-server-us-per-query", median(us))


if __name__ == "__main__":
    main()
