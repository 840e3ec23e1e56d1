"""The ceiling for any Python UDP responder on this machine: uvloop, one dict lookup per query.

Why it exists: the machine, not only the code, sets what a Python server can reach;
run this in the same session as bench/perf_vs_knot.py to know how far feddns is
from the best a pre-encoded Python responder does (performance-baseline.md: 0.80 of
Knot in QPS, 0.71 in CPU, on the day it was measured). It answers each question of
the query file with a response pre-encoded by feddns itself (copying ID and
question), nothing else: no locality, no metrics, no protocol checks.

    .venv/bin/python -m bench.ceiling [--seconds 15] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import dataset
from bench.harness import figure, free_port, median, run_dnsperf, taskset, wait_for_dns


def serve(config: Path, port: int) -> None:
    """The responder process: build feddns's table, pre-encode, answer from a dict."""
    import uvloop

    from feddns.app import App
    from feddns.config import load_settings

    async def main() -> None:
        app = App(load_settings(config), listen=["127.0.0.1:0"])
        for source in app.sources.values() if isinstance(app.sources, dict) else app.sources:
            await source.load_once()
        app.compile_now()
        handle = app.handler.handle
        memo: dict[bytes, bytes] = {}

        class Responder(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.t = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                key = data[2:]
                tail = memo.get(key)
                if tail is None:
                    full = handle(data, False, None)
                    if full is None:
                        return
                    tail = memo[key] = full[2:]
                self.t.sendto(data[:2] + tail, addr)  # type: ignore[attr-defined]

        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", port))
        await asyncio.Event().wait()

    uvloop.run(main())


def main() -> None:
    """Measure the ceiling with the same query mix as bench/perf_vs_knot.py."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = dataset.write(Path(tmp), dataset.Shape())
        port = free_port()
        proc = subprocess.Popen([*taskset(1), sys.executable, "-m", "bench.ceiling", "--serve",
                                 str(paths["config"]), str(port)], start_new_session=True)
        try:
            wait_for_dns(port, "svc-1.ns-1.svc.clusterset.local", timeout=120)
            run_dnsperf(port, paths["queries"], seconds=2, server_pid=proc.pid)
            results = [run_dnsperf(port, paths["queries"], seconds=args.seconds,
                                   server_pid=proc.pid) for _ in range(args.runs)]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
    figure("ceiling-qps", median([r.qps for r in results]))
    figure("ceiling-server-us-per-query", median([r.server_us_per_query or 0 for r in results]))
    figure("ceiling-lost", int(median([float(r.lost) for r in results])))


if __name__ == "__main__":
    main()
