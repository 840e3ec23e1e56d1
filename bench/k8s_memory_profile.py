"""Where feddns's memory per endpoint goes: tracemalloc by line, pymalloc arena use, RSS.

Why it exists: ``bench.k8s_memory`` gives the RSS per endpoint; this says
what it is made of. feddns runs in-process (``tests.support.ServerThread``)
against fake clusters in a child process (``bench.k8s_fakeapi``); after the
sync it prints the RSS growth, the bytes Python objects actually hold
(tracemalloc's traced total and the largest allocation sites, when
``--tracemalloc``), and pymalloc's own accounting (``sys._debugmallocstats``:
arenas held vs bytes in used blocks), which together split the growth into
live objects, allocator fragmentation and everything else (glibc heaps of the
watch threads, ...).

    .venv/bin/python -m bench.k8s_memory_profile [--clusters 10] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import re
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.k8s_common import UNKNOWN, Resolver, environment, status_kib, wait_answer, write_config
from bench.k8s_fakeapi import start_fake
from feddns.config import load_settings
from tests.support import ServerThread

MIB = 1024 * 1024


def pymalloc_stats() -> dict[str, int]:
    """Arena bytes held and bytes in allocated blocks, from ``sys._debugmallocstats``."""
    buf = io.StringIO()
    fd = os.dup(2)
    with tempfile.TemporaryFile("w+") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(fd, 2)
            os.close(fd)
        tmp.seek(0)
        buf.write(tmp.read())
    text = buf.getvalue()

    def grab(label: str) -> int:
        m = re.search(re.escape(label) + r"\s*=\s*([\d,]+)", text)
        return int(m.group(1).replace(",", "")) if m else -1

    m = re.search(r"(\d+) arenas \* (\d+) bytes/arena", text)
    return {
        "arenas_bytes": int(m.group(1)) * int(m.group(2)) if m else -1,
        "used_blocks": grab("# bytes in allocated blocks"),
        "free_blocks": grab("# bytes in available blocks"),
    }


def main() -> None:
    """Run and print the breakdown."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--headless", action="store_true")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace allocations (slower, and RSS then includes its overhead)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    names = [f"c{i:02d}" for i in range(args.clusters)]
    total = args.clusters * args.services * args.endpoints
    print(environment())
    with tempfile.TemporaryDirectory(prefix="feddns-bench-") as tmpdir:
        tmp = Path(tmpdir)
        api, kubeconfig = start_fake(names, tmp)
        server = None
        try:
            for c, name in enumerate(names):
                api.call("populate", cluster=name, services=args.services,
                         endpoints=args.endpoints, per_slice=100, headless=args.headless,
                         prefix="svc", first_ip=c + 1)
            settings = load_settings(write_config(tmp, kubeconfig, names))
            import kubernetes.client  # noqa: F401 - imported before the baseline is read

            gc.collect()
            rss0 = status_kib(os.getpid(), "VmRSS") * 1024
            py0 = pymalloc_stats()
            if args.tracemalloc:
                tracemalloc.start(1)
            server = ServerThread(settings)
            server.start(wait_loaded=False)
            with Resolver(server.port) as dns:
                wait_answer(dns, UNKNOWN, lambda rcode, _: rcode == "NXDOMAIN", timeout=600)
            time.sleep(2)
            server.call(gc.collect)
            rss1 = status_kib(os.getpid(), "VmRSS") * 1024
            py1 = pymalloc_stats()
            snap = tracemalloc.take_snapshot() if args.tracemalloc else None
            traced = tracemalloc.get_traced_memory()[0] if args.tracemalloc else 0
        finally:
            if server is not None:
                server.stop()
            api.close()
    kind = "headless" if args.headless else "ClusterIP"
    print(f"# {args.clusters} clusters x {args.services} {kind} services x {args.endpoints} "
          f"endpoints = {total}")
    grow = rss1 - rss0
    print(f"RSS growth: {grow / MIB:.1f} MiB = {grow / total:.0f} B/endpoint")
    arenas = (py1["arenas_bytes"] - py0["arenas_bytes"])
    used = py1["used_blocks"] - py0["used_blocks"]
    print(f"pymalloc arenas held: +{arenas / MIB:.1f} MiB ({arenas / total:.0f} B/endpoint); "
          f"bytes in used blocks: +{used / MIB:.1f} MiB ({used / total:.0f} B/endpoint); "
          f"free blocks inside arenas: {py1['free_blocks'] / MIB:.1f} MiB")
    print(f"outside pymalloc arenas (large objects, glibc heaps, stacks): "
          f"{(grow - arenas) / MIB:.1f} MiB ({(grow - arenas) / total:.0f} B/endpoint)")
    if snap is not None:
        print(f"tracemalloc: {traced / MIB:.1f} MiB live ({traced / total:.0f} B/endpoint); "
              f"largest sites:")
        for stat in snap.statistics("lineno")[: args.top]:
            frame = stat.traceback[0]
            where = f"{Path(frame.filename).name}:{frame.lineno}"
            print(f"  {stat.size / MIB:8.1f} MiB {stat.size / total:6.0f} B/ep "
                  f"{stat.count:9d} blocks  {where}")
        with contextlib.suppress(Exception):
            tracemalloc.stop()


if __name__ == "__main__":
    main()
