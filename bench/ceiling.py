"""The ceiling for any Python UDP responder on this machine: one dict lookup per query.

Why it exists: the machine, not only the code, sets what a Python server can reach;
run this in the same session as bench/perf_vs_knot.py to know how far feddns is
from the best a pre-encoded Python responder does. It answers each question of
the query file with a response pre-encoded by feddns itself (copying ID and
question), nothing else: no locality, no metrics, no protocol checks. Two I/O models:

* ``ceiling-qps``: a uvloop datagram protocol, the responder the issue's figure
  names (performance-baseline.md: 0.80 of Knot in QPS, 0.71 in CPU);
* ``ceiling-reader-qps``: the loop's reader callback draining the socket with plain
  ``recvfrom``/``sendto``, the I/O model feddns uses (``feddns.dns.server``).

    .venv/bin/python -m bench.ceiling [--seconds 15] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import dataset
from bench.harness import (
    PerfResult,
    figure,
    median,
    run_dnsperf,
    taskset,
    wait_for_dns,
)
from tests.ports import free_port


def serve(config: Path, port: int, mode: str = "protocol") -> None:
    """The responder process: build feddns's table, pre-encode, answer from a dict."""
    import uvloop

    from feddns.app import App
    from feddns.config import load_settings

    async def main() -> None:
        app = App(load_settings(config), listen=["127.0.0.1:0"])
        for source in app.supervisor.build(app.settings).values():
            await source.load_once()  # type: ignore[attr-defined]
        app.compile_now()
        handle = app.handler.handle_udp
        memo: dict[bytes, bytes] = {}

        class Responder(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.t = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                key = data[2:]
                tail = memo.get(key)
                if tail is None:
                    full = handle(data, None)
                    if full is None:
                        return
                    tail = memo[key] = full[2:]
                self.t.sendto(data[:2] + tail, addr)  # type: ignore[attr-defined]

        loop = asyncio.get_running_loop()
        if mode == "protocol":
            await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", port))
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind(("127.0.0.1", port))
            sock.setblocking(False)
            recvfrom, sendto = sock.recvfrom, sock.sendto

            def readable() -> None:
                for _ in range(64):
                    try:
                        data, addr = recvfrom(65535)
                    except BlockingIOError:
                        return
                    key = data[2:]
                    tail = memo.get(key)
                    if tail is None:
                        full = handle(data, None)
                        if full is None:
                            continue
                        tail = memo[key] = full[2:]
                    sendto(data[:2] + tail, addr)

            loop.add_reader(sock.fileno(), readable)
        await asyncio.Event().wait()

    uvloop.run(main())


def measure(paths: dict[str, Path], mode: str, *, seconds: float,
            runs: int) -> list[PerfResult]:
    """``runs`` dnsperf runs against a responder of ``mode``, after a 2 s warm-up."""
    port = free_port()
    proc = subprocess.Popen([*taskset(1), sys.executable, "-m", "bench.ceiling", "--serve",
                             str(paths["config"]), str(port), mode], start_new_session=True)
    try:
        wait_for_dns(port, "svc-1.ns-1.svc.clusterset.local", timeout=120)
        run_dnsperf(port, paths["queries"], seconds=2, server_pid=proc.pid)
        return [run_dnsperf(port, paths["queries"], seconds=seconds, server_pid=proc.pid)
                for _ in range(runs)]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


def main() -> None:
    """Measure both ceilings with the same query mix as bench/perf_vs_knot.py."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]), args.serve[2])
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = dataset.write(Path(tmp), dataset.Shape())
        for mode, prefix in (("protocol", "ceiling"), ("reader", "ceiling-reader")):
            results = measure(paths, mode, seconds=args.seconds, runs=args.runs)
            for r in results:
                print(f"# {prefix} run: {r.qps:.0f} qps, lost {r.lost}, "
                      f"{r.server_us_per_query or 0:.2f} us/query", flush=True)
            figure(f"{prefix}-qps", median([r.qps for r in results]))
            figure(f"{prefix}-server-us-per-query",
                   median([r.server_us_per_query or 0 for r in results]))
            figure(f"{prefix}-lost", int(median([float(r.lost) for r in results])))


if __name__ == "__main__":
    main()
