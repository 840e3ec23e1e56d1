"""Bus programming latency: an EndpointSlice change in cluster A's API -> the changed answer on B.

Six kinds of processes, so none shares a GIL with another: one mosquitto
(``tests.mosquitto``, 127.0.0.1, persistence off), the fake Kubernetes API
servers of three clusters ``east``, ``west`` and ``south`` in one child
process (``bench.k8s_fakeapi``), three real feddns instances (``python -m
feddns serve``), each watching only its own cluster and receiving the other
two over the bus (heartbeat 1 s, peer_timeout 3 s, ``hold_down`` and
``readmit_after`` 0), and this script as the measuring UDP client.

Every cluster holds ``--background`` headless services ``svc-NNNN`` (the same
names in each cluster, ``--endpoints`` endpoints each); ``east`` alone also
holds ``--services`` headless services ``only-NNNN``. Each change is a
ready-flip or an address change of one random endpoint of one random
``only-`` service in ``east``: its A record set at ``west`` (the observer,
which knows ``east`` only through the bus) always changes, to the new set of
ready addresses (NODATA when none is ready). The fake API child stamps
``time.monotonic()`` just before ``FakeCluster.apply()``; this script polls
the name at ``west`` over UDP (one query outstanding, ``--poll-gap`` seconds
apart) until the answer equals the expected set; latency = arrival of that
answer - the stamp (CLOCK_MONOTONIC is system-wide). The path measured: fake
API watch -> feddns east (registry, compile, bus diff, sign, QoS 1 publish)
-> mosquitto -> feddns west (verify, merge, compile) -> DNS answer. A random
pause of 0-20 ms separates changes. ``--runs`` repetitions, each with a fresh
broker, fake API and instances, each bounded by ``--max-seconds``; medians of
the per-run percentiles are printed as ``bus-programming-latency-*`` figures.

    .venv/bin/python -m bench.bus_latency [--runs 3] [--changes 500]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.bus_common import broker, bus_metrics, rejected, write_instance_config, write_key
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
)
from bench.k8s_fakeapi import FakeApi, endpoint_ip, start_fake
from tests.ports import free_port

CLUSTERS = ("east", "west", "south")
SOURCE = "east"
"""The cluster whose API changes (instance A)."""
OBSERVER = "west"
"""The instance whose answers are polled (instance B): it knows ``east`` only via the bus.
``--observer east`` polls A itself instead (the local programming latency, for comparison)."""
CHANGE_TIMEOUT = 5.0
ONLY_FIRST_IP = 50
"""Addresses of the ``only-`` services start at 10.50.0.0."""


class Model:
    """What ``east`` holds for its ``only-`` services, to compute each expected answer."""

    def __init__(self, services: int, endpoints: int) -> None:
        self.services = [f"only-{s:04d}" for s in range(services)]
        self.state: dict[str, list[list[object]]] = {}
        index = 0
        for svc in self.services:
            eps: list[list[object]] = []
            for _ in range(endpoints):
                eps.append([endpoint_ip(ONLY_FIRST_IP, index), True])
                index += 1
            self.state[svc] = eps
        self.next_ip = 0

    def expected(self, svc: str) -> tuple[str, ...]:
        return tuple(sorted(str(ip) for ip, ready in self.state[svc] if ready))

    def mutate(self, rng: random.Random) -> tuple[str, str]:
        """Change one endpoint; return (service, kind)."""
        svc = rng.choice(self.services)
        eps = self.state[svc]
        ready = [ep for ep in eps if ep[1]]
        if ready and rng.random() < 0.5:
            ep = rng.choice(ready)
            self.next_ip += 1
            ep[0] = endpoint_ip(200 + (self.next_ip >> 16), self.next_ip & 0xFFFF)
            return svc, "address"
        ep = rng.choice(eps)
        ep[1] = not ep[1]
        return svc, "ready"


def changes(args: argparse.Namespace, api: FakeApi, dns: Resolver, model: Model,
            rng: random.Random, *, pids: dict[str, int]) -> dict[str, float]:
    """Make the changes in ``east``; time each until ``west`` answers it."""
    latencies: list[float] = []
    by_kind: dict[str, list[float]] = {"address": [], "ready": []}
    polls: list[int] = []
    failures = 0
    cpu_before: dict[str, float] = {}
    started = time.monotonic()
    for i in range(args.warmup + args.changes):
        if i == args.warmup:
            cpu_before = {c: cpu_seconds(pid) for c, pid in pids.items()}
            started = time.monotonic()
        if i > args.warmup and time.monotonic() - started > args.max_seconds:
            print(f"# run bounded: stopped after {len(latencies)} changes "
                  f"({args.max_seconds:.0f} s)", flush=True)
            break
        svc, kind = model.mutate(rng)
        want = model.expected(svc)
        name = service_name(svc)
        api.send("set_slice", cluster=SOURCE, service=svc, slice=f"{svc}-0",
                 endpoints=model.state[svc])
        asked = time.monotonic()
        seen, n = poll_until(dns, name, want, timeout=CHANGE_TIMEOUT, gap=args.poll_gap)
        t0 = float(api.reply()["t0"])
        if seen is None:
            failures += 1
            seen = asked + CHANGE_TIMEOUT
        if i >= args.warmup:
            ms = (seen - t0) * 1000
            latencies.append(ms)
            by_kind[kind].append(ms)
            polls.append(n)
        time.sleep(rng.uniform(0, 0.020))
    elapsed = time.monotonic() - started
    cpu = {c: cpu_seconds(pid) - cpu_before[c] for c, pid in pids.items()}
    return {
        "p50": percentile(latencies, 50),
        "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
        "mean": statistics.fmean(latencies),
        "p50_address": percentile(by_kind["address"], 50) if by_kind["address"] else 0.0,
        "p50_ready": percentile(by_kind["ready"], 50) if by_kind["ready"] else 0.0,
        "changes": len(latencies),
        "failures": failures,
        "polls": statistics.fmean(polls),
        "seconds": elapsed,
        **{f"cpu_ms_{c}": cpu[c] / len(latencies) * 1000 for c in cpu},
    }


def one_run(args: argparse.Namespace, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    model = Model(args.services, args.endpoints)
    max_records = max(args.endpoints * len(CLUSTERS), args.endpoints) + 8
    with tempfile.TemporaryDirectory(prefix="feddns-bus-bench-") as tmp_name, \
            contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        mqtt = stack.enter_context(broker(tmp, nodelay=args.broker_nodelay))
        key = write_key(tmp)
        api, kubeconfig = start_fake(list(CLUSTERS), tmp)
        stack.callback(api.close)
        started = time.monotonic()
        for c, cluster in enumerate(CLUSTERS):
            api.call("populate", cluster=cluster, services=args.background,
                     endpoints=args.endpoints, per_slice=100, headless=True, prefix="svc",
                     first_ip=c + 1)
        api.call("populate", cluster=SOURCE, services=args.services, endpoints=args.endpoints,
                 per_slice=100, headless=True, prefix="only", first_ip=ONLY_FIRST_IP)
        procs = {}
        ports = {}
        observe = {}
        for cluster in CLUSTERS:
            observe[cluster] = free_port()
            config = write_instance_config(
                tmp, own=cluster, clusters=CLUSTERS, kubeconfig=kubeconfig, port=mqtt.port,
                key=key, max_records=max_records, observe=observe[cluster],
                source={"read_timeout": 5.0, "backoff_max": 1.0})
            procs[cluster], ports[cluster] = stack.enter_context(feddns_process(config))
        dns = stack.enter_context(Resolver(ports[args.observer]))
        # Loaded everywhere: NXDOMAIN needs every cluster (two of them over the bus).
        for cluster in CLUSTERS:
            with Resolver(ports[cluster]) as r:
                wait_answer(r, UNKNOWN, lambda rcode, _: rcode == "NXDOMAIN", timeout=60)
        probe = model.services[0]
        want = model.expected(probe)
        wait_answer(dns, service_name(probe), lambda _, rd: rd == want, timeout=30)
        print(f"# federation up in {time.monotonic() - started:.1f} s "
              f"(populate, 3 instances, bus)", flush=True)
        res = changes(args, api, dns, model, rng,
                      pids={c: p.pid for c, p in procs.items()})
        after = {c: bus_metrics(observe[c]) for c in CLUSTERS}
        res["rejected"] = sum(rejected(m) for m in after.values())
        res["dropped"] = sum(m.get("feddns_bus_dropped_total", 0) for m in after.values())
        res["connects"] = sum(m.get("feddns_bus_connects_total", 0) for m in after.values())
        res["published_east"] = after[SOURCE].get("feddns_bus_published_total", 0)
    return res


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--changes", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--services", type=int, default=20,
                        help="headless services only east has (the ones changed)")
    parser.add_argument("--background", type=int, default=100,
                        help="headless services every cluster has (never changed)")
    parser.add_argument("--endpoints", type=int, default=4, help="per service and cluster")
    parser.add_argument("--poll-gap", type=float, default=0.0002,
                        help="seconds between polls of the changed name")
    parser.add_argument("--max-seconds", type=float, default=240.0,
                        help="bound on the measured part of each run")
    parser.add_argument("--observer", choices=CLUSTERS, default=OBSERVER,
                        help="the instance polled (east: local latency, without the bus)")
    parser.add_argument("--broker-nodelay", action="store_true",
                        help="what-if: set_tcp_nodelay true in mosquitto (default false)")
    args = parser.parse_args()
    print(environment(), flush=True)
    print(f"# 3 instances ({', '.join(CLUSTERS)}) + mosquitto; changes in {SOURCE}, answers "
          f"polled at {args.observer}; {args.services} {SOURCE}-only headless services x "
          f"{args.endpoints} endpoints (+{args.background} shared services per cluster); "
          f"heartbeat 1 s, peer_timeout 3 s, hold_down 0, readmit_after 0; "
          f"{args.changes} changes per run, {args.runs} runs"
          f"{'; what-if: mosquitto set_tcp_nodelay true' if args.broker_nodelay else ''}",
          flush=True)
    runs = []
    for r in range(args.runs):
        res = one_run(args, seed=2000 + r)
        runs.append(res)
        print(f"# run {r + 1}: p50 {res['p50']:.2f} ms, p90 {res['p90']:.2f} ms, "
              f"p99 {res['p99']:.2f} ms, max {res['max']:.2f} ms, mean {res['mean']:.2f} ms "
              f"(p50 address {res['p50_address']:.2f}, ready-flip {res['p50_ready']:.2f}); "
              f"{res['changes']} changes in {res['seconds']:.0f} s, {res['failures']} timeouts, "
              f"{res['polls']:.1f} polls/change; CPU ms/change east "
              f"{res['cpu_ms_east']:.2f}, west {res['cpu_ms_west']:.2f} (incl. answering "
              f"polls), south {res['cpu_ms_south']:.2f}; bus: {res['published_east']:.0f} "
              f"published by east, {res['rejected']} rejected, {res['dropped']:.0f} dropped, "
              f"{res['connects']:.0f} connects", flush=True)
    prefix = "bus-programming-latency" if args.observer != SOURCE else "bus-local-latency"
    if args.broker_nodelay:
        prefix += "-broker-nodelay"
    figure(f"{prefix}-p50-ms", median([r["p50"] for r in runs]))
    figure(f"{prefix}-p90-ms", median([r["p90"] for r in runs]))
    figure(f"{prefix}-p99-ms", median([r["p99"] for r in runs]))
    figure(f"{prefix}-max-ms", median([r["max"] for r in runs]))
    figure(f"{prefix}-changes", int(sum(r["changes"] for r in runs)))
    figure(f"{prefix}-timeouts", int(sum(r["failures"] for r in runs)))


if __name__ == "__main__":
    main()
