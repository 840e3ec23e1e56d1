"""The soak test: a feddns on a generated federation, verified by ``feddns soak`` with churn.

Starts ``feddns serve`` on a static federation (3 clusters x 30 services, one in ten
headless), then runs ``feddns soak`` against it for ``--duration`` seconds while the
soak rewrites the data file between rounds (endpoints flipped, added, removed). The
soak prints a line per round and the figures ``soak-mismatches``,
``soak-rss-growth-percent`` (median RSS of the last 5 minutes against the first 5,
after warm-up) and ``soak-p99-drift-percent``; it exits non-zero on any mismatch or
growth beyond the thresholds.

    .venv/bin/python -m bench.soak --duration 1800
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench import dataset
from bench.harness import REPO, stop_process, wait_for_dns
from tests.ports import free_port


def main() -> None:
    """Run the soak; exit with its exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=1800)
    parser.add_argument("--services", type=int, default=30)
    args = parser.parse_args()
    shape = dataset.Shape(clusters=3, services=args.services, endpoints=3)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = folder / "services.yaml"
        data.write_text(yaml.safe_dump(dataset.static_data(shape)))
        cfg = dataset.feddns_config(shape, data)
        for cluster in cfg["clusters"]:
            cluster["source"]["poll_interval"] = 0.5
        port, http = free_port(), free_port()
        cfg["observe"] = {"listen": f"127.0.0.1:{http}"}
        config = folder / "feddns.yaml"
        config.write_text(json.dumps(cfg))
        server = subprocess.Popen([sys.executable, "-m", "feddns", "serve", "-c", str(config),
                                   "--listen", f"127.0.0.1:{port}", "--log-level", "warning"],
                                  cwd=REPO)
        try:
            wait_for_dns(port, "svc-1.ns-1.svc.clusterset.local", timeout=60)
            soak = subprocess.run(
                [sys.executable, "-m", "feddns", "soak", "--server", f"127.0.0.1:{port}",
                 "--url", f"http://127.0.0.1:{http}", "--duration", str(args.duration),
                 "--churn", str(data)], cwd=REPO, check=False)
        finally:
            stop_process(server, timeout=15)
    sys.exit(soak.returncode)


if __name__ == "__main__":
    main()
