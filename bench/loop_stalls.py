"""What holds feddns's event loop while it serves at full load: every stall, with its cause.

Why it exists: ``loop-lag-max-ms-under-load`` (bench.perf_vs_knot) says *how long*
the loop was held; this says *by what*. feddns runs in this process
(``tests.support.ServerThread``, on uvloop like the CLI) on the perf_vs_knot
dataset, and dnsperf (pinned to CPU 0) loads it over UDP, then TCP, then short
TCP connections, while

* a heartbeat callback on the loop notes the time every millisecond, and a
  watchdog thread notices when it is late by more than ``--threshold`` ms and
  takes the loop thread's stack then (once per stall; a stall inside one C call
  that holds the GIL is seen when it ends, with the stack after it); the loop
  thread's run-queue delay (``/proc/self/task/TID/schedstat``) over the stall
  says whether the kernel had simply not run it: such a stall is counted as
  "[descheduled: ...]", whatever the stack, with who ran instead when the
  counters say so: ``ksoftirqd/1`` (the kernel's deferred packet processing on
  the loop's CPU), another thread of this process, or anything else. The
  watchdog shares CPU 1 with the loop: moved to CPU 0 it made stalls of its own
  (it took the GIL at the loop's ``sendto`` and was then preempted by dnsperf,
  which keeps CPU 0 busy, while holding it: 14 stalls of up to 11 ms "in"
  ``sendto`` in one run);
* ``gc.callbacks`` time every collection (which holds the GIL throughout);
* ``/metrics`` is read every ``--scrape`` seconds, as Prometheus would.

It prints the stalls grouped by their innermost feddns frame (or "gc generation
N", or "[outside Python]": the loop thread was not running Python, e.g. the
process was descheduled), with counts and the longest.

    .venv/bin/python -m bench.loop_stalls [--seconds 10] [--threshold 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import dataset
from bench.harness import figure, run_dnsperf, taskset
from feddns.config import load_settings
from tests.support import ServerThread

HEARTBEAT = 0.001


class Watchdog:
    """Notices loop stalls (a late heartbeat) and records what the loop thread was doing."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread_id: int, native_id: int, *,
                 threshold: float) -> None:
        self.loop = loop
        self.thread_id = thread_id
        self.schedstat = Path(f"/proc/self/task/{native_id}/schedstat")
        self.native_id = native_id
        self.softirqd = _find_task("ksoftirqd/1")
        self.threshold = threshold
        self.beat = time.perf_counter()
        self.stalls: list[tuple[float, str]] = []
        self.running = True
        self._thread = threading.Thread(target=self._watch, daemon=True, name="watchdog")
        loop.call_soon_threadsafe(self._heartbeat)

    def start(self) -> None:
        self._thread.start()

    def _heartbeat(self) -> None:
        self.beat = time.perf_counter()
        if self.running:
            self.loop.call_later(HEARTBEAT, self._heartbeat)

    def run_delay(self) -> float:
        """Seconds the loop thread has waited on a run queue (runnable, not running)."""
        return int(self.schedstat.read_text().split()[1]) / 1e9

    def others(self) -> tuple[float, float]:
        """CPU seconds run so far by ksoftirqd/1 and by this process's other threads."""
        soft = _runtime(self.softirqd) if self.softirqd is not None else 0.0
        mine = 0.0
        for task in Path("/proc/self/task").iterdir():
            if task.name not in (str(self.native_id), str(threading.get_native_id())):
                mine += _runtime(task / "schedstat")
        return soft, mine

    def _watch(self) -> None:
        cause: str | None = None
        started = delay = 0.0
        soft = mine = 0.0
        while self.running:
            time.sleep(self.threshold / 4)
            late = time.perf_counter() - self.beat - HEARTBEAT
            if late > self.threshold and cause is None:
                started = self.beat + HEARTBEAT
                delay = self.run_delay()
                soft, mine = self.others()
                cause = where(sys._current_frames().get(self.thread_id))
            elif late <= self.threshold and cause is not None:
                took = self.beat - started
                # The run-queue wait read at the start missed the part before it.
                waited = self.run_delay() - delay + self.threshold
                if waited >= took / 2:
                    soft_now, mine_now = self.others()
                    # Who ran instead (what the two counters saw of the stall's time).
                    if soft_now - soft >= took / 4:
                        cause = "[descheduled: ksoftirqd/1, the kernel's packet processing]"
                    elif mine_now - mine >= took / 4:
                        cause = "[descheduled: another thread of this process]"
                    else:
                        cause = "[descheduled: another process or kernel work]"
                self.stalls.append((took, cause))
                cause = None

    def stop(self) -> None:
        self.running = False
        self._thread.join(5)


def _runtime(schedstat: Path) -> float:
    """CPU seconds a task has run (first field of its schedstat); 0 when it is gone."""
    try:
        return int(schedstat.read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def _find_task(comm: str) -> Path | None:
    """The schedstat file of the kernel thread named ``comm`` (e.g. ``ksoftirqd/1``)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() == comm:
                    return proc / "schedstat"
    return None


def where(frame: Any) -> str:
    """The innermost feddns frame of a stack (and the frame it was in), or why there is none."""
    if frame is None:
        return "[outside Python]"
    stack = traceback.extract_stack(frame)
    ours = [f for f in stack if "/feddns/" in f.filename]
    if not ours:
        inner = stack[-1]
        return f"[not feddns] {Path(inner.filename).name}:{inner.name}"
    f = ours[-1]
    inner = stack[-1]
    tail = "" if inner is f else f" > {Path(inner.filename).name}:{inner.name}"
    return f"{f.filename.split('/feddns/', 1)[1]}:{f.lineno} {f.name}{tail}"


class GcTimer:
    """Times each garbage collection (it holds the GIL, so the loop waits)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.collections: list[tuple[float, str]] = []
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            took = time.perf_counter() - self.started
            self.collections.append((took, f"gc generation {info['generation']}"))

    def close(self) -> None:
        gc.callbacks.remove(self)


def scrape_forever(url: str, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        with urllib.request.urlopen(url, timeout=5) as resp:
            resp.read()


def main() -> None:
    """Run the loads and print the stalls."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--threshold", type=float, default=1.0, help="milliseconds")
    parser.add_argument("--scrape", type=float, default=5.0,
                        help="seconds between /metrics reads (0: none)")
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--clusters", type=int, default=5)
    args = parser.parse_args()
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # ServerThread's new loop
    if len(os.sched_getaffinity(0)) > 1 and taskset(1):
        os.sched_setaffinity(0, {1})  # feddns's core, as in perf_vs_knot
    print(f"# load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = dataset.write(Path(tmp), dataset.Shape(clusters=args.clusters,
                                                      services=args.services))
        settings = load_settings(paths["config"])
        settings = settings.model_copy(update={"observe": settings.observe.model_copy(
            update={"listen": "127.0.0.1:0"})})
        server = ServerThread(settings).start()
        try:
            assert server.app is not None
            queries, port = paths["queries"], server.port
            run_dnsperf(port, queries, seconds=2)  # warm-up: memoized answers
            run_dnsperf(port, queries, seconds=1, mode="tcp", clients=10, outstanding=20)
            ident, native = server._thread.ident, server._thread.native_id
            assert ident is not None and native is not None
            dog = Watchdog(server.loop, ident, native, threshold=args.threshold / 1000)
            gcs = GcTimer()
            stop = threading.Event()
            http = server.app.http
            if args.scrape > 0 and http is not None and http.address is not None:
                url = f"http://127.0.0.1:{http.address[1]}/metrics"
                threading.Thread(target=scrape_forever, args=(url, args.scrape, stop),
                                 daemon=True).start()
            dog.start()
            for mode, extra in (("udp", {}), ("tcp", {"clients": 10, "outstanding": 20}),
                                ("tcp-short", {"clients": 10, "outstanding": 20})):
                more = ["-O", "num-queries-per-conn=10"] if mode == "tcp-short" else []
                r = run_dnsperf(port, queries, seconds=args.seconds,
                                mode=mode.split("-")[0], extra=more, **extra)
                print(f"# {mode}: {r.qps:.0f} qps", flush=True)
            stop.set()
            dog.stop()
            gcs.close()
        finally:
            server.stop()
    stalls = dog.stalls + [g for g in gcs.collections if g[0] > args.threshold / 1000]
    by_cause: dict[str, list[float]] = defaultdict(list)
    for took, cause in stalls:
        by_cause[cause].append(took * 1000)
    print(f"# stalls over {args.threshold:g} ms during {3 * args.seconds:g} s of load; "
          f"{len(gcs.collections)} collections in all")
    print(f"{'cause':90} {'count':>6} {'max ms':>8} {'total ms':>9}")
    for cause, values in sorted(by_cause.items(), key=lambda kv: -max(kv[1])):
        print(f"{cause[:90]:90} {len(values):6d} {max(values):8.2f} {sum(values):9.1f}")
    figure("loop-stalls-over-threshold", len(dog.stalls))
    figure("loop-stall-max-ms", max((t for t, _ in dog.stalls), default=0.0) * 1000)
    figure("gc-max-ms", max((t for t, _ in gcs.collections), default=0.0) * 1000)


if __name__ == "__main__":
    main()
