"""The liveness probe of one cluster's API server, in a thread of its own.

Why it exists: a silent partition (the API server stops answering, sockets
stay open) is the commonest network failure, and a watch notices it only
when its read timeout expires: a minute by default, and longer again while
the reconnection waits out its own timeouts. Meanwhile the cluster counts as
fresh and its addresses are answered. The probe asks ``GET /version`` (served
by the API server from memory: no etcd read, no list) every
``probe_interval`` seconds with ``probe_timeout`` for the whole request, so
a silent cluster is marked stale within ``probe_interval + probe_timeout``
seconds (4 s with the defaults) whatever ``read_timeout`` says. Its cost is
one small request per interval: 30 requests a minute per replica per
cluster with the defaults.

On the first failure it reports the loss and restarts every watch of the
cluster (they would hang on the silent connection); while failing it asks
again every ``retry_interval`` (a blip that heals within the hold-down must
be seen healed within it); on the first success after that it reports the
recovery and restarts the watches that have not re-established themselves
(a request sent into the partition may still be waiting for its answer).
Every success is also a sign of freshness (``Alive``), which is what the
warm-start snapshot and ``max_stale`` count from.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from feddns.sources.kubernetes.client import ClusterClient
from feddns.sources.kubernetes.watching import Alive, Event, Healthy, Lost

log = logging.getLogger(__name__)

PROBE = "probe"
"""The resource name the probe's events carry (the source tracks it like a watch)."""
RETRY_INTERVAL = 0.5
"""Seconds between probes while the API server does not answer."""


class Prober:
    """Probes one cluster's API server until stopped, in a daemon thread."""

    def __init__(self, client: ClusterClient, emit: Callable[[Event], None], *,
                 interval: float, timeout: float, cluster: str,
                 on_failure: Callable[[], None], on_recovery: Callable[[], None],
                 retry_interval: float = RETRY_INTERVAL) -> None:
        self.client = client
        self.emit = emit
        self.interval = interval
        self.timeout = timeout
        self.retry_interval = min(retry_interval, interval)
        self.cluster = cluster
        self.on_failure = on_failure
        self.on_recovery = on_recovery
        self.stopping = threading.Event()
        self.probes = 0
        self.failures = 0
        self.thread = threading.Thread(target=self._run, name=f"probe-{cluster}", daemon=True)

    def start(self) -> None:
        """Start probing."""
        self.thread.start()

    def stop(self) -> None:
        """Stop probing (the thread ends within one probe timeout)."""
        self.stopping.set()

    def _run(self) -> None:
        failing = False
        while not self.stopping.is_set():
            error = self.client.probe(self.timeout)
            self.probes += 1
            if self.stopping.is_set():
                return
            if error is None:
                if failing:
                    failing = False
                    log.info("cluster %s: the API server answers the liveness probe again",
                             self.cluster)
                    self.emit(Healthy(PROBE))
                    self.on_recovery()
                self.emit(Alive(PROBE))
                # Jittered (+-10 %), so replicas' and clusters' probes do not march in step.
                self.stopping.wait(self.interval * (0.9 + 0.2 * random.random()))
                continue
            self.failures += 1
            if not failing:
                failing = True
                log.warning("cluster %s: liveness probe failed (%s); restarting its watches",
                            self.cluster, error)
                self.emit(Lost(PROBE, f"liveness probe failed: {error}"))
                self.on_failure()
            self.stopping.wait(self.retry_interval)
