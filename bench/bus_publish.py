"""Bus publication cost of a large cluster: 10,000 services from feddns to a fresh peer.

Processes: one mosquitto (``tests.mosquitto``, 127.0.0.1, persistence off),
the fake Kubernetes API of cluster ``east`` in a child process
(``bench.k8s_fakeapi``, ``--services`` ClusterIP services ``svc-NNNN`` of
``--endpoints`` endpoints each), the publisher A, a real ``python -m feddns
serve`` that watches ``east`` and publishes it on the bus, a paced UDP client
in its own process (``bench.k8s_udpclient``) asking A for the last service
every 5 ms, and this script, which runs the receiving peers in-process: a
``FederationBus`` (own clusters: none) writing into a ``Registry`` that
expects ``east``, exactly as a peer instance's bus does, minus the DNS
table. The peer's ``Merger.receive`` is wrapped to count messages and
bytes (topic + payload) and to stamp each service message's arrival.

Per run, in order:

1. peer 1 connects and subscribes (an empty, fresh peer); then A starts;
2. ``t_local``: the UDP client's first answer from A for the last service
   (A's registry holds the cluster: it answers from its own watch);
   ``t_peer``: peer 1's registry holds all the services (the bus writes a
   cluster only once its manifest and every service listed arrived).
   ``bus-publish-seconds-10k-services`` = ``t_peer - t_local``; A's CPU
   seconds over the same interval (sampled from /proc every 20 ms) include
   compiling A's own DNS table, which runs in the same batches;
3. join: peer 2 connects after everything is retained at the broker;
   ``bus-join-seconds-10k-services`` = its start -> its registry complete,
   bounded by ``--join-timeout`` (a retained message mosquitto drops comes
   back only with A's next republish, so an incomplete join is reported as
   such, with the service messages delivered);
4. republish: A republishes its whole state every ``republish_interval``
   (``--republish``, seconds after A connected); with nothing else to do,
   A's CPU over that burst minus its idle rate (measured just before) is the
   pure publishing cost ``bus-republish-cpu-seconds-10k-services``.

The UDP client's worst answer time from A during the load and the republish
shows whether publishing blocks A's DNS. ``--runs`` repetitions, each with a
fresh broker, fake API and instance; medians printed as figures. Messages are
signed with the cluster's own Ed25519 key (issue #17; ``--hmac``: the shared key).

    .venv/bin/python -m bench.bus_publish [--runs 3] [--services 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left
from pathlib import Path
from typing import Any

from bench.bus_common import (
    FEDERATION,
    broker,
    bus_metrics,
    bus_section,
    rejected,
    signed,
    write_instance_config,
    write_key,
)
from bench.harness import REPO, cpu_seconds, figure, median
from bench.k8s_common import environment, feddns_process, service_name
from bench.k8s_fakeapi import endpoint_ip, start_fake
from feddns.config import BusConfig
from feddns.model.registry import ClusterState, Registry
from feddns.sources.mqtt import FederationBus
from tests.ports import free_port

SOURCE = "east"
LOAD_TIMEOUT = 120.0
QUIET = 1.5
"""Seconds after the join before A's idle CPU rate is measured (compiling has ended)."""
IDLE_WINDOW = 3.0
"""Seconds over which A's idle CPU rate (heartbeats, ticks) is measured."""


class Peer:
    """An in-process bus peer: a FederationBus into a Registry, with counters."""

    def __init__(self, settings: BusConfig) -> None:
        self.registry = Registry.for_clusters([SOURCE])
        self.bus = FederationBus(settings, federation=FEDERATION, registry=self.registry,
                                 own_clusters=())
        self.messages = 0
        self.bytes = 0
        self.arrivals: list[float] = []
        """Monotonic arrival time of each service message."""
        self.task: asyncio.Task[None] | None = None
        receive = self.bus.merger.receive

        def counting(topic: str, payload: bytes, **kwargs: Any) -> None:
            self.messages += 1
            self.bytes += len(topic) + len(payload)
            if "/services/" in topic:
                self.arrivals.append(time.monotonic())
            receive(topic, payload, **kwargs)

        self.bus.merger.receive = counting  # type: ignore[method-assign]

    def start(self) -> None:
        self.task = asyncio.create_task(self.bus.run(), name="peer bus")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def services(self) -> int:
        entry = self.registry.clusters[SOURCE]
        return 0 if entry.snapshot is None else len(entry.snapshot.services)

    async def wait(self, predicate: Any, within: float, what: str) -> float:
        """Poll ``predicate()`` every 2 ms; the monotonic time it held (bounded)."""
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {within:.0f} s")
            await asyncio.sleep(0.002)
        return time.monotonic()


class CpuSampler:
    """A's CPU seconds every 20 ms, for the CPU between two moments (interpolated)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.task = asyncio.create_task(self._run(), name="cpu sampler")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), cpu_seconds(self.pid)))
            await asyncio.sleep(0.02)

    def at(self, t: float) -> float:
        times = [s[0] for s in self.samples]
        i = bisect_left(times, t)
        if i <= 0:
            return self.samples[0][1]
        if i >= len(self.samples):
            return self.samples[-1][1]
        (t0, c0), (t1, c1) = self.samples[i - 1], self.samples[i]
        return c0 + (c1 - c0) * (t - t0) / (t1 - t0)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class UdpClient:
    """``bench.k8s_udpclient`` asking A one name every ``interval`` seconds, in its process."""

    def __init__(self, port: int, name: str, out: Path, *, interval: float = 0.005) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.k8s_udpclient", "--port", str(port), "--names", name,
             "--interval", str(interval), "--timeout", "2", "--max-seconds", "600",
             "--out", str(out)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "ready"

    def finish(self) -> list[list[Any]]:
        """Stop it and return its queries ``[t_due, t_send, latency_ms, idx, rcode, rdata]``."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.write("stop\n")
                self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.out.exists():
            return []
        return list(json.loads(self.out.read_text())["queries"])


def worst_ms(queries: list[list[Any]], start: float, end: float) -> float:
    """The worst answer time (ms, a timeout counts as 2000) of queries sent in [start, end]."""
    worst = 0.0
    for _due, sent, latency, _idx, _rcode, _rdata in queries:
        if start <= sent <= end:
            worst = max(worst, 2000.0 if latency < 0 else latency)
    return worst


async def one_run(args: argparse.Namespace) -> dict[str, float]:
    n = args.services
    last = service_name(f"svc-{n - 1:04d}")
    last_ip = endpoint_ip(101, n - 1)
    res: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="feddns-bus-publish-") as tmp_name, \
            contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        mqtt = stack.enter_context(broker(tmp, nodelay=args.broker_nodelay,
                                          max_queued=args.broker_max_queued))
        key = write_key(tmp)
        api, kubeconfig = start_fake([SOURCE], tmp)
        stack.callback(api.close)
        started = time.monotonic()
        api.call("populate", cluster=SOURCE, services=n, endpoints=args.endpoints,
                 per_slice=100, headless=False, prefix="svc", first_ip=1)
        print(f"# populated {n} services in {time.monotonic() - started:.1f} s", flush=True)
        bus: dict[str, Any] = {"republish_interval": args.republish}
        peer_bus = dict(bus)
        if not args.hmac:  # each cluster signs with its own key; peers hold public keys
            bus.update(signed(tmp / "keys", [SOURCE]))
            peer_bus.update(keys=[], public_keys_dir=bus["public_keys_dir"])
        settings = BusConfig(**bus_section(mqtt.port, key, **peer_bus))
        peer = Peer(settings)
        peer.start()
        try:
            await peer.wait(lambda: peer.bus.connected, 30, "peer 1 connected")
            await asyncio.sleep(0.2)  # the subscription is acknowledged
            observe = free_port()
            config = write_instance_config(
                tmp, own=SOURCE, clusters=(SOURCE,), kubeconfig=kubeconfig, port=mqtt.port,
                key=key, bus=bus, observe=observe,
                source={"read_timeout": 30.0, "backoff_max": 1.0})
            answers_file = tmp / "udp.json"
            t_spawn = time.monotonic()
            proc, port = stack.enter_context(feddns_process(config))
            sampler = CpuSampler(proc.pid)
            client = UdpClient(port, last, answers_file)
            stack.callback(client.finish)
            t_peer = await peer.wait(lambda: peer.services() >= n, LOAD_TIMEOUT,
                                     "peer 1 complete")
            load_messages, load_bytes = peer.messages, peer.bytes
            load_arrivals = list(peer.arrivals)
            # Join: a fresh peer while everything is retained at the broker (bounded: a
            # retained message the broker drops returns only with A's next republish).
            joiner = Peer(settings)
            t_join = time.monotonic()
            joiner.start()
            try:
                t_joined = await joiner.wait(lambda: joiner.services() >= n, args.join_timeout,
                                             "peer 2 complete")
                res["join_s"] = t_joined - t_join
            except TimeoutError:
                res["join_s"] = math.inf
            finally:
                await joiner.stop()
            shadow = joiner.bus.merger.peers.get(SOURCE)
            res["join_manifest"] = float(shadow is not None and shadow.manifest is not None)
            res["join_messages"] = joiner.messages
            res["join_service_messages"] = len(joiner.arrivals)
            res["join_mb"] = joiner.bytes / 1e6
            res["broker_dropping"] = mqtt.log.count("Outgoing messages are being dropped")
            # Republish: idle rate first, then the burst.
            await asyncio.sleep(QUIET)
            seen = len(peer.arrivals)
            q0 = time.monotonic()
            await asyncio.sleep(IDLE_WINDOW)
            q1 = time.monotonic()
            republish_ok = len(peer.arrivals) == seen
            if republish_ok:
                await peer.wait(lambda: len(peer.arrivals) >= seen + n,
                                args.republish + 60, "republish at peer 1")
                burst = peer.arrivals[seen:seen + n]
                await asyncio.sleep(0.3)
                end = burst[-1] + 0.25
                idle_rate = (sampler.at(q1) - sampler.at(q0)) / (q1 - q0)
                res["republish_cpu_s"] = (sampler.at(end) - sampler.at(q1)
                                          - idle_rate * (end - q1))
                res["republish_spread_s"] = burst[-1] - burst[0]
                res["idle_cpu_pct"] = idle_rate * 100
            else:
                print("# republish started during the idle window: raise --republish",
                      flush=True)
            queries = client.finish()
            answered = [q for q in queries if q[4] == "NOERROR" and q[5] == last_ip]
            if not answered:
                raise RuntimeError("A never answered the last service")
            t_local = answered[0][1] + answered[0][2] / 1000
            res["publish_s"] = t_peer - t_local
            res["spawn_to_local_s"] = t_local - t_spawn
            res["spawn_to_peer_s"] = t_peer - t_spawn
            res["cpu_spawn_to_local_s"] = sampler.at(t_local) - sampler.at(t_spawn)
            res["cpu_local_to_peer_s"] = sampler.at(t_peer) - sampler.at(t_local)
            res["first_service_after_local_s"] = (load_arrivals[0] - t_local
                                                  if load_arrivals else -1.0)
            res["load_messages"] = load_messages
            res["load_mb"] = load_bytes / 1e6
            res["worst_dns_ms_load"] = worst_ms(queries, t_local, t_peer)
            if republish_ok:
                res["worst_dns_ms_republish"] = worst_ms(queries, burst[0] - 2.0, burst[-1])
            metrics = bus_metrics(observe)
            res["a_published"] = metrics.get("feddns_bus_published_total", 0)
            res["a_oversized"] = metrics.get("feddns_bus_oversized_total", 0)
            res["rejected_peer"] = sum(peer.bus.rejected.values())
            res["rejected_a"] = rejected(metrics)
            res["dropped_peer"] = peer.bus.stats().dropped
            stale = [t for t, state in peer.registry.clusters[SOURCE].transitions
                     if state is ClusterState.STALE]
            res["peer_stale"] = len(stale)
            if stale:
                phases = f"peer complete at {t_peer - t_spawn:.1f} s" + (
                    f", republish burst {burst[0] - t_spawn:.1f}-{burst[-1] - t_spawn:.1f} s"
                    if republish_ok else "")
                print(f"# peer 1 saw east turn stale at "
                      f"{', '.join(f'{t - t_spawn:.1f}' for t in stale)} s after A's start "
                      f"({phases})", flush=True)
            await sampler.stop()
        finally:
            await peer.stop()
    return res


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=2, help="per service")
    parser.add_argument("--republish", type=float, default=30.0,
                        help="A's republish_interval (the republish burst is measured)")
    parser.add_argument("--join-timeout", type=float, default=15.0,
                        help="bound on the join (an incomplete join is reported as such)")
    parser.add_argument("--hmac", action="store_true",
                        help="what-if: the shared HMAC key instead of per-cluster Ed25519"
                             " signatures")
    parser.add_argument("--broker-nodelay", action="store_true",
                        help="what-if: set_tcp_nodelay true in mosquitto (default false)")
    parser.add_argument("--broker-max-queued", type=int, default=None,
                        help="what-if: mosquitto max_queued_messages (default 1000; 0: none)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="# peer log: %(name)s: %(message)s")
    print(environment(), flush=True)
    print(f"# publisher: feddns watching 1 cluster of {args.services} ClusterIP services x "
          f"{args.endpoints} endpoints; peers: in-process FederationBus + Registry; "
          f"republish_interval {args.republish:.0f} s; {args.runs} runs; "
          f"{'HMAC (shared key)' if args.hmac else 'per-cluster Ed25519 signatures'}"
          f"{'; what-if: mosquitto set_tcp_nodelay true' if args.broker_nodelay else ''}"
          + ("" if args.broker_max_queued is None else
             f"; what-if: mosquitto max_queued_messages {args.broker_max_queued}"),
          flush=True)
    runs = []
    for r in range(args.runs):
        res = asyncio.run(one_run(args))
        runs.append(res)
        print(f"# run {r + 1}: A answers locally {res['spawn_to_local_s']:.2f} s after start "
              f"(CPU {res['cpu_spawn_to_local_s']:.2f} s); peer complete "
              f"{res['publish_s']:.2f} s later (first service message "
              f"{res['first_service_after_local_s']:.2f} s after; A's CPU meanwhile "
              f"{res['cpu_local_to_peer_s']:.2f} s, incl. compiling its table); "
              f"{res['load_messages']:.0f} messages, {res['load_mb']:.2f} MB to peer 1; "
              f"A's worst DNS answer meanwhile {res['worst_dns_ms_load']:.0f} ms", flush=True)
        join = (f"join {res['join_s']:.2f} s" if math.isfinite(res["join_s"]) else
                f"join INCOMPLETE after {args.join_timeout:.0f} s (manifest "
                f"{'received' if res['join_manifest'] else 'lost'}, "
                f"{res['join_service_messages']:.0f}/{args.services} service messages)")
        print(f"# run {r + 1}: {join} ({res['join_messages']:.0f} messages, "
              f"{res['join_mb']:.2f} MB; mosquitto logged 'Outgoing messages are being "
              f"dropped' {res['broker_dropping']:.0f} time(s)); "
              + (f"republish CPU {res['republish_cpu_s']:.2f} s (idle "
                 f"{res['idle_cpu_pct']:.1f}% subtracted), spread at peer "
                 f"{res['republish_spread_s']:.2f} s, A's worst DNS answer "
                 f"{res['worst_dns_ms_republish']:.0f} ms; "
                 if "republish_cpu_s" in res else "republish not measured; ")
              + f"A published {res['a_published']:.0f}, oversized {res['a_oversized']:.0f}; "
              f"rejected: peer {res['rejected_peer']}, A {res['rejected_a']}; "
              f"dropped at peer {res['dropped_peer']}; peer 1 saw east turn stale "
              f"{res['peer_stale']:.0f} time(s)", flush=True)

    tag = "-hmac" if args.hmac else ""
    tag += "-broker-nodelay" if args.broker_nodelay else ""
    if args.broker_max_queued is not None:
        tag += f"-broker-max-queued-{args.broker_max_queued}"

    def fig(name: str, value: float | int | str) -> None:
        figure(name + tag, value)

    def med(key: str) -> float:
        return median([r[key] for r in runs if key in r])

    fig("bus-publish-seconds-10k-services", med("publish_s"))
    fig("bus-publish-start-to-peer-seconds-10k-services", med("spawn_to_peer_s"))
    fig("bus-publish-cpu-seconds-10k-services", med("cpu_local_to_peer_s"))
    fig("bus-publish-messages-10k-services", int(med("load_messages")))
    fig("bus-publish-mb-10k-services", med("load_mb"))
    joins = [r["join_s"] for r in runs]
    if all(math.isfinite(j) for j in joins):
        fig("bus-join-seconds-10k-services", median(joins))
    else:
        fig("bus-join-seconds-10k-services",
            f"incomplete in {sum(not math.isfinite(j) for j in joins)}/{len(joins)} runs"
            f" (bounded at {args.join_timeout:.0f} s)")
    fig("bus-join-service-messages-delivered-10k-services", int(med("join_service_messages")))
    if any("republish_cpu_s" in r for r in runs):
        fig("bus-republish-cpu-seconds-10k-services", med("republish_cpu_s"))
        fig("bus-republish-spread-seconds-10k-services", med("republish_spread_s"))
    fig("bus-publish-worst-dns-ms-at-publisher", med("worst_dns_ms_load"))


if __name__ == "__main__":
    main()
