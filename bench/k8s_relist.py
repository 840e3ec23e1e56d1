"""Event-loop lag and query latency while feddns re-lists a 20,000-endpoint cluster.

Layout (three processes): the fake API server (``bench.k8s_fakeapi``, one
cluster ``east`` with ``--services`` x ``--endpoints`` endpoints, 100 per
slice; ``--clusters`` adds more with the same load, never re-listed) in a
child; feddns **in this process** (``tests.support.ServerThread``, on uvloop
like the CLI, or ``--loop asyncio``) with a lag probe injected into its loop
(a periodic ``asyncio.sleep(0.005)``; lag = how late it wakes); an open-loop UDP client
(``bench.k8s_udpclient``, one query sent every ``--interval`` s whatever is
outstanding, as independent pods send them) in another child, cycling over a
stable service name and two marker names. ``relist-query-*`` latency counts from
when the query was due, so a query held back by a slow server counts its wait (no coordinated
omission: it is what clients arriving at that steady rate see);
``relist-query-rtt-*`` is each query's own round trip from its actual send,
and ``relist-served-qps`` the answers per second during the re-list.

A forced re-list: the fake API is partitioned, marker ``mark-a`` is created
and ``mark-b`` deleted (or the other way round), its history expired and every
watch cut, then healed; the watches reconnect, get 410 and re-list everything
(checked on the fake's LIST counters). Re-list start ``t0`` = the cut. "New
state answered" = the first reply in which the created marker answers its
address and the deleted one NXDOMAIN (both needed: they come from the two
re-lists). The "during" window is [t0, answered]; lag samples are taken over
[t0, answered + 0.2 s]; the baseline is the ``--baseline-seconds`` before the
first re-list. ``--relists`` per run, ``--runs`` runs with fresh processes;
figures are medians over runs (of per-run maxima / pooled percentiles).

    .venv/bin/python -m bench.k8s_relist [--runs 3] [--relists 5] [--services 200 --endpoints 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import REPO, figure, median
from bench.k8s_common import (
    UNKNOWN,
    Resolver,
    environment,
    percentile,
    service_name,
    wait_answer,
    write_config,
)
from bench.k8s_fakeapi import start_fake
from feddns.config import load_settings
from feddns.runtime.tuning import SWITCH_INTERVAL
from feddns.sources.kubernetes import watching as watching_module
from feddns.sources.kubernetes.source import KubernetesSource
from tests.support import ServerThread

PROBE_PERIOD = 0.005
LAG_TAIL = 0.2
MARKERS = ("mark-a", "mark-b")


def cluster_names(count: int) -> list[str]:
    """``east`` (the one re-listed) and ``count - 1`` more clusters holding the same load."""
    return ["east", *(f"other{i}" for i in range(1, count))]


class LagProbe:
    """Samples ``(wake time, lag s)`` of a periodic sleep on the server's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.samples: list[tuple[float, float]] = []
        self.running = True
        self.future = asyncio.run_coroutine_threadsafe(self._run(), loop)

    async def _run(self) -> None:
        deadline = time.monotonic() + 900  # bounded even if never stopped
        while self.running and time.monotonic() < deadline:
            t = time.monotonic()
            await asyncio.sleep(PROBE_PERIOD)
            now = time.monotonic()
            self.samples.append((now, now - t - PROBE_PERIOD))

    def stop(self) -> list[tuple[float, float]]:
        self.running = False
        self.future.result(5)
        return self.samples


def yield_every(n: int) -> None:
    """What-if: make feddns's LIST conversion hand the GIL over every ``n`` objects."""
    convert = watching_module._convert
    count = threading.local()

    def converting(resource: str, obj: dict[str, Any]) -> Any:
        done = getattr(count, "n", 0) + 1
        count.n = done
        if done % n == 0:
            time.sleep(0)  # releases the GIL; a waiting event loop runs now
        return convert(resource, obj)

    watching_module._convert = converting


def source_counters(server: ServerThread) -> tuple[int, int]:
    """(re-list events applied, dirty services) of the server, read on its loop."""
    app = server.app
    assert app is not None

    def read() -> tuple[int, int]:
        relists = sum(s.relists for s in app.supervisor.sources.values()
                      if isinstance(s, KubernetesSource))
        return relists, len(app.registry.dirty)

    return server.call(read)  # type: ignore[no-any-return]


def one_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    names = cluster_names(args.clusters)
    api, kubeconfig = start_fake(names, tmp)
    client: subprocess.Popen[str] | None = None
    server: ServerThread | None = None
    probe: LagProbe | None = None
    relists: list[dict[str, Any]] = []
    try:
        for i, name in enumerate(names):
            api.call("populate", cluster=name, services=args.services, endpoints=args.endpoints,
                     per_slice=args.per_slice, headless=args.headless, prefix="svc",
                     first_ip=i + 1)
        api.call("service", cluster="east", service="mark-b", ip="10.251.255.1",
                 cluster_ip="10.250.255.1")
        settings = load_settings(write_config(tmp, kubeconfig, names))
        server = ServerThread(settings)
        started = time.monotonic()
        server.start(wait_loaded=False)
        with Resolver(server.port) as dns:
            loaded = wait_answer(dns, UNKNOWN, lambda rcode, _: rcode == "NXDOMAIN",
                                 timeout=120, interval=0.01)
        initial_sync = loaded - started
        if args.gc_freeze:
            time.sleep(0.5)
            server.call(gc.freeze)
        probe = LagProbe(server.loop)
        out = tmp / "udp.json"
        qnames = [service_name("svc-0001"), *(service_name(m) for m in MARKERS)]
        client = subprocess.Popen(
            [sys.executable, "-m", "bench.k8s_udpclient", "--port", str(server.port),
             "--names", ",".join(qnames), "--interval", str(args.interval),
             "--max-seconds", "600", "--out", str(out)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert client.stdout is not None
        client.stdout.readline()  # "ready"
        client_started = time.monotonic()
        time.sleep(args.baseline_seconds)
        for k in range(args.relists):
            create, delete = MARKERS[k % 2], MARKERS[(k + 1) % 2]
            ip = f"10.250.{k % 256}.1"
            before, _ = source_counters(server)
            reply = api.call("silent_change", cluster="east", create=create, delete=delete,
                             ip=f"10.251.{k % 256}.1", cluster_ip=ip)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                count, dirty = source_counters(server)
                if count >= before + 2 and not dirty:
                    break
                time.sleep(0.05)
            else:
                raise TimeoutError("the re-list did not complete within 120 s")
            stats = api.call("stats", cluster="east")["stats"]["list_requests"]
            relisted = all(stats.get(r, 0) > reply["lists_before"].get(r, 0)
                           for r in ("services", "endpointslices"))
            relists.append({"t0": reply["t0"], "create": qnames.index(service_name(create)),
                            "delete": qnames.index(service_name(delete)), "ip": ip,
                            "relisted": relisted})
            time.sleep(args.quiet_seconds)
        assert client.stdin is not None
        client.stdin.write("stop\n")
        client.stdin.flush()
        client.wait(30)
        queries = json.loads(out.read_text())["queries"]
    finally:
        samples: list[tuple[float, float]] = []
        if probe is not None:
            with contextlib.suppress(Exception):  # never skip the clean-up below
                samples = probe.stop()
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        if server is not None:
            server.stop()
        api.close()
    return analyse(queries, samples, relists, client_started, initial_sync)


def analyse(queries: list[list[Any]], samples: list[tuple[float, float]],
            relists: list[dict[str, Any]], client_started: float,
            initial_sync: float) -> dict[str, Any]:
    """Split queries and lag samples into baseline and re-list windows."""
    first_t0 = relists[0]["t0"]
    # [due, sent, latency ms or -1, name index, rcode, rdata] -> latency from the due time
    timed = [(due, sent, -1.0 if lat < 0 else (sent - due) * 1000 + lat, idx, rcode, rdata)
             for due, sent, lat, idx, rcode, rdata in queries]
    base_q = [q[2] for q in timed if client_started + 0.5 <= q[0] < first_t0 - 0.05]
    base_lag = [lag for t, lag in samples if client_started + 0.5 <= t < first_t0 - 0.05]
    during_q: list[float] = []
    during_rtt: list[float] = []
    served = 0
    window_s = 0.0
    during_lag: list[float] = []
    answered: list[float] = []
    timeouts = 0
    for r in relists:
        t0 = r["t0"]
        created = deleted = None
        for due, _sent, latency, idx, rcode, rdata in timed:
            if due < t0 or latency < 0:
                continue
            arrival = due + latency / 1000
            if created is None and idx == r["create"] and rcode == "NOERROR" \
                    and rdata == r["ip"]:
                created = arrival
            if deleted is None and idx == r["delete"] and rcode == "NXDOMAIN":
                deleted = arrival
        if created is None or deleted is None:
            raise RuntimeError(f"re-list at {t0}: new state never answered")
        done = max(created, deleted)
        answered.append((done - t0) * 1000)
        window = [q for q in timed if t0 <= q[0] <= done]
        during_q.extend(q[2] for q in window if q[2] >= 0)
        # Each query's own round trip (from its actual send), and how many were answered.
        during_rtt.extend(lat for _d, sent, lat, *_ in queries if t0 <= sent <= done
                          and lat >= 0)
        served += sum(1 for _d, sent, lat, *_ in queries
                      if lat >= 0 and t0 <= sent + lat / 1000 <= done)
        window_s += done - t0
        timeouts += sum(1 for q in window if q[2] < 0)
        during_lag.extend(lag for t, lag in samples if t0 <= t <= done + LAG_TAIL)
    ms = [x * 1000 for x in during_lag]
    base_ms = [x * 1000 for x in base_lag]
    return {
        "initial_sync_ms": initial_sync * 1000,
        "relisted": all(r["relisted"] for r in relists),
        "answered_ms": statistics.median(answered),
        "answered_max_ms": max(answered),
        "lag_max_ms": max(ms),
        "lag_p99_ms": percentile(ms, 99),
        "base_lag_max_ms": max(base_ms),
        "q_p50": percentile(during_q, 50),
        "q_p99": percentile(during_q, 99),
        "q_max": max(during_q),
        "q_n": len(during_q),
        "rtt_p50": percentile(during_rtt, 50),
        "rtt_p99": percentile(during_rtt, 99),
        "served_qps": served / window_s,
        "timeouts": timeouts,
        "b_p50": percentile(base_q, 50),
        "b_p99": percentile(base_q, 99),
        "b_max": max(base_q),
        "b_n": len(base_q),
    }


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The re-list load and feddns what-ifs, shared with bench/k8s_relist_profile.py."""
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--endpoints", type=int, default=100, help="per service")
    parser.add_argument("--per-slice", type=int, default=100)
    parser.add_argument("--clusters", type=int, default=1,
                        help="clusters with that load; only the first, east, is re-listed")
    parser.add_argument("--headless", action="store_true")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                        help="feddns's event loop (the CLI uses uvloop when installed)")
    parser.add_argument("--list-page", type=int, default=None,
                        help="what-if: patch feddns's LIST_PAGE (objects per LIST page) at run"
                        " time; default: the product's own value")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="what-if: gc.freeze() once the initial sync is answered")


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--relists", type=int, default=5)
    add_load_arguments(parser)
    parser.add_argument("--yield-every", type=int, default=None, metavar="N",
                        help="what-if: the watch thread calls time.sleep(0) (hands the GIL to"
                        " the event loop) after every N objects it converts")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="what-if: sys.setswitchinterval(SECONDS) (the GIL hand-over"
                        " period; CPython's default is 0.005)")
    parser.add_argument("--interval", type=float, default=0.001, help="seconds between queries")
    parser.add_argument("--baseline-seconds", type=float, default=3.0)
    parser.add_argument("--quiet-seconds", type=float, default=1.5)
    args = parser.parse_args()
    if args.list_page is not None:
        watching_module.LIST_PAGE = args.list_page
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # ServerThread's new loop
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    if args.yield_every:
        yield_every(args.yield_every)
    print(environment(), flush=True)
    kind = "headless" if args.headless else "ClusterIP"
    print(f"# {args.clusters} cluster(s) x {args.services} {kind} services x {args.endpoints} "
          f"endpoints "
          f"({args.services * args.endpoints} endpoints per cluster, {args.per_slice} per slice; "
          f"the re-list is of east alone); "
          f"{args.relists} re-lists per run, {args.runs} runs; feddns in-process "
          f"({args.loop} loop), fake API and UDP client in child processes; LIST page "
          f"{watching_module.LIST_PAGE} objects"
          f"{'; what-if: gc.freeze() after the initial sync' if args.gc_freeze else ''}"
          f"{f'; what-if: sleep(0) every {args.yield_every} objects' if args.yield_every else ''}"
          f"; GIL switch interval {sys.getswitchinterval() * 1000:g} ms until the source"
          f" lowers it to {min(sys.getswitchinterval(), SWITCH_INTERVAL) * 1000:g} ms",
          flush=True)
    runs = []
    for r in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="feddns-bench-") as tmp:
            res = one_run(args, Path(tmp))
        runs.append(res)
        print(f"# run {r + 1}: initial sync {res['initial_sync_ms']:.0f} ms; re-list answered "
              f"median {res['answered_ms']:.0f} ms (max {res['answered_max_ms']:.0f}); loop lag "
              f"max {res['lag_max_ms']:.1f} ms, p99 {res['lag_p99_ms']:.1f} ms (baseline max "
              f"{res['base_lag_max_ms']:.1f}); queries during p50/p99/max "
              f"{res['q_p50']:.2f}/{res['q_p99']:.2f}/{res['q_max']:.2f} ms (n={res['q_n']}, "
              f"timeouts {res['timeouts']}), baseline {res['b_p50']:.2f}/{res['b_p99']:.2f}/"
              f"{res['b_max']:.2f} ms (n={res['b_n']}); during, each query's own round trip "
              f"p50/p99 {res['rtt_p50']:.2f}/{res['rtt_p99']:.2f} ms and {res['served_qps']:.0f}"
              f" answers/s (offered {1 / args.interval:.0f}/s); re-list confirmed: "
              f"{res['relisted']}",
              flush=True)
    for name, key in (("relist-loop-lag-max-ms", "lag_max_ms"),
                      ("relist-loop-lag-p99-ms", "lag_p99_ms"),
                      ("baseline-loop-lag-max-ms", "base_lag_max_ms"),
                      ("relist-query-p50-ms", "q_p50"), ("relist-query-p99-ms", "q_p99"),
                      ("relist-query-max-ms", "q_max"),
                      ("baseline-query-p50-ms", "b_p50"), ("baseline-query-p99-ms", "b_p99"),
                      ("baseline-query-max-ms", "b_max"),
                      ("relist-query-rtt-p50-ms", "rtt_p50"),
                      ("relist-query-rtt-p99-ms", "rtt_p99"),
                      ("relist-served-qps", "served_qps"),
                      ("relist-answered-ms", "answered_ms"),
                      ("initial-sync-ms", "initial_sync_ms")):
        figure(name, median([r[key] for r in runs]))
    figure("relist-query-timeouts", int(sum(r["timeouts"] for r in runs)))


if __name__ == "__main__":
    main()
