"""A paced UDP DNS client in its own process, recording every query's send time and latency.

Why it exists: the re-list benchmark runs feddns in-process (to probe its
event loop), so the measuring client must live elsewhere or it would compete
for feddns's GIL. This client sends one query every ``--interval`` seconds
(one outstanding at a time, cycling through ``--names``), until a line
arrives on stdin, stdin closes, or ``--max-seconds`` pass; then it writes one
JSON document to ``--out``: ``{"names": [...], "queries": [[t_due, t_send,
latency_ms or -1 on timeout, name index, rcode, "rdata,..."], ...]}`` with
times in ``time.monotonic()`` seconds (system-wide on Linux). ``t_due`` is
when the query was scheduled: after a stall the client sends the overdue
queries back to back, so ``t_send + latency - t_due`` is what a client
arriving at that steady rate would have waited (no coordinated omission).

    python -m bench.k8s_udpclient --port P --names a,b --out FILE
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from bench.k8s_common import Resolver


def main() -> None:
    """Query until told to stop, then write the results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--names", required=True)
    parser.add_argument("--interval", type=float, default=0.001)
    parser.add_argument("--timeout", type=float, default=0.5)
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    names = args.names.split(",")
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    queries: list[list[Any]] = []
    started = time.monotonic()
    next_send = started
    i = 0
    with Resolver(args.port, timeout=args.timeout) as dns:
        print("ready", flush=True)
        while not stop.is_set() and time.monotonic() - started < args.max_seconds:
            now = time.monotonic()
            if now < next_send:
                time.sleep(next_send - now)
            due = next_send
            next_send += args.interval
            idx = i % len(names)
            i += 1
            t = time.monotonic()
            rcode, rdata = dns.ask(names[idx])
            latency = (time.monotonic() - t) * 1000 if rcode != "TIMEOUT" else -1.0
            queries.append([due, t, latency, idx, rcode, ",".join(rdata)])
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump({"names": names, "queries": queries}, fh)


if __name__ == "__main__":
    main()
