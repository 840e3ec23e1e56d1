"""Where a 20,000-endpoint re-list spends its time: timers wrapped around feddns's steps.

Why it exists: ``bench.k8s_relist`` says *how late* feddns's event loop runs
during a full re-list; this says *why*. It runs the same setup (fake API in a
child process, feddns in-process via ``tests.support.ServerThread``), wraps
the steps of the Kubernetes source at run time (nothing in feddns/ is
edited) and forces ``--relists`` re-lists, then prints, per step, the calls,
total and largest single duration, and on which thread:

* watch thread: the whole ``_list`` call, the JSON parse of each page (one C
  call that holds the GIL throughout: the loop cannot run meanwhile), the
  JSON -> model conversion, and the blocking ``emit``;
* event loop: ``KubernetesSource.apply`` per event kind, ``snapshot()``,
  ``Registry.replace`` and ``App.compile_now`` (each blocks the loop for its
  whole duration).

    .venv/bin/python -m bench.k8s_relist_profile [--services 200 --endpoints 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import REPO
from bench.k8s_common import (
    UNKNOWN,
    Resolver,
    environment,
    service_name,
    wait_answer,
    write_config,
)
from bench.k8s_fakeapi import start_fake
from bench.k8s_relist import LagProbe, add_load_arguments, cluster_names, source_counters
from feddns.config import load_settings
from feddns.dns import handling as handling_module
from feddns.model import registry as registry_module
from feddns.sources.kubernetes import source as source_module
from feddns.sources.kubernetes import watching as watching_module
from feddns.table import compiler as compiler_module
from feddns.table import table as table_module
from tests.support import ServerThread

TIMINGS: dict[str, list[tuple[float, float]]] = defaultdict(list)
ENABLED = threading.Event()


def timed(label: str | Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``fn`` so each call's wall and thread-CPU time is recorded under ``label``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t, c = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            if ENABLED.is_set():
                name = label(*args) if callable(label) else label
                TIMINGS[f"{name} [{threading.current_thread().name.split('-')[0]}]"].append(
                    (time.perf_counter() - t, time.thread_time() - c))

    return wrapper


_GC_START: dict[int, float] = {}


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    """Record each garbage collection's duration by generation (it holds the GIL)."""
    key = threading.get_ident()
    if phase == "start":
        _GC_START[key] = time.perf_counter()
    elif key in _GC_START and ENABLED.is_set():
        elapsed = time.perf_counter() - _GC_START.pop(key)
        thread = threading.current_thread().name.split("-")[0]
        TIMINGS[f"gc generation {info['generation']} [{thread}]"].append((elapsed, elapsed))


def install() -> None:
    """Wrap the steps (class attributes, so every instance is covered); time the GC."""
    gc.callbacks.append(_gc_callback)
    rw = watching_module.ResourceWatcher
    rw._list = timed(lambda self: f"_list {self.resource}", rw._list)  # type: ignore[method-assign]
    watching_module.json_loads = timed("json loads", watching_module.json_loads)
    watching_module._convert = timed("convert one object", watching_module._convert)
    ks = source_module.KubernetesSource
    ks._emit = timed("emit (queue.put)", ks._emit)  # type: ignore[method-assign]
    ks.apply = timed(lambda self, ev: f"apply {type(ev).__name__}"  # type: ignore[method-assign]
                     f"{' ' + ev.resource if hasattr(ev, 'resource') else ''}", ks.apply)
    ks.snapshot = timed("snapshot()", ks.snapshot)  # type: ignore[method-assign]
    reg = registry_module.Registry
    reg.replace = timed("Registry.replace", reg.replace)  # type: ignore[method-assign]
    compiler_module.Compiler.compile_now = timed(  # type: ignore[method-assign]
        "Compiler.compile_now", compiler_module.Compiler.compile_now)
    handler = handling_module.Handler
    handler.handle_udp = timed(  # type: ignore[method-assign]
        "Handler.handle_udp (one query)", handler.handle_udp)
    table = table_module.AnswerTable
    table.resolve = timed("AnswerTable.resolve (memo miss)", table.resolve)  # type: ignore[method-assign]


def main() -> None:
    """Run and print the per-step table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser)
    parser.add_argument("--relists", type=int, default=3)
    args = parser.parse_args()
    if args.list_page is not None:
        watching_module.LIST_PAGE = args.list_page
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # ServerThread's new loop
    install()
    print(environment())
    with tempfile.TemporaryDirectory(prefix="feddns-bench-") as tmpdir:
        tmp = Path(tmpdir)
        names = cluster_names(args.clusters)
        api, kubeconfig = start_fake(names, tmp)
        server = None
        client: subprocess.Popen[str] | None = None
        try:
            for i, name in enumerate(names):
                api.call("populate", cluster=name, services=args.services,
                         endpoints=args.endpoints, per_slice=args.per_slice,
                         headless=args.headless, prefix="svc", first_ip=i + 1)
            api.call("service", cluster="east", service="mark-b", ip="10.251.255.1",
                     cluster_ip="10.250.255.1")
            server = ServerThread(load_settings(write_config(tmp, kubeconfig, names)))
            server.start(wait_loaded=False)
            with Resolver(server.port) as dns:
                wait_answer(dns, UNKNOWN, lambda rcode, _: rcode == "NXDOMAIN", timeout=120)
            time.sleep(0.5)
            if args.gc_freeze:
                server.call(gc.freeze)
            probe = LagProbe(server.loop)
            names = ",".join(service_name(n) for n in ("svc-0001", "mark-a", "mark-b"))
            client = subprocess.Popen(  # queries at 1,000/s, as in bench.k8s_relist
                [sys.executable, "-m", "bench.k8s_udpclient", "--port", str(server.port),
                 "--names", names, "--max-seconds", "300", "--out", str(tmp / "udp.json")],
                cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
            ENABLED.set()
            for k in range(args.relists):
                before, _ = source_counters(server)
                markers = ("mark-a", "mark-b")
                api.call("silent_change", cluster="east", create=markers[k % 2],
                         delete=markers[(k + 1) % 2], ip=f"10.251.{k}.1",
                         cluster_ip=f"10.250.{k}.1")
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    count, dirty = source_counters(server)
                    if count >= before + 2 and not dirty:
                        break
                    time.sleep(0.05)
                time.sleep(1.0)
            ENABLED.clear()
            lags = sorted(lag * 1000 for _, lag in probe.stop())
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.communicate("stop\n", timeout=30)
                if client.poll() is None:
                    client.kill()
                    client.wait()
            if server is not None:
                server.stop()
            api.close()
    print(f"# {args.relists} re-lists of east, {args.services} x {args.endpoints} endpoints "
          f"(of {args.clusters} such clusters) "
          f"({'headless' if args.headless else 'ClusterIP'}); loop lag max {lags[-1]:.1f} ms; "
          f"5 largest {', '.join(f'{x:.1f}' for x in lags[-5:])}")
    print("# wall = elapsed (includes waiting for the GIL or a CPU); cpu = this thread's CPU;"
          " gc rows are wall time, and also inside the step that triggered them")
    print(f"{'step [thread]':40} {'calls':>6} {'wall ms/re-list':>16} {'cpu ms/re-list':>15} "
          f"{'max wall ms':>12} {'max cpu ms':>11}")
    for name, values in sorted(TIMINGS.items(), key=lambda kv: -sum(v[1] for v in kv[1])):
        wall = [v[0] * 1000 for v in values]
        cpu = [v[1] * 1000 for v in values]
        print(f"{name:40} {len(values):6d} {sum(wall) / args.relists:16.1f} "
              f"{sum(cpu) / args.relists:15.1f} {max(wall):12.2f} {max(cpu):11.2f}")


if __name__ == "__main__":
    main()
