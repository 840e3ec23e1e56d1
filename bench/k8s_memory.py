"""Memory per endpoint: RSS of a feddns process holding 200,000 endpoints across 10 clusters.

The fake API servers (``bench.k8s_fakeapi``, ``--clusters`` clusters ``c00``..)
run in a child process; feddns is the real CLI in another
(``python -m feddns serve``). First feddns syncs the clusters while they are
empty, ``--runs`` times; then each cluster gets ``--services`` services x
``--endpoints`` endpoints (100 per slice, one address each, with pod, node and
zone as the EndpointSlice controller writes them; the same service names in
every cluster, as a federation has them) and feddns syncs them ``--runs``
times. Each time feddns counts as synced when an unknown name answers NXDOMAIN
(every cluster loaded *and* every service compiled); then, after
``--settle`` seconds, VmRSS is read from /proc five times 0.5 s apart and the
median kept. rss-bytes-per-endpoint = (median full RSS - median empty RSS) /
endpoints.

    .venv/bin/python -m bench.k8s_memory [--runs 3] [--clusters 10 --services 200 --endpoints 100]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.harness import cpu_seconds, figure, median
from bench.k8s_common import (
    UNKNOWN,
    Resolver,
    environment,
    feddns_process,
    service_name,
    status_kib,
    wait_answer,
    write_config,
)
from bench.k8s_fakeapi import start_fake

MIB = 1024 * 1024


def measure(config: Path, args: argparse.Namespace, expect_answers: int) -> dict[str, float]:
    """Start feddns, wait for the sync, settle, read its memory; stop it."""
    started = time.monotonic()
    with feddns_process(config, list_page=args.list_page, env=args.env) as (proc, port), \
            Resolver(port) as dns:
        loaded = wait_answer(dns, UNKNOWN, lambda rcode, _: rcode == "NXDOMAIN",
                             timeout=args.sync_timeout, interval=0.02)
        sync = loaded - started
        cpu = cpu_seconds(proc.pid)
        if expect_answers:
            rcode, rdata = dns.ask(service_name("svc-0000"))
            if rcode != "NOERROR" or len(rdata) != expect_answers:
                raise RuntimeError(f"svc-0000 answered {rcode} {rdata}")
        time.sleep(args.settle)
        samples = []
        for _ in range(5):
            samples.append(status_kib(proc.pid, "VmRSS") * 1024)
            time.sleep(0.5)
        return {"rss": statistics.median(samples), "hwm": status_kib(proc.pid, "VmHWM") * 1024,
                "sync": sync, "cpu": cpu}


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--services", type=int, default=200, help="per cluster")
    parser.add_argument("--endpoints", type=int, default=100, help="per service and cluster")
    parser.add_argument("--headless", action="store_true",
                        help="headless services (a DNS name per endpoint) instead of ClusterIP")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--sync-timeout", type=float, default=300.0)
    parser.add_argument("--list-page", type=int, default=None,
                        help="what-if: feddns's LIST page size (objects); default: the product's")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="what-if: an environment variable for feddns (repeatable), e.g. "
                        "PYTHONMALLOC=malloc or MALLOC_ARENA_MAX=2")
    args = parser.parse_args()
    args.env = dict(e.split("=", 1) for e in args.env)
    names = [f"c{i:02d}" for i in range(args.clusters)]
    total = args.clusters * args.services * args.endpoints
    kind = "headless" if args.headless else "ClusterIP"
    print(environment(), flush=True)
    print(f"# {args.clusters} clusters x {args.services} {kind} services x {args.endpoints} "
          f"endpoints = {total} endpoints; feddns = the CLI (uvloop) in a subprocess; "
          f"{args.runs} runs each", flush=True)
    if args.list_page is not None or args.env:
        print(f"# what-if: LIST page {args.list_page or 'as shipped'}, env {args.env or '-'}",
              flush=True)
    with tempfile.TemporaryDirectory(prefix="feddns-bench-") as tmp:
        api, kubeconfig = start_fake(names, Path(tmp))
        try:
            config = write_config(Path(tmp), kubeconfig, names)
            empty = []
            for r in range(args.runs):
                res = measure(config, args, expect_answers=0)
                empty.append(res)
                print(f"# empty run {r + 1}: RSS {res['rss'] / MIB:.1f} MiB, sync "
                      f"{res['sync']:.2f} s", flush=True)
            started = time.monotonic()
            for c, name in enumerate(names):
                api.call("populate", cluster=name, services=args.services,
                         endpoints=args.endpoints, per_slice=100, headless=args.headless,
                         prefix="svc", first_ip=c + 1)
            print(f"# populated the fake clusters in {time.monotonic() - started:.1f} s",
                  flush=True)
            full = []
            answers = min(args.clusters, 16) if not args.headless else 16
            for r in range(args.runs):
                res = measure(config, args, expect_answers=answers)
                full.append(res)
                print(f"# full run {r + 1}: RSS {res['rss'] / MIB:.1f} MiB, peak (VmHWM) "
                      f"{res['hwm'] / MIB:.1f} MiB, sync {res['sync']:.2f} s, feddns CPU to "
                      f"sync {res['cpu']:.2f} s, "
                      f"{(res['rss'] - median([e['rss'] for e in empty])) / total:.0f} B/endpoint",
                      flush=True)
        finally:
            api.close()
    empty_rss = median([e["rss"] for e in empty])
    full_rss = median([f["rss"] for f in full])
    figure("rss-bytes-per-endpoint", (full_rss - empty_rss) / total)
    figure("rss-mib-200k-endpoints" if total == 200_000 else f"rss-mib-{total}-endpoints",
           full_rss / MIB)
    figure("rss-mib-empty", empty_rss / MIB)
    figure("rss-peak-mib-during-sync", median([f["hwm"] for f in full]) / MIB)
    figure("k8s-sync-200k-seconds" if total == 200_000 else f"k8s-sync-{total}-seconds",
           median([f["sync"] for f in full]))
    if total == 200_000:  # the name issue #14 gives it
        figure("sync-seconds-200k-endpoints", median([f["sync"] for f in full]))
    figure("k8s-sync-empty-seconds", median([e["sync"] for e in empty]))
    figure("k8s-sync-cpu-seconds", median([f["cpu"] for f in full]))


if __name__ == "__main__":
    main()
