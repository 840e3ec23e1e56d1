"""Scale: a federation of 50 clusters x 2,000 services x 10 endpoints (1,000,000 endpoints).

Measures, with the data built directly as model objects (what the Kubernetes
and bus sources produce after conversion):

* ``full-compile-seconds-1m``: compiling every service from an empty table;
* ``recompile-one-service-ms``: one endpoint of one service changes (median of 50);
* ``rss-mib-at-1m-endpoints``, ``rss-bytes-per-endpoint``: a real ``feddns serve``
  process holding the federation (loaded from a warm-start snapshot, sources
  unreachable), after every service is compiled and a sample of names answered;
  the per-endpoint figure subtracts the RSS of the same process serving nothing.

    .venv/bin/python -m bench.scale [--clusters 50 --services 2000 --endpoints 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query

from bench import dataset
from bench.harness import REPO, figure, stop_process
from feddns.config import Settings
from feddns.model.registry import Registry
from feddns.model.services import ClusterSnapshot, Endpoint, Port, Service, ServiceType
from feddns.runtime.options import table_options
from feddns.sources import snapshot
from feddns.table.compiler import sync_table
from feddns.table.table import AnswerTable
from tests.ports import free_port


def build(shape: dataset.Shape) -> dict[str, ClusterSnapshot]:
    """The federation as model objects."""
    out = {}
    for c in range(shape.clusters):
        name = dataset.cluster_name(c)
        services = []
        for i in range(shape.services):
            svc, ns, headless = f"svc-{i}", f"ns-{i % shape.namespaces}", i % 10 == 0
            eps = tuple(Endpoint(dataset.pod_ip(c, i, e), zone=f"zone-{c}",
                                 hostname=f"{svc}-{e}" if headless else None)
                        for e in range(shape.endpoints))
            services.append(Service(ns, svc, ServiceType.HEADLESS if headless
                                    else ServiceType.CLUSTER_IP,
                                    cluster_ips=() if headless else (dataset.cluster_ip(c, i),),
                                    ports=(Port("http", 80),), endpoints=eps))
        out[name] = ClusterSnapshot.from_services(name, services)
    return out


def rss_mib(pid: int) -> float:
    """Resident set size of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve_and_measure(config: Path, probes: list[str], *, timeout: float = 900) -> float:
    """Start feddns; once every probe answers and RSS settles, return RSS (MiB)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "feddns", "serve", "-c", str(config),
                             "--listen", f"127.0.0.1:{port}", "--log-level", "warning"],
                            cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        pending = list(probes)
        while pending and time.monotonic() < deadline:
            try:
                reply = dns.query.udp(dns.message.make_query(pending[-1], "A"), "127.0.0.1",
                                      port=port, timeout=1)
                if reply.answer:
                    pending.pop()
                    continue
            except Exception:
                pass
            time.sleep(0.2)
        if pending:
            raise RuntimeError(f"{len(pending)} names never answered")
        last = 0.0
        for _ in range(120):  # until background compilation has finished (RSS stable)
            time.sleep(1)
            now = rss_mib(proc.pid)
            if abs(now - last) < 1:
                break
            last = now
        return rss_mib(proc.pid)
    finally:
        stop_process(proc, timeout=30)


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--endpoints", type=int, default=10)
    args = parser.parse_args()
    shape = dataset.Shape(clusters=args.clusters, services=args.services,
                          endpoints=args.endpoints)
    total = shape.clusters * shape.services * shape.endpoints
    t0 = time.perf_counter()
    data = build(shape)
    print(f"# built {total} endpoints in {time.perf_counter() - t0:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg = dataset.feddns_config(shape, folder / "unused.json")
        for c in cfg["clusters"]:  # every source unreachable: only the snapshot answers
            c["source"] = dataset.unreachable_source(folder, c["name"])
        cfg["snapshot"] = {"path": str(folder / "snapshot"), "interval": 3600}
        settings = Settings.model_validate(cfg)

        registry = Registry.for_clusters(data)
        table = AnswerTable(table_options(settings), serial=1)
        for snap in data.values():
            registry.replace(snap, now=1.0)
        t0 = time.perf_counter()
        sync_table(table, registry, wall_now=time.time(), now=2.0)
        full = time.perf_counter() - t0
        figure("endpoints", total)
        figure("full-compile-seconds-1m", full)
        times = []
        first = dataset.cluster_name(0)
        for n in range(50):
            key = ("ns-1", "svc-1")
            old = registry.clusters[first].snapshot.services[key]  # type: ignore[union-attr]
            eps = (old.endpoints[0]._replace(ready=n % 2 == 0), *old.endpoints[1:])
            registry.put_service(first, key, Service(old.namespace, old.name, old.type,
                                                     old.cluster_ips, (), old.ports, eps),
                                 now=3.0 + n)
            t0 = time.perf_counter()
            sync_table(table, registry, wall_now=time.time(), now=3.0 + n)
            times.append((time.perf_counter() - t0) * 1000)
        figure("recompile-one-service-ms", statistics.median(times))
        del table, registry

        saved = {name: snapshot.SavedCluster(snap, time.time()) for name, snap in data.items()}
        (folder / "snapshot").write_bytes(snapshot.encode(saved, federation="bench",
                                                          wall=time.time()))
        del saved, data
        config = folder / "feddns.yaml"
        config.write_text(json.dumps(cfg))
        probes = [f"svc-{i}.ns-{i % shape.namespaces}.svc.clusterset.local"
                  for i in range(0, shape.services, max(1, shape.services // 50))]
        full_rss = serve_and_measure(config, probes)
        empty = dict(cfg, snapshot={"path": str(folder / "none"), "interval": 3600})
        empty_config = folder / "empty.yaml"
        empty_config.write_text(json.dumps(empty))
        base_rss = _empty_rss(empty_config)
        figure("rss-mib-at-1m-endpoints", full_rss)
        figure("rss-mib-empty", base_rss)
        figure("scale-rss-bytes-per-endpoint", (full_rss - base_rss) * 2**20 / total)


def _empty_rss(config: Path) -> float:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "feddns", "serve", "-c", str(config),
                             "--listen", f"127.0.0.1:{port}", "--log-level", "error"],
                            cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                dns.query.udp(dns.message.make_query("clusterset.local", "SOA"), "127.0.0.1",
                              port=port, timeout=0.5)
                break
            except Exception:
                time.sleep(0.1)
        time.sleep(2)
        return rss_mib(proc.pid)
    finally:
        stop_process(proc, timeout=30)


if __name__ == "__main__":
    main()
