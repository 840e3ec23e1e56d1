"""An open-loop UDP DNS client in its own process: queries go out on schedule, answered or not.

Why it exists: the re-list benchmark runs feddns in-process (to probe its
event loop), so the measuring client must live elsewhere or it would compete
for feddns's GIL. This client sends one query every ``--interval`` seconds
whatever is outstanding (as many independent pods would: a slow answer does
not hold the next query back), cycling through ``--names``, until a line
arrives on stdin, stdin closes, or ``--max-seconds`` pass; then it waits
``--timeout`` for the last answers and writes one JSON document to ``--out``:
``{"names": [...], "queries": [[t_due, t_send, latency_ms or -1 on timeout,
name index, rcode, "rdata,..."], ...]}`` with times in ``time.monotonic()``
seconds (system-wide on Linux). ``t_due`` is when the query was scheduled: if
this process itself falls behind it sends the overdue queries back to back, so
``t_send + latency - t_due`` is what a client arriving at that steady rate
would have waited (no coordinated omission).

The hot loop does no DNS work: the queries are built once (only the ID
changes), answers are kept as bytes with their arrival time and decoded with
dnspython after the run. An earlier version waited for each answer before the
next query (one outstanding) and decoded as it went; at 1,000 queries/s on a
busy 2-core machine its own per-query cost plus the round trip passed the 1 ms
interval and its lateness piled up over a re-list (p99 111 ms measured from
due time against round trips of 6 ms).

    python -m bench.k8s_udpclient --port P --names a,b --out FILE
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import socket
import sys
import threading
import time
from typing import Any

import dns.message
import dns.rcode


def wire_query(name: str) -> bytes:
    """An A query for ``name`` as a stub resolver sends it, with ID 0 (patched per send)."""
    query = dns.message.make_query(name, "A")
    query.id = 0
    return bytes(query.to_wire())


def decode(data: bytes) -> tuple[str, str]:
    """``(rcode text, "sorted,rdata")`` of one answer."""
    reply = dns.message.from_wire(data)
    rdata = sorted(rd.to_text() for rrset in reply.answer for rd in rrset)
    return dns.rcode.to_text(reply.rcode()), ",".join(rdata)


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
    wires = [wire_query(name) for name in names]
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    sent: list[tuple[float, float, int]] = []  # (due, sent, name index); the ID is i % 65536
    received: list[tuple[float, bytes]] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.connect(("127.0.0.1", args.port))
    sock.setblocking(False)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    clock = time.monotonic

    def drain() -> None:
        while True:
            try:
                data = sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:  # not listening: the query counts as lost
                continue
            received.append((clock(), data))

    print("ready", flush=True)
    started = clock()
    next_send = started
    i = 0
    while not stop.is_set() and clock() - started < args.max_seconds:
        now = clock()
        while next_send <= now:
            idx = i % len(wires)
            wire = wires[idx]
            t = clock()
            # Not sent (buffer full, nothing listening): counted as a timeout.
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                sock.send((i % 65536).to_bytes(2, "big") + wire[2:])
            sent.append((next_send, t, idx))
            next_send += args.interval
            i += 1
        if poller.poll(max(0.0, next_send - clock()) * 1000):
            drain()
    end = clock() + args.timeout
    while clock() < end:
        if poller.poll(max(0.0, end - clock()) * 1000):
            drain()
    sock.close()
    # Match answers to queries: the ID names the latest query sent with it before the answer.
    queries: list[list[Any]] = [[due, t, -1.0, idx, "TIMEOUT", ""] for due, t, idx in sent]
    for arrival, data in received:
        if len(data) < 12:
            continue
        qid = int.from_bytes(data[:2], "big")
        seq = qid + ((len(sent) - 1 - qid) // 65536) * 65536 if qid < len(sent) else -1
        while seq >= 0 and sent[seq][1] > arrival:
            seq -= 65536
        if seq < 0 or queries[seq][2] >= 0:
            continue
        latency = (arrival - sent[seq][1]) * 1000
        if latency > args.timeout * 1000:
            continue
        try:
            rcode, rdata = decode(data)
        except Exception:  # a malformed answer counts as none
            continue
        queries[seq][2:] = [latency, sent[seq][2], rcode, rdata]
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump({"names": names, "queries": queries}, fh)


if __name__ == "__main__":
    main()
