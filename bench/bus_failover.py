"""Broker failover: the broker in use is killed -> a change in cluster A is answered at B again.

Why it exists: with ``bus.brokers`` a broker's death must cost the federation
seconds, not the outage of the bus (issue #12). Two mosquitto brokers with
mosquitto's own defaults, bridged both ways by mosquitto's bridge
(``bench.bus_common.bridged_brokers``), and two real feddns instances
(``python -m feddns serve``) with the bus's *default* settings (keepalive 30 s,
heartbeat 30 s, backoff_max 30 s) and ``bus.brokers: [broker 1, broker 2]``.
Instance A serves cluster ``east`` from a static file (polled every 0.1 s) and
knows ``west`` through the bus; instance B the other way round.

Each run: SIGKILL the broker both instances use, write a change to A's file at
once (a new cluster IP for ``shop/web`` in ``east``), and poll B over UDP
(every 5 ms, one query outstanding) until it answers the new address; one
sample is the time from the kill to that answer: A noticing the loss, A and B
connecting to the other broker (subscribe, republish), A's source seeing the
edit, the publication, B's merge and compile. The killed broker is then
started again (empty: persistence off) and the bridge waited for, so the next
run kills the other one. Prints ``broker-failover-seconds``, the median
(goal: under 10 s with the default settings).

This measures a broker *process* that dies (its sockets are closed, which
clients notice at once). A broker host that vanishes silently (power, a
partition: no RST) is noticed only by the MQTT keepalive, after one to two
times ``bus.keepalive`` (30-60 s by default), and the failover follows then.

    .venv/bin/python -m bench.bus_failover [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from bench.bus_common import FEDERATION, bridged_brokers, write_key
from bench.harness import figure, median
from bench.k8s_common import Resolver, environment, feddns_process, wait_answer
from tests.mosquitto import Mosquitto
from tests.ports import free_port

NAME = "web.shop.svc.clusterset.local"
WEST_IP = "10.96.2.10"
PREFIX = "bench-failover"


def web(cluster_ip: str, endpoint: str) -> dict[str, Any]:
    """The static-source form of ``shop/web`` with one ready endpoint."""
    return {"namespace": "shop", "name": "web", "cluster_ips": [cluster_ip],
            "ports": [{"name": "http", "port": 80}], "endpoints": [{"address": endpoint}]}


def write_data(path: Path, cluster: str, cluster_ip: str) -> None:
    """Write one cluster's static data atomically (the source never reads half a file)."""
    endpoint = cluster_ip.replace("10.96.", "10.1.", 1)
    staged = path.with_suffix(".new")
    staged.write_text(yaml.safe_dump({"clusters": {cluster: {"services": [
        web(cluster_ip, endpoint)]}}}))
    staged.replace(path)


def write_config(tmp: Path, own: str, *, brokers: list[Mosquitto], key: Path,
                 observe: int) -> tuple[Path, Path]:
    """Config and data file of the instance that sources ``own`` (the other on the bus)."""
    data = tmp / f"{own}-services.yaml"
    clusters = []
    for name in ("east", "west"):
        source: dict[str, Any] = ({"type": "static", "file": str(data), "poll_interval": 0.1}
                                  if name == own else {"type": "bus"})
        clusters.append({"name": name, "region": "r1", "zones": ["z1"], "source": source})
    config = {
        "federation": FEDERATION,
        "dns": {"listen": ["127.0.0.1:0"]},
        "observe": {"listen": f"127.0.0.1:{observe}"},
        "clusters": clusters,
        # The bus's defaults but for the brokers, the topics and the key.
        "bus": {"brokers": [{"host": "127.0.0.1", "port": m.port} for m in brokers],
                "topic_prefix": PREFIX, "keys": [{"id": "k1", "secret_file": str(key)}]},
    }
    path = tmp / f"feddns-{own}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, data


def broker_in_use(observe: int) -> str | None:
    """``host:port`` of the broker an instance's bus is connected to (from ``/debug``)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{observe}/debug", timeout=5) as reply:
            view = json.loads(reply.read())
    except OSError:
        return None
    bus = view.get("bus") or {}
    return bus.get("broker") if bus.get("connected") else None


def wait_for(predicate: Any, *, timeout: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms until true (bounded)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


def has_retained(broker: Mosquitto, *, timeout: float) -> None:
    """Wait until ``broker`` holds the federation's retained state again (over the bridge)."""

    async def look() -> bool:
        with contextlib.suppress(aiomqtt.MqttError, OSError):
            async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                await client.subscribe(f"{PREFIX}/{FEDERATION}/clusters/+/snapshot", qos=0)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        async for _ in client.messages:
                            return True
        return False

    wait_for(lambda: asyncio.run(look()), timeout=timeout,
             what=f"broker {broker.port} restored over the bridge")


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="bound on one failover (a run that exceeds it fails)")
    args = parser.parse_args()
    print(environment(), flush=True)
    print("# 2 bridged mosquittos (defaults), 2 feddns instances with the bus defaults and"
          " bus.brokers [1, 2]; A sources east (static, polled every 0.1 s), B answers; the"
          f" broker in use is SIGKILLed, A's data changed at once; {args.runs} runs",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="feddns-failover-bench-") as tmp_name, \
            contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        brokers = list(stack.enter_context(bridged_brokers(tmp)))
        key = write_key(tmp)
        observe = {"east": free_port(), "west": free_port()}
        config_a, data_a = write_config(tmp, "east", brokers=brokers, key=key,
                                        observe=observe["east"])
        config_b, data_b = write_config(tmp, "west", brokers=brokers, key=key,
                                        observe=observe["west"])
        write_data(data_a, "east", "10.96.1.10")
        write_data(data_b, "west", WEST_IP)
        stack.enter_context(feddns_process(config_a))
        _, port_b = stack.enter_context(feddns_process(config_b))
        dns = stack.enter_context(Resolver(port_b))
        wait_answer(dns, NAME, lambda _, rd: rd == ("10.96.1.10", WEST_IP), timeout=60)
        labels = [f"127.0.0.1:{m.port}" for m in brokers]
        samples = []
        for run in range(args.runs):
            wait_for(lambda: broker_in_use(observe["east"]) is not None
                     and broker_in_use(observe["east"]) == broker_in_use(observe["west"]),
                     timeout=60, what="both instances on one broker")
            victim = brokers[labels.index(str(broker_in_use(observe["east"])))]
            new_ip = f"10.96.1.{11 + run}"
            killed = time.monotonic()
            victim.stop(kill=True)
            write_data(data_a, "east", new_ip)
            want = tuple(sorted((new_ip, WEST_IP)))
            seen = None
            while time.monotonic() - killed < args.timeout:
                if dns.ask(NAME)[1] == want:
                    seen = time.monotonic()
                    break
                time.sleep(0.005)
            if seen is None:
                raise RuntimeError(f"run {run + 1}: B did not answer {new_ip} within"
                                   f" {args.timeout:.0f} s of the kill")
            elapsed = seen - killed
            samples.append(elapsed)
            now_on = broker_in_use(observe["west"])
            print(f"# run {run + 1}: killed broker {brokers.index(victim) + 1}"
                  f" ({victim.port}); B answered the change after {elapsed:.3f} s;"
                  f" B now on {now_on}", flush=True)
            victim.start()
            has_retained(victim, timeout=60)
        figure("broker-failover-seconds", median(samples))
        figure("broker-failover-max-seconds", max(samples))
        figure("broker-failover-runs", len(samples))


if __name__ == "__main__":
    main()
