"""Weights through a real Unbound: how far the clients of many caches stray from the weights.

A feddns subprocess serves ``web`` in three clusters weighted 2:1:1; a real Unbound
forwards the zone to it. One *fill*: a client query fills Unbound's cache from feddns,
``--clients`` clients in all read it from the cache (random query IDs, seeded), then the
name is flushed (``unbound-control flush``), as its TTL running out does. The fills stand
for that many caches in front of feddns. For each answer mode, the share of clients
whose first record is each cluster is compared with the weights; prints

* ``weighted-share-error-percent-through-unbound``: the ``subset`` mode's largest
  deviation from a cluster's weighted share, relative to that share, in percent
  (median of ``--runs``; goal: under 10);
* ``weighted-share-error-points-through-unbound``: the same in percentage points;
* ``ordered-share-error-percent-through-unbound``: the default ``ordered`` mode's, for
  comparison (Unbound reshuffles the RRset it keeps: the weights are lost).

    .venv/bin/python -m bench.weighted_unbound [--fills 3000] [--clients 3] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bench.harness import feddns_server, figure, median
from tests.localdns import shares_through_cache, unbound_forwarder
from tests.ports import free_port

WEB = "web.shop.svc.clusterset.local."
CLUSTER_IP = {"east": "10.96.1.10", "middle": "10.96.2.10", "west": "10.96.3.10"}
WEIGHTS = {"east": 2, "middle": 1, "west": 1}


def write_config(folder: Path, mode: str) -> Path:
    """The federation: ``web`` in three clusters, weighted, in answer mode ``mode``."""
    data = folder / "services.yaml"
    data.write_text(yaml.safe_dump({"clusters": {
        c: {"services": [{"namespace": "shop", "name": "web", "cluster_ips": [ip],
                          "ports": [{"name": "http", "port": 80}],
                          "endpoints": [{"address": ip.replace("10.96", "10.200")}]}]}
        for c, ip in CLUSTER_IP.items()}}))
    config: dict[str, Any] = {
        "federation": "bench",
        "observe": {"listen": None},
        "selection": {"answer_mode": mode},
        "services": [{"namespace": "shop", "name": "web", "weights": WEIGHTS}],
        "clusters": [{"name": c, "region": "r1", "zones": ["z1"],
                      "source": {"type": "static", "file": str(data), "poll_interval": 0}}
                     for c in CLUSTER_IP],
    }
    path = folder / f"feddns-{mode}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def errors(counts: dict[str, int]) -> tuple[float, float, dict[str, float]]:
    """(largest relative deviation %, largest deviation in points, shares per cluster)."""
    total = sum(counts.values())
    of = {ip: c for c, ip in CLUSTER_IP.items()}
    got = {of[ip]: n / total for ip, n in counts.items()}
    want = {c: w / sum(WEIGHTS.values()) for c, w in WEIGHTS.items()}
    relative = max(abs(got.get(c, 0.0) - w) / w for c, w in want.items()) * 100
    points = max(abs(got.get(c, 0.0) - w) for c, w in want.items()) * 100
    return relative, points, got


def run(mode: str, *, fills: int, clients: int, seed: int) -> tuple[float, float]:
    """One measurement of ``mode``: its (relative %, points) errors."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        port = free_port()
        with feddns_server(write_config(folder, mode), port, cpu=None, probe=WEB), \
                unbound_forwarder(folder, port, probe=WEB) as unbound:
            counts = shares_through_cache(unbound, WEB, fills=fills, clients_per_fill=clients,
                                          seed=seed)
    relative, points, got = errors(counts)
    print(f"# {mode} (seed {seed}): " + ", ".join(f"{c} {v:.1%}" for c, v in sorted(got.items()))
          + f"; weights 2:1:1 = 50/25/25 %; error {relative:.1f} % ({points:.1f} points)",
          flush=True)
    return relative, points


def main() -> None:
    """Measure both answer modes and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fills", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    subset = [run("subset", fills=args.fills, clients=args.clients, seed=13 + i)
              for i in range(args.runs)]
    ordered = [run("ordered", fills=max(args.fills // 5, 100), clients=args.clients,
                   seed=13 + i) for i in range(args.runs)]
    figure("weighted-share-error-percent-through-unbound", median([r for r, _ in subset]))
    figure("weighted-share-error-points-through-unbound", median([p for _, p in subset]))
    figure("ordered-share-error-percent-through-unbound", median([r for r, _ in ordered]))
    print(f"# python {sys.version.split()[0]}; fills {args.fills}, clients per fill "
          f"{args.clients}, runs {args.runs}", flush=True)


if __name__ == "__main__":
    main()
