"""Failover time: a cluster's API is lost -> its address leaves the answers.

Two fake Kubernetes API servers (tests/fakekube, in this process) feed a feddns
subprocess with the default selection settings (hold-down 3 s). A client asks
every 100 ms; the cluster's API server then stops accepting connections (and its
open watches break), and the time until the client's answer no longer holds that
cluster's address is one sample. The cluster is then restored and readmitted
before the next sample. Prints ``failover-seconds`` (median; goal: hold-down + 1 s,
under 5 s with the default hold-down).

    .venv/bin/python -m bench.failover [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query

from bench.harness import REPO, figure, median, stop_process, wait_for_dns
from tests.fakekube import FakeFederation, make_endpointslice, make_service
from tests.ports import free_port

NAME = "web.shop.svc.clusterset.local"


def addresses(port: int) -> set[str]:
    """The A addresses answered now (empty on timeout)."""
    try:
        reply = dns.query.udp(dns.message.make_query(NAME, "A"), "127.0.0.1", port=port,
                              timeout=0.5)
    except Exception:
        return set()
    return {rd.address for rrset in reply.answer for rd in rrset}


def main() -> None:
    """Measure and print the figure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeFederation(("east", "west"),
                                                              directory=Path(tmp)) as fed:
        for i, cluster in enumerate(fed):
            cluster.apply_service(make_service("shop", "web", cluster_ips=[f"10.96.0.{i + 1}"]))
            cluster.apply_endpointslice(make_endpointslice(
                "shop", "web-1", "web", endpoints=[{"addresses": [f"10.{i + 1}.0.1"]}]))
        kubeconfig = fed.write_kubeconfig(Path(tmp) / "kubeconfig")
        config = Path(tmp) / "feddns.yaml"
        config.write_text(json.dumps({
            "federation": "bench",
            "clusters": [{"name": c.name, "region": "r1", "zones": ["z1"],
                          "source": {"type": "kubernetes", "kubeconfig": str(kubeconfig),
                                     "context": c.name, "backoff_max": 1.0}}
                         for c in fed],
        }))
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "feddns", "serve", "-c", str(config),
                                 "--listen", f"127.0.0.1:{port}", "--log-level", "warning"],
                                cwd=REPO)
        try:
            wait_for_dns(port, NAME)
            both = {"10.96.0.1", "10.96.0.2"}
            samples = []
            for run in range(args.runs):
                deadline = time.monotonic() + 60
                while addresses(port) != both and time.monotonic() < deadline:
                    time.sleep(0.1)  # readmitted (readmit_after 10 s by default)
                lost_at = time.monotonic()
                fed["east"].refuse()
                fed["east"].drop_watches()
                seen = both
                while "10.96.0.1" in seen and time.monotonic() < lost_at + 30:
                    time.sleep(0.1)  # the client asks every 100 ms
                    seen = addresses(port)
                elapsed = time.monotonic() - lost_at
                print(f"# run {run + 1}: east left the answer after {elapsed:.2f} s", flush=True)
                samples.append(elapsed)
                fed["east"].accept()
            figure("failover-seconds", median(samples))
            figure("failover-hold-down-seconds", 3.0)
        finally:
            stop_process(proc, timeout=15)


if __name__ == "__main__":
    main()
