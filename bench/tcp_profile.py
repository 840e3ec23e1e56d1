"""Where feddns's CPU goes while it answers TCP at full load: a py-spy profile, summarised.

Why it exists: issue #14 asks for the TCP path's profile next to the UDP one in
``bench/RESULTS.md``. This runs the real CLI on the ``perf_vs_knot`` dataset (5 clusters
x 2,000 services) pinned to CPU 1, loads it with ``dnsperf -m tcp -c 10 -q 20`` (as
NodeLocal DNSCache and CoreDNS's ``forward`` keep their connections) pinned to CPU 0,
and samples it with ``py-spy record --format raw`` (install it with ``pip install
py-spy``; it is not a dependency of feddns). Each sample's innermost frame inside
``feddns/`` says where the time went (a call into C, such as the transport's
``write``, is counted on the line that makes it); a sample with no feddns frame at all
is the event loop itself (uvloop's C code: epoll, reading the sockets, calling
``data_received``). Prints the top lines as ``#`` lines and

* ``tcp-profile-samples``: the samples taken;
* ``tcp-profile-share-loop-percent``: samples outside feddns's code;
* ``tcp-profile-share-<module>-percent``: per feddns module (``dns.tcp``,
  ``dns.handling``, ...), by innermost feddns frame.

    .venv/bin/python -m bench.tcp_profile [--seconds 30] [--rate 300]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import dataset
from bench.harness import figure, run_dnsperf, taskset
from bench.perf_vs_knot import feddns
from tests.ports import free_port


def innermost_feddns(stack: str) -> str | None:
    """``module:function:line`` of the innermost frame in feddns's package, if any.

    A raw py-spy line is ``outer (file:line);...;inner (file:line) COUNT``, innermost
    last, with paths relative to the process's directory when they are under it. Only
    the frames called by the event loop count (those after asyncio's ``Runner.run``):
    the CLI's frames below it are on every stack.
    """
    frames = stack.split(";")
    runner = max((i for i, f in enumerate(frames) if "asyncio/" in f), default=-1)
    for frame in reversed(frames[runner + 1:]):
        function, _, where = frame.rpartition(" (")
        path, _, line = where.rstrip(")").rpartition(":")
        if path.startswith("feddns/"):
            path = "/" + path
        if "/feddns/" not in path or not function:
            continue
        module = path.rsplit("/feddns/", 1)[1].removesuffix(".py").replace("/", ".")
        return f"{module}:{function.strip()}:{line}"
    return None


def summarise(raw: str) -> tuple[int, Counter[str], Counter[str]]:
    """Total samples, samples per innermost feddns line, samples per feddns module."""
    lines: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    total = 0
    for row in raw.splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        where = innermost_feddns(stack)
        if where is None:
            lines["(event loop: uvloop's C code)"] += n
            modules["loop"] += n
            continue
        lines[where] += n
        modules[where.split(":", 1)[0]] += n
    return total, lines, modules


def main() -> None:
    """Profile feddns under TCP load and print the summary."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=int, default=300, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--raw-out", type=Path, default=None,
                        help="also keep py-spy's raw output here")
    args = parser.parse_args()
    spy = shutil.which("py-spy")
    dnsperf = shutil.which("dnsperf")
    if spy is None or dnsperf is None:
        raise SystemExit("needs py-spy (pip install py-spy) and dnsperf (make bench-deps)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = dataset.write(folder, dataset.Shape())
        queries = paths["queries"]
        with feddns(paths["config"], free_port()) as server:
            # Warm-up: every answer compiled and memoized, as in perf_vs_knot.
            run_dnsperf(server.port, queries, seconds=None, passes=1, server_pid=server.pid)
            run_dnsperf(server.port, queries, seconds=1, mode="tcp", clients=10,
                        outstanding=20, server_pid=server.pid)
            load = subprocess.Popen(
                [*taskset(0), dnsperf, "-s", "127.0.0.1", "-p", str(server.port), "-d",
                 str(queries), "-l", str(args.seconds + 4), "-c", "10", "-q", "20", "-t",
                 "2", "-m", "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(1)  # dnsperf's connections up before sampling starts
                out = folder / "profile.txt"
                subprocess.run([*taskset(0), spy, "record", "--rate", str(args.rate),
                                "--duration", str(int(args.seconds)), "--format", "raw",
                                "--nonblocking", "--output", str(out),
                                "--pid", str(server.pid)],
                               check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            finally:
                load.wait(args.seconds + 30)
            raw = out.read_text()
            if args.raw_out is not None:
                args.raw_out.write_text(raw)
    total, lines, modules = summarise(raw)
    if not total:
        raise SystemExit("py-spy took no samples")
    print(f"# {total} samples at {args.rate} Hz over {args.seconds:g} s; by innermost"
          " feddns line:")
    for where, n in lines.most_common(args.top):
        print(f"# {100 * n / total:5.1f} %  {where}")
    figure("tcp-profile-samples", total)
    for module, n in modules.most_common():
        figure(f"tcp-profile-share-{module.replace('.', '-')}-percent",
               round(100 * n / total, 1))
    print(f"# date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")


if __name__ == "__main__":
    main()
