"""Generate a federation dataset: feddns config + static data, an equivalent Knot zone, queries.

Why it exists: the throughput comparison is only fair if both servers hold the
same names and give answers of the same size, and the memory figures need a
federation of a chosen size; one generator makes all of them from one seed.

Shape: ``clusters`` clusters in ``regions`` regions (one zone each); ``services``
ClusterIP services present in every cluster with ``endpoints`` ready endpoints
each, plus one headless service per ``headless_every`` services whose endpoints
have hostnames. Each cluster's clients come from ``127.<10+i>.0.0/16`` so a load
generator bound to one of those loopback addresses is a client in that zone.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ORIGIN = "clusterset.local"


@dataclass(frozen=True)
class Shape:
    """The size of a generated federation."""

    clusters: int = 5
    regions: int = 2
    services: int = 2000
    endpoints: int = 3
    headless_every: int = 10
    namespaces: int = 20


def cluster_name(i: int) -> str:
    """The id of cluster ``i``."""
    return f"c{i:02d}"


def client_address(i: int) -> str:
    """A loopback address that feddns places in cluster ``i``'s zone."""
    return f"127.{10 + i}.0.1"


def _svc(i: int, shape: Shape) -> tuple[str, str, bool]:
    return f"svc-{i}", f"ns-{i % shape.namespaces}", i % shape.headless_every == 0


def cluster_ip(c: int, i: int) -> str:
    """Cluster ``c``'s cluster IP for service ``i``."""
    return f"10.{96 + c}.{i // 256}.{i % 256}"


def pod_ip(c: int, i: int, e: int) -> str:
    """Cluster ``c``'s endpoint ``e`` of service ``i``."""
    n = i * 16 + e
    return f"10.{c + 128}.{(n // 256) % 256}.{n % 256}" if n < 65536 else \
        f"10.{c + 160}.{(n // 256) % 256}.{n % 256}"


def static_data(shape: Shape) -> dict[str, Any]:
    """The static source file content."""
    clusters = {}
    for c in range(shape.clusters):
        services = []
        for i in range(shape.services):
            name, ns, headless = _svc(i, shape)
            eps = [{"address": pod_ip(c, i, e), "zone": f"zone-{c}"}
                   | ({"hostname": f"{name}-{e}"} if headless else {})
                   for e in range(shape.endpoints)]
            svc: dict[str, Any] = {"namespace": ns, "name": name,
                                   "ports": [{"name": "http", "port": 80}], "endpoints": eps}
            if headless:
                svc["type"] = "Headless"
            else:
                svc["cluster_ips"] = [cluster_ip(c, i)]
            services.append(svc)
        clusters[cluster_name(c)] = {"services": services}
    return {"clusters": clusters}


def feddns_config(shape: Shape, data_file: Path, *, max_records: int = 16) -> dict[str, Any]:
    """A feddns config serving the static data, with one client network per cluster."""
    return {
        "federation": "bench",
        "dns": {"listen": ["127.0.0.1:5353"], "max_records": max_records},
        "clusters": [
            {"name": cluster_name(c), "region": f"region-{c % shape.regions}",
             "zones": [f"zone-{c}"],
             "networks": [{"cidr": f"127.{10 + c}.0.0/16", "zone": f"zone-{c}"}],
             "source": {"type": "static", "file": str(data_file), "poll_interval": 0}}
            for c in range(shape.clusters)
        ],
    }


def unreachable_source(folder: Path, cluster: str) -> dict[str, Any]:
    """A Kubernetes source whose API server refuses connections (a closed loopback port).

    What a warm start measures against: the config is valid (feddns refuses to start
    on a config naming a missing data file), and the source can never deliver.
    """
    import socket

    kubeconfig = folder / "unreachable-kubeconfig"
    if not kubeconfig.exists():
        with socket.socket() as s:  # a port that was free a moment ago: nothing listens
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: dead, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
            "users: [{name: dead, user: {token: none}}]\n"
            "contexts: [{name: dead, context: {cluster: dead, user: dead}}]\n"
            "current-context: dead\n")
    return {"type": "kubernetes", "kubeconfig": str(kubeconfig), "context": "dead"}


def knot_zone(shape: Shape) -> str:
    """A zone with the records feddns answers to a client it cannot place (all clusters)."""
    lines = [
        f"$ORIGIN {ORIGIN}.",
        "$TTL 5",
        "@ 30 IN SOA ns hostmaster 1 3600 600 86400 5",
        "@ 30 IN NS ns",
        'dns-version 28800 IN TXT "1.0.0"',
    ]
    for i in range(shape.services):
        name, ns, headless = _svc(i, shape)
        owner = f"{name}.{ns}.svc"
        for c in range(shape.clusters):
            if headless:
                for e in range(shape.endpoints):
                    host = f"{name}-{e}.{cluster_name(c)}.{owner}"
                    lines.append(f"{host} IN A {pod_ip(c, i, e)}")
                    if c * shape.endpoints + e < 16:
                        lines.append(f"{owner} IN A {pod_ip(c, i, e)}")
                        lines.append(f"{owner} IN SRV 0 100 80 {host}")
                        lines.append(f"_http._tcp.{owner} IN SRV 0 100 80 {host}")
            else:
                lines.append(f"{owner} IN A {cluster_ip(c, i)}")
        if not headless:
            lines.append(f"{owner} IN SRV 0 100 80 {owner}")
            lines.append(f"_http._tcp.{owner} IN SRV 0 100 80 {owner}")
    return "\n".join(lines) + "\n"


def queries(shape: Shape, count: int, *, seed: int = 1) -> list[str]:
    """A realistic mix: 60 % A, 10 % AAAA (NODATA), 10 % SRV, 10 % headless, 10 % NXDOMAIN."""
    rnd = random.Random(seed)
    out = []
    for _ in range(count):
        i = rnd.randrange(shape.services)
        name, ns, _ = _svc(i, shape)
        owner = f"{name}.{ns}.svc.{ORIGIN}"
        roll = rnd.random()
        if roll < 0.6:
            out.append(f"{owner} A")
        elif roll < 0.7:
            out.append(f"{owner} AAAA")
        elif roll < 0.8:
            out.append(f"_http._tcp.{owner} SRV")
        elif roll < 0.9:
            j = rnd.randrange(0, shape.services, shape.headless_every)
            hname, hns, _ = _svc(j, shape)
            c = rnd.randrange(shape.clusters)
            out.append(f"{hname}-{rnd.randrange(shape.endpoints)}.{cluster_name(c)}."
                       f"{hname}.{hns}.svc.{ORIGIN} A")
        else:
            out.append(f"missing-{rnd.randrange(10**6)}.{ns}.svc.{ORIGIN} A")
    return out


def write(folder: Path, shape: Shape, *, query_count: int = 100_000) -> dict[str, Path]:
    """Write every artefact into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "services.json"
    data.write_text(json.dumps(static_data(shape)))
    config = folder / "feddns.yaml"
    config.write_text(json.dumps(feddns_config(shape, data)))  # JSON is valid YAML
    zone = folder / f"{ORIGIN}.zone"
    zone.write_text(knot_zone(shape))
    qfile = folder / "queries.txt"
    qfile.write_text("\n".join(queries(shape, query_count)) + "\n")
    return {"data": data, "config": config, "zone": zone, "queries": qfile}


def main() -> None:
    """Write a dataset of the given shape into a folder."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--endpoints", type=int, default=3)
    args = parser.parse_args()
    paths = write(args.folder, Shape(clusters=args.clusters, services=args.services,
                                     endpoints=args.endpoints))
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
