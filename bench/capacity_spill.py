"""Capacity-aware locality: how overloaded the worst zone is when one zone is small.

Three clusters in three zones of one region serve ``web``: zone a has a tenth of the
ready endpoints (10 of 100), and a third of the queries come from each zone's clients
(source addresses 127.0.1.1, 127.0.2.1, 127.0.3.1, one cluster network each). A feddns
subprocess with ``selection.capacity_aware`` measures that demand itself (its answers
per client place, ``demand_window`` 3 s) and allocates; then ``--queries`` queries per
zone (random IDs, seeded; the zones interleaved, so the demand stays a third each) are
asked, and each answer's first record is the cluster the client goes to. A zone's load
is the demand that reaches it; prints

* ``capacity-spill-overload-percent``: the worst zone's demand/capacity ratio over the
  federation's, in percent above 100 (median of ``--runs``; goal: under 20);
* ``capacity-spill-kept-percent``: the share of zone a's own clients it keeps;
* ``nearest-tier-overload-percent``: the same scenario without capacity awareness
  (the nearest tier takes everything: zone a gets a third of the demand).

    .venv/bin/python -m bench.capacity_spill [--queries 3000] [--runs 3]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import yaml

from bench.harness import feddns_server, figure, median
from tests.ports import free_port

WEB = "web.shop.svc.clusterset.local."
ZONES = {"a": 10, "b": 45, "c": 45}
"""Cluster (one per zone) -> ready endpoints."""
SOURCE = {z: f"127.0.{i}.1" for i, z in enumerate(ZONES, start=1)}
CLUSTER_IP = {z: f"10.96.{i}.10" for i, z in enumerate(ZONES, start=1)}


def write_config(folder: Path, *, capacity_aware: bool) -> Path:
    data = folder / "services.yaml"
    data.write_text(yaml.safe_dump({"clusters": {
        z: {"services": [{"namespace": "shop", "name": "web", "cluster_ips": [CLUSTER_IP[z]],
                          "ports": [{"name": "http", "port": 80}],
                          "endpoints": [{"address": f"10.{i}.{n // 250}.{n % 250 + 1}",
                                         "zone": f"z-{z}"} for n in range(ready)]}]}
        for i, (z, ready) in enumerate(ZONES.items(), start=1)}}))
    config: dict[str, Any] = {
        "federation": "bench",
        "observe": {"listen": None},
        "selection": {"capacity_aware": capacity_aware, "demand_window": 3.0},
        "reverse": {"derive": False},
        "clusters": [{"name": z, "region": "r1", "zones": [f"z-{z}"],
                      "networks": [{"cidr": f"{SOURCE[z].rsplit('.', 1)[0]}.0/24",
                                    "zone": f"z-{z}"}],
                      "source": {"type": "static", "file": str(data), "poll_interval": 0}}
                     for z in ZONES],
    }
    path = folder / "feddns.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def first_records(port: int, zone: str, n: int, rng: random.Random) -> Counter[str]:
    """Which cluster leads each of ``n`` answers to clients of ``zone``."""
    of = {ip: z for z, ip in CLUSTER_IP.items()}
    counts: Counter[str] = Counter()
    for _ in range(n):
        q = dns.message.make_query(WEB, "A")
        q.id = rng.randrange(65536)
        reply = dns.query.udp(q, "127.0.0.1", port=port, source=SOURCE[zone], timeout=3)
        counts[of[reply.answer[0][0].to_text()]] += 1
    return counts


def overload(leads: dict[str, Counter[str]]) -> tuple[float, float]:
    """(worst zone's load/capacity over the federation's, in % above 100; a's kept %)."""
    demand = {z: 1 / len(ZONES) for z in ZONES}  # each zone a third of the queries
    total_capacity = sum(ZONES.values())
    load = dict.fromkeys(ZONES, 0.0)
    for z, counts in leads.items():
        n = sum(counts.values())
        for to, k in counts.items():
            load[to] += demand[z] * k / n
    ratio = max(load[z] / (ZONES[z] / total_capacity) for z in ZONES)
    kept = leads["a"]["a"] / sum(leads["a"].values()) * 100
    return (ratio - 1) * 100, kept


def run(*, capacity_aware: bool, queries: int, seed: int) -> tuple[float, float]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        with feddns_server(write_config(Path(tmp), capacity_aware=capacity_aware), port,
                           cpu=None, probe=WEB):
            # Let feddns measure the demand: a third from each zone, for two windows.
            deadline = time.monotonic() + 6.0
            while time.monotonic() < deadline:
                for z in ZONES:
                    first_records(port, z, 20, rng)
            # Then measure, still a third from each zone (interleaved: the demand feddns
            # measures meanwhile must stay the scenario's).
            leads: dict[str, Counter[str]] = {z: Counter() for z in ZONES}
            for _ in range(0, queries, 20):
                for z in ZONES:
                    leads[z].update(first_records(port, z, 20, rng))
    over, kept = overload(leads)
    print(f"# capacity_aware={capacity_aware} (seed {seed}): " + "; ".join(
        f"zone {z} -> " + ", ".join(f"{to} {k / sum(c.values()):.1%}"
                                    for to, k in sorted(c.items()))
        for z, c in leads.items()) + f"; overload {over:.1f} %, a keeps {kept:.1f} %",
          flush=True)
    return over, kept


def main() -> None:
    """Measure with and without capacity awareness and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    aware = [run(capacity_aware=True, queries=args.queries, seed=7 + i)
             for i in range(args.runs)]
    nearest = run(capacity_aware=False, queries=max(args.queries // 10, 100), seed=7)
    figure("capacity-spill-overload-percent", median([o for o, _ in aware]))
    figure("capacity-spill-kept-percent", median([k for _, k in aware]))
    figure("nearest-tier-overload-percent", nearest[0])


if __name__ == "__main__":
    main()
