"""Shared benchmark plumbing: start feddns on a free port, run dnsperf, read its figures.

Why it exists: every benchmark must measure the same way (pinned cores, warm-up,
medians of several runs, the server's own CPU time), so the mechanics live here once.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent



def taskset(cpu: int | None) -> list[str]:
    """A ``taskset -c CPU`` prefix when pinning is possible (two or more CPUs)."""
    if cpu is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(cpu)]


def wait_for_dns(port: int, name: str, timeout: float = 60.0) -> None:
    """Poll until the server on ``port`` answers ``name`` (bounded)."""
    import dns.message
    import dns.query

    deadline = time.monotonic() + timeout
    q = dns.message.make_query(name, "A")
    while time.monotonic() < deadline:
        try:
            reply = dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5)
            if reply.rcode() == 0 and reply.answer:
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not answer {name} within {timeout} s")


def cpu_seconds(pid: int) -> float:
    """utime+stime of a process and its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@contextlib.contextmanager
def feddns_server(
    config: Path, port: int, *, cpu: int | None = 1, probe: str = "web.shop.svc.clusterset.local"
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``feddns serve`` on ``config`` at 127.0.0.1:port until the block ends."""
    cmd = [*taskset(cpu), sys.executable, "-m", "feddns", "serve", "-c", str(config),
           "--listen", f"127.0.0.1:{port}", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=REPO)
    try:
        wait_for_dns(port, probe)
        yield proc
    finally:
        stop_process(proc, timeout=10)


def stop_process(proc: subprocess.Popen[Any], *, timeout: float = 15) -> None:
    """SIGTERM a process this benchmark started; SIGKILL it after ``timeout`` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class PerfResult:
    """One dnsperf run."""

    qps: float
    sent: int
    completed: int
    lost: int
    latency_avg_ms: float
    latency_max_ms: float
    server_cpu_s: float | None = None

    @property
    def server_us_per_query(self) -> float | None:
        """Server CPU microseconds per answered query."""
        if self.server_cpu_s is None or not self.completed:
            return None
        return self.server_cpu_s / self.completed * 1e6


def run_dnsperf(port: int, queryfile: Path, *, seconds: float | None, cpu: int | None = 0,
                clients: int = 10, outstanding: int = 100, mode: str = "udp",
                server_pid: int | None = None, passes: int | None = None,
                extra: Sequence[str] = ()) -> PerfResult:
    """One dnsperf run against 127.0.0.1:port.

    ``seconds`` long, or (``seconds`` None) ``passes`` times through the query file;
    ``extra`` is passed on (``-O num-queries-per-conn=10``).
    """
    exe = shutil.which("dnsperf")
    if exe is None:
        raise RuntimeError("dnsperf is not installed (Debian package dnsperf; `make bench-deps`)")
    limit = ["-l", str(seconds)] if seconds is not None else ["-n", str(passes or 1)]
    cmd = [*taskset(cpu), exe, "-s", "127.0.0.1", "-p", str(port), "-d", str(queryfile),
           *limit, "-c", str(clients), "-q", str(outstanding), "-t", "2", "-m", mode, *extra]
    before = cpu_seconds(server_pid) if server_pid else None
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    after = cpu_seconds(server_pid) if server_pid else None

    def grab(pattern: str) -> str:
        m = re.search(pattern, out)
        if not m:
            raise RuntimeError(f"unexpected dnsperf output:\n{out}")
        return m.group(1)

    return PerfResult(
        qps=float(grab(r"Queries per second:\s+([\d.]+)")),
        sent=int(grab(r"Queries sent:\s+(\d+)")),
        completed=int(grab(r"Queries completed:\s+(\d+)")),
        lost=int(grab(r"Queries lost:\s+(\d+)")),
        latency_avg_ms=float(grab(r"Average Latency \(s\):\s+([\d.]+)")) * 1000,
        latency_max_ms=float(grab(r"Average Latency \(s\):.*max ([\d.]+)")) * 1000,
        server_cpu_s=(after - before) if before is not None and after is not None else None,
    )


def median(values: list[float]) -> float:
    """The median (the machine is noisy: never quote a single run)."""
    return statistics.median(values)


def figure(name: str, value: float | int | str) -> None:
    """Print one ``name: value`` figure line (the format bench/RESULTS.md keeps)."""
    if isinstance(value, float):
        value = f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:.0f}"
    print(f"{name}: {value}", flush=True)
