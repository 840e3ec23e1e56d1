"""Programming latency: an EndpointSlice change in the fake API -> the changed DNS answer.

Three processes, so none shares a GIL with another: the fake API servers
(``bench.k8s_fakeapi``, two clusters ``east`` and ``west``, each with
``--services`` headless services of ``--endpoints`` endpoints in one slice),
feddns itself (the real CLI, ``python -m feddns serve``), and this script as
the measuring UDP client. Each change is a ready-flip or an address change of
one random endpoint of one random service in one random cluster; the child
stamps ``time.monotonic()`` just before ``FakeCluster.apply()`` and this
script polls the service's name over UDP (one query outstanding, ``--poll-gap``
seconds between queries) until the answer equals the expected new address
set; latency = arrival of that answer - the stamp (CLOCK_MONOTONIC is
system-wide). Headless services make every change visible in the A answer
(``max_records`` is raised so no subset hides one). A random pause of 0-20 ms
separates changes. ``--runs`` repetitions (fresh fake API and feddns each),
medians printed as ``programming-latency-*`` figures.

    .venv/bin/python -m bench.k8s_programming [--runs 3] [--changes 500]
"""

from __future__ import annotations

import argparse
import random
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
    percentile,
    poll_until,
    service_name,
    wait_answer,
    write_config,
)
from bench.k8s_fakeapi import FakeApi, endpoint_ip, start_fake

CLUSTERS = ("east", "west")
CHANGE_TIMEOUT = 5.0


class Model:
    """What the fake clusters hold, to compute each expected answer."""

    def __init__(self, services: int, endpoints: int) -> None:
        self.services = [f"svc-{s:04d}" for s in range(services)]
        self.state: dict[tuple[str, str], list[list[object]]] = {}
        for c, cluster in enumerate(CLUSTERS):
            index = 0
            for svc in self.services:
                eps: list[list[object]] = []
                for _ in range(endpoints):
                    eps.append([endpoint_ip(c + 1, index), True])
                    index += 1
                self.state[(cluster, svc)] = eps
        self.next_ip = 0

    def expected(self, svc: str) -> tuple[str, ...]:
        return tuple(sorted(str(ip) for cluster in CLUSTERS
                            for ip, ready in self.state[(cluster, svc)] if ready))

    def mutate(self, rng: random.Random) -> tuple[str, str, str]:
        """Change one endpoint; return (cluster, service, kind)."""
        cluster, svc = rng.choice(CLUSTERS), rng.choice(self.services)
        eps = self.state[(cluster, svc)]
        ready = [ep for ep in eps if ep[1]]
        if ready and rng.random() < 0.5:
            ep = rng.choice(ready)
            self.next_ip += 1
            ep[0] = endpoint_ip(200 + (self.next_ip >> 16), self.next_ip & 0xFFFF)
            return cluster, svc, "address"
        ep = rng.choice(eps)
        ep[1] = not ep[1]
        return cluster, svc, "ready"


def changes(args: argparse.Namespace, api: FakeApi, dns: Resolver, model: Model,
            rng: random.Random, *, pid: int) -> dict[str, float]:
    """Make the changes; time each until its answer is seen."""
    latencies: list[float] = []
    polls: list[int] = []
    failures = 0
    cpu_before = 0.0
    for i in range(args.warmup + args.changes):
        if i == args.warmup:
            cpu_before = cpu_seconds(pid)
        cluster, svc, _kind = model.mutate(rng)
        want = model.expected(svc)
        name = service_name(svc)
        api.send("set_slice", cluster=cluster, service=svc, slice=f"{svc}-0",
                 endpoints=model.state[(cluster, svc)])
        asked = time.monotonic()
        seen, n = poll_until(dns, name, want, timeout=CHANGE_TIMEOUT, gap=args.poll_gap)
        t0 = float(api.reply()["t0"])
        if seen is None:
            failures += 1
            seen = asked + CHANGE_TIMEOUT
        if i >= args.warmup:
            latencies.append((seen - t0) * 1000)
            polls.append(n)
        time.sleep(rng.uniform(0, 0.020))
    cpu = cpu_seconds(pid) - cpu_before
    return {
        "p50": percentile(latencies, 50),
        "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
        "mean": statistics.fmean(latencies),
        "changes": len(latencies),
        "failures": failures,
        "polls": statistics.fmean(polls),
        "feddns_cpu_ms_per_change": cpu / len(latencies) * 1000,
    }


def one_run(args: argparse.Namespace, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    model = Model(args.services, args.endpoints)
    with tempfile.TemporaryDirectory(prefix="feddns-bench-") as tmp:
        api, kubeconfig = start_fake(list(CLUSTERS), Path(tmp), nodelay=not args.nagle)
        try:
            for c, cluster in enumerate(CLUSTERS):
                api.call("populate", cluster=cluster, services=args.services,
                         endpoints=args.endpoints, per_slice=100, headless=True,
                         prefix="svc", first_ip=c + 1)
            config = write_config(Path(tmp), kubeconfig, CLUSTERS,
                                  max_records=2 * args.endpoints + 8)
            with feddns_process(config, gc_freeze=args.gc_freeze) as (proc, port), \
                    Resolver(port) as dns:
                wait_answer(dns, UNKNOWN, lambda rcode, _: rcode == "NXDOMAIN", timeout=60)
                probe = model.services[0]
                want = model.expected(probe)
                wait_answer(dns, service_name(probe), lambda _, rd: rd == want, timeout=10)
                res = changes(args, api, dns, model, rng, pid=proc.pid)
        finally:
            api.close()
    return res


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--changes", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--services", type=int, default=100, help="per cluster")
    parser.add_argument("--endpoints", type=int, default=10, help="per service and cluster")
    parser.add_argument("--poll-gap", type=float, default=0.0002,
                        help="seconds between polls of the changed name")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="what-if: gc.freeze() in feddns once its modules are imported")
    parser.add_argument("--nagle", action="store_true",
                        help="leave Nagle on in the fake API (tests/fakekube's default; the real"
                        " API server sets TCP_NODELAY)")
    args = parser.parse_args()
    print(environment(), flush=True)
    print(f"# {len(CLUSTERS)} clusters x {args.services} headless services x "
          f"{args.endpoints} endpoints; {args.changes} changes per run, {args.runs} runs; "
          f"fake API TCP_NODELAY {'off (Nagle)' if args.nagle else 'on'}"
          f"{'; what-if: gc.freeze() after imports' if args.gc_freeze else ''}", flush=True)
    runs = []
    for r in range(args.runs):
        res = one_run(args, seed=1000 + r)
        runs.append(res)
        print(f"# run {r + 1}: p50 {res['p50']:.2f} ms, p90 {res['p90']:.2f} ms, "
              f"p99 {res['p99']:.2f} ms, max {res['max']:.2f} ms, mean {res['mean']:.2f} ms, "
              f"{res['changes']} changes, {res['failures']} timeouts, "
              f"{res['polls']:.1f} polls/change, feddns CPU "
              f"{res['feddns_cpu_ms_per_change']:.2f} ms/change (incl. answering the polls)",
              flush=True)
    figure("programming-latency-p50-ms", median([r["p50"] for r in runs]))
    figure("programming-latency-p90-ms", median([r["p90"] for r in runs]))
    figure("programming-latency-p99-ms", median([r["p99"] for r in runs]))
    figure("programming-latency-max-ms", median([r["max"] for r in runs]))
    figure("programming-latency-changes", int(sum(r["changes"] for r in runs)))
    figure("programming-latency-timeouts", int(sum(r["failures"] for r in runs)))


if __name__ == "__main__":
    main()
