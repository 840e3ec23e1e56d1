"""The federation page in headless Chromium: first paint at 10,000 services, update after a loss.

Why it exists: the page must stay usable at the sizes feddns serves and show an
outage while it matters. Two figures, each the median of ``--runs``:

* ``ui-first-paint-ms-10k-services``: a generated federation (bench/dataset.py,
  3 clusters x 10,000 services) served by the real CLI (a subprocess, pinned to
  CPU 1); Debian's headless Chromium (pinned to CPU 0) loads ``/ui`` afresh, and
  the figure is the page's own ``performance`` mark ``matrix-shown`` (set when the
  first page of the matrix is in the DOM), counted from the navigation's start.
* ``ui-update-seconds-after-cluster-loss``: the demo's two east clusters (static)
  plus ``west`` behind the in-repo fake Kubernetes API server (in this process),
  default settings; with the page open, west's API server refuses connections, and
  the figure is the time until west's row on the page says ``stale`` (the DOM is
  read every 10 ms). Goal: under hold-down + 3 s.

    .venv/bin/python -m bench.ui [--runs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from bench import dataset
from bench.harness import REPO, figure, median, stop_process, taskset, wait_for_dns
from tests import browser
from tests.fakekube import FakeFederation, make_endpointslice, make_service
from tests.ports import free_port

DEMO_DATA = REPO / "config" / "demo-services.yaml"


@contextlib.contextmanager
def feddns(config: Path, probe: str) -> Iterator[str]:
    """The real CLI on ``config``, pinned to CPU 1; yields the page's URL."""
    port, http = free_port(), free_port()
    proc = subprocess.Popen([*taskset(1), sys.executable, "-m", "feddns", "serve", "-c",
                             str(config), "--listen", f"127.0.0.1:{port}",
                             "--observe-listen", f"127.0.0.1:{http}", "--log-level", "error"],
                            cwd=REPO)
    try:
        wait_for_dns(port, probe, timeout=180)
        base = f"http://127.0.0.1:{http}"
        # The HTTP listener starts once DNS answers; the compile of a large federation goes
        # on in batches after the first answers: measure a server that is done with both.
        deadline = time.monotonic() + 180
        while not loaded(base):
            if time.monotonic() > deadline:
                raise RuntimeError("feddns did not finish loading within 180 s")
            time.sleep(0.1)
        yield f"{base}/ui"
    finally:
        stop_process(proc, timeout=15)


def loaded(base: str) -> bool:
    """True once ``/readyz`` is 200 and no service waits to be compiled."""
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=2) as resp:
            if resp.status != 200:
                return False
        with urllib.request.urlopen(f"{base}/debug/federation", timeout=5) as resp:
            view = json.load(resp)
    except OSError:
        return False
    services = {name for c in view["clusters"] for name in [c["name"]] if c["services"]}
    return bool(services) and view["table"]["services"] >= max(
        c["services"] for c in view["clusters"])


def poll(driver: Any, script: str, *, timeout: float, interval: float = 0.01) -> Any:
    """Run ``script`` in the page until it returns something true (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"the page did not show it within {timeout} s: {script}")


MATRIX_SHOWN = """
const mark = performance.getEntriesByName("matrix-shown")[0];
return mark ? mark.startTime : null;
"""


def first_paint(runs: int, services: int) -> list[float]:
    """Milliseconds from navigation start to the matrix shown, one per fresh load."""
    shape = dataset.Shape(clusters=3, regions=2, services=services, endpoints=2)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "services.json"
        data.write_text(json.dumps(dataset.static_data(shape)))
        config = Path(tmp) / "feddns.yaml"
        config.write_text(json.dumps(dataset.feddns_config(shape, data)))
        with feddns(config, "svc-1.ns-1.svc.clusterset.local") as url, browser.chromium() as d:
            d.get(url)  # a first load: the answer table's services are listed once
            poll(d, MATRIX_SHOWN, timeout=60)
            for i in range(runs):
                d.get("about:blank")
                d.get(url)
                ms = float(poll(d, MATRIX_SHOWN, timeout=60))
                rows = d.execute_script("return document.querySelectorAll("
                                        "'#matrix-table tbody tr').length")
                total = d.find_element("id", "matrix-count").text
                print(f"# first paint run {i + 1}: {ms:.0f} ms ({rows} rows; {total})",
                      flush=True)
                out.append(ms)
    return out


def west_is(state: str) -> str:
    """A script that is true while west's row shows ``state``."""
    return ("const row = document.querySelector('#cluster-table tr[data-cluster=\"west\"]');"
            f" return row !== null && row.dataset.state === '{state}';")


def update_after_loss(runs: int) -> tuple[list[float], float]:
    """Seconds from west's API server refusing to the page showing west stale."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        fed = FakeFederation(["west"], directory=Path(tmp) / "kube").start()
        try:
            west = fed["west"]
            west.apply_service(make_service("shop", "web", cluster_ips=["10.96.3.10"],
                                            ports=[{"name": "http", "port": 80}]))
            west.apply_endpointslice(make_endpointslice(
                "shop", "web-1", "web", endpoints=[{"addresses": ["10.3.1.11"]}]))
            config = Path(tmp) / "feddns.yaml"
            config.write_text(yaml.safe_dump({
                "federation": "bench", "dns": {"listen": ["127.0.0.1:5353"]},
                "clusters": [
                    *({"name": name, "region": "us-east", "zones": [zone],
                       "source": {"type": "static", "file": str(DEMO_DATA)}}
                      for name, zone in (("east-a", "us-east-1a"), ("east-b", "us-east-1b"))),
                    {"name": "west", "region": "us-west", "zones": ["us-west-2a"],
                     "source": {"type": "kubernetes", "kubeconfig": str(fed.kubeconfig),
                                "context": "west"}},
                ]}))
            with feddns(config, "web.shop.svc.clusterset.local") as url, \
                    browser.chromium() as d:
                d.get(url)
                for i in range(runs):
                    poll(d, west_is("fresh"), timeout=60)
                    west.refuse()
                    lost = time.monotonic()
                    poll(d, west_is("stale"), timeout=60)
                    seconds = time.monotonic() - lost
                    print(f"# update after loss run {i + 1}: {seconds:.3f} s", flush=True)
                    out.append(seconds)
                    west.accept()
        finally:
            fed.stop()
    return out, 3.0  # the default selection.hold_down


def main() -> None:
    """Measure both figures and print them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--services", type=int, default=10_000,
                        help="services of the first-paint federation (the figure is at 10,000)")
    args = parser.parse_args()
    if (reason := browser.missing()) is not None:
        raise SystemExit(reason)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})  # Chromium and its driver inherit CPU 0
    paints = first_paint(args.runs, args.services)
    name = ("ui-first-paint-ms-10k-services" if args.services == 10_000
            else f"ui-first-paint-ms-{args.services}-services")
    figure(name, median(paints))
    figure(f"{name}-max", max(paints))
    updates, hold_down = update_after_loss(args.runs)
    figure("ui-update-seconds-after-cluster-loss", median(updates))
    figure("ui-update-seconds-after-cluster-loss-max", max(updates))
    figure("ui-update-goal-seconds", hold_down + 3)
    print(f"# date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")


if __name__ == "__main__":
    main()
