"""Outages as they really happen (issue #12): what a client sees, in figures.

Three fake Kubernetes API servers (tests/fakekube, in this process) feed the real
feddns CLI (a subprocess) configured with the defaults (only the listen addresses
are set); a client asks ``web.shop.svc.clusterset.local A`` over UDP. Four
scenarios, each run ``--runs`` times:

* ``partition``: one API server goes silent (requests read, never answered; open
  watches get nothing more). The client asks every 100 ms; the time until that
  cluster's address leaves the answer is one sample.
  Prints ``partition-failover-seconds`` (median; goal under 10 s).
* ``blip``: one API server refuses connections for 1.5 s (its watches break), then
  accepts again. The client asks every 100 ms from the fault until 8 s after it and
  counts answers (addresses or TTL) that differ from the answer before the fault.
  Prints ``blip-answer-changes`` (total over the runs; goal 0).
* ``restart``: feddns starts with one of the three API servers refusing connections
  since before the start and no snapshot. From the process start until ``/readyz`` is
  200 and an unknown name answers NXDOMAIN is one sample.
  Prints ``restart-during-outage-ready-seconds`` (median; goal ``sync_timeout`` + 1 s,
  16 s with the defaults).
* ``isolation``: all three API servers go silent 0.25 s apart (within 0.5 s: what
  feddns sees when its own network fails). The client asks every 50 ms until every
  answer carries the stale TTL, and counts answers holding fewer clusters than before.
  Prints ``isolation-narrowed-answers`` (total over the runs; goal 0).

    .venv/bin/python -m bench.outages [--runs 5] [--only partition,blip,restart,isolation]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import yaml

from bench.harness import REPO, figure, median, stop_process
from tests.fakekube import FakeFederation, make_endpointslice, make_service
from tests.ports import free_port

NAME = "web.shop.svc.clusterset.local"
UNKNOWN = "no-such-service.shop.svc.clusterset.local"
CLUSTERS = ("east", "west", "north")
ALL = {"10.96.0.1", "10.96.0.2", "10.96.0.3"}
SCENARIOS = ("partition", "blip", "restart", "isolation")


def answer(port: int, name: str = NAME) -> tuple[str, frozenset[str], frozenset[int]]:
    """(rcode, addresses, TTLs) of one UDP query ("TIMEOUT" when none came)."""
    try:
        reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port,
                              timeout=0.5)
    except Exception:
        return "TIMEOUT", frozenset(), frozenset()
    return (dns.rcode.to_text(reply.rcode()),
            frozenset(rd.address for rrset in reply.answer for rd in rrset),
            frozenset(rrset.ttl for rrset in reply.answer))


def readyz(port: int) -> int:
    """The status of ``/readyz`` (0 when the listener does not answer yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def until(predicate: object, *, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` (a callable) until true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False


class Setup:
    """Three fake clusters with ``web`` in each, and the config of a feddns using them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fed = FakeFederation(CLUSTERS, directory=directory / "clusters")

    def __enter__(self) -> Setup:
        self.fed.start()
        for i, cluster in enumerate(self.fed, start=1):
            cluster.apply_service(make_service("shop", "web", cluster_ips=[f"10.96.0.{i}"]))
            cluster.apply_endpointslice(make_endpointslice(
                "shop", "web-1", "web", endpoints=[{"addresses": [f"10.{i}.0.1"]}]))
        return self

    def __exit__(self, *exc: object) -> None:
        self.fed.stop()

    def config(self, observe_port: int) -> Path:
        """Default settings: only where to listen, and the clusters."""
        path = self.directory / "feddns.yaml"
        path.write_text(yaml.safe_dump({
            "federation": "bench",
            "observe": {"listen": f"127.0.0.1:{observe_port}"},
            "clusters": [{"name": c.name, "region": "r1", "zones": ["z1"],
                          "source": {"type": "kubernetes",
                                     "kubeconfig": str(self.fed.kubeconfig),
                                     "context": c.name}} for c in self.fed],
        }))
        return path

    @contextlib.contextmanager
    def feddns(self) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
        """The real CLI on free ports: (process, DNS port, observe port)."""
        port, observe = free_port(), free_port()
        proc = subprocess.Popen([sys.executable, "-m", "feddns", "serve", "-c",
                                 str(self.config(observe)), "--listen", f"127.0.0.1:{port}",
                                 "--log-level", "warning"], cwd=REPO)
        try:
            yield proc, port, observe
        finally:
            stop_process(proc, timeout=15)


def readmitted(port: int) -> bool:
    """Every cluster answered with the fresh TTL (readmission takes 10 s by default)."""
    rcode, addresses, ttls = answer(port)
    return rcode == "NOERROR" and addresses == ALL and ttls == frozenset({5})


def partition(setup: Setup, runs: int) -> None:
    samples = []
    with setup.feddns() as (_, port, _):
        for run in range(runs):
            if not until(lambda: readmitted(port), timeout=60):
                raise RuntimeError("the federation did not come back")
            east = setup.fed["east"]
            east.partition()
            lost_at = time.monotonic()
            while "10.96.0.1" in answer(port)[1] and time.monotonic() < lost_at + 120:
                time.sleep(0.1)  # the client asks every 100 ms
            elapsed = time.monotonic() - lost_at
            east.heal()
            print(f"# partition run {run + 1}: east left the answer after {elapsed:.2f} s",
                  flush=True)
            samples.append(elapsed)
    figure("partition-failover-seconds", round(median(samples), 3))


def blip(setup: Setup, runs: int) -> None:
    total = 0
    with setup.feddns() as (_, port, _):
        for run in range(runs):
            if not until(lambda: readmitted(port), timeout=60):
                raise RuntimeError("the federation did not come back")
            before = answer(port)
            east = setup.fed["east"]
            east.refuse()
            started = time.monotonic()
            accepted = False
            changed = asked = 0
            while time.monotonic() - started < 8.0:
                if not accepted and time.monotonic() - started >= 1.5:
                    east.accept()
                    accepted = True
                asked += 1
                changed += answer(port) != before
                time.sleep(0.1)  # the client asks every 100 ms
            print(f"# blip run {run + 1}: {changed} of {asked} answers changed", flush=True)
            total += changed
    figure("blip-answer-changes", total)


def restart(setup: Setup, runs: int) -> None:
    samples = []
    down = setup.fed["north"]
    down.refuse()
    try:
        for run in range(runs):
            started = time.monotonic()
            with setup.feddns() as (_, port, observe):
                ok = until(lambda: readyz(observe) == 200
                           and answer(port, UNKNOWN)[0] == "NXDOMAIN", timeout=120,
                           interval=0.05)
                elapsed = time.monotonic() - started
                if not ok:
                    raise RuntimeError("never ready")
                print(f"# restart run {run + 1}: ready, NXDOMAIN after {elapsed:.2f} s",
                      flush=True)
                samples.append(elapsed)
    finally:
        down.accept()
    figure("restart-during-outage-ready-seconds", round(median(samples), 3))
    figure("restart-during-outage-sync-timeout-seconds", 15.0)


def isolation(setup: Setup, runs: int) -> None:
    total = 0
    with setup.feddns() as (_, port, _):
        for run in range(runs):
            if not until(lambda: readmitted(port), timeout=60):
                raise RuntimeError("the federation did not come back")
            for cluster in setup.fed:
                cluster.partition()
                time.sleep(0.25)  # the spread of the losses, not a synchronisation
            started = time.monotonic()
            narrowed = asked = 0
            stale_since: float | None = None
            while time.monotonic() - started < 30.0:
                rcode, addresses, ttls = answer(port)
                asked += 1
                narrowed += rcode != "NOERROR" or len(addresses) < len(ALL)
                if ttls == frozenset({30}) and stale_since is None:
                    stale_since = time.monotonic()
                if stale_since is not None and time.monotonic() - stale_since > 2.0:
                    break  # every cluster stale, answered alike: nothing can narrow now
                time.sleep(0.05)  # the client asks every 50 ms
            for cluster in setup.fed:
                cluster.heal()
            print(f"# isolation run {run + 1}: {narrowed} of {asked} answers narrowed",
                  flush=True)
            total += narrowed
    figure("isolation-narrowed-answers", total)


def main() -> None:
    """Run the chosen scenarios and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help="comma-separated scenarios (default: all)")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {SCENARIOS}")
    with tempfile.TemporaryDirectory() as tmp, Setup(Path(tmp)) as setup:
        for name in chosen:
            globals()[name](setup, args.runs)


if __name__ == "__main__":
    main()
