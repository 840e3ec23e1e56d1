"""Prometheus metrics: the scrape-time collector and the exposition.

Why it exists: the query path must stay cheap, so nothing on it touches the
Prometheus client. The handler, the transports and the app count in plain
ints, lists and :class:`~feddns.histogram.Buckets`; :class:`FeddnsCollector`
reads them only when ``/metrics`` is scraped and turns them into metric
families, each defined in :data:`~feddns.observe.families.METRICS`. This is
the only module that imports ``prometheus_client``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from itertools import compress
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from feddns import __version__
from feddns.dns import slots
from feddns.histogram import Buckets
from feddns.observe.counting import RCODE_NAMES, qtype_label
from feddns.observe.families import METRICS, STATE_VALUES

if TYPE_CHECKING:
    from feddns.observe.instance import BusStatsLike, Instance

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format served at ``/metrics``."""

_BY_NAME = {m.name: m for m in METRICS}

def name_from_wire(name: bytes) -> str:
    """A name in wire form as text with a trailing dot (``clusterset.local.``)."""
    labels = []
    pos = 0
    while pos < len(name) and name[pos]:
        n = name[pos]
        labels.append(name[pos + 1 : pos + 1 + n].decode("ascii", "replace"))
        pos += n + 1
    return ".".join(labels) + "."


def origin_labels() -> dict[int, str]:
    """Origin slot -> ``origin`` label value."""
    labels = {0: "", slots.ORIGIN_SLOTS - 1: "other"}
    labels.update({slot: name_from_wire(wire) for slot, wire in slots.origin_names().items()})
    return labels


class UsedSlots:
    """The indices of the answer counters that are not zero, without a scan per scrape.

    Counters only grow, so a slot once used stays used: the indices found are kept,
    and the whole list (55,512 slots) is scanned again only when the sum of all
    counters (one C call) differs from the sum of the known ones, that is when an
    answer of a new kind was sent since. A Python scan of every slot held the event
    loop for milliseconds at every scrape.
    """

    __slots__ = ("known",)

    def __init__(self) -> None:
        self.known: list[int] = []

    def of(self, counts: list[int]) -> list[int]:
        """The indices of the nonzero counters of ``counts``."""
        if sum(counts) != sum([counts[i] for i in self.known]):
            self.known = list(compress(range(len(counts)), counts))
        return self.known


def query_totals(counts: list[int], used: UsedSlots | None = None,
                 ) -> tuple[dict[tuple[str, str, str], int], dict[str, int]]:
    """Fold the handler's count slots into ``{(origin, qtype, rcode): n}`` and stale counts."""
    totals: dict[tuple[str, str, str], int] = {}
    stale: dict[str, int] = {}
    origins = origin_labels()
    per_origin = slots.RCODE_SLOTS * slots.QTYPE_SLOTS
    for index in (used or UsedSlots()).of(counts):
        n = counts[index]
        # The regions (whole, lean, truncated) fold into one count.
        oslot, rest = divmod(index % slots.COUNT_SLOTS, per_origin)
        rslot, qtype = divmod(rest, slots.QTYPE_SLOTS)
        origin = origins.get(oslot, "other")
        key = (origin, qtype_label(qtype), RCODE_NAMES[rslot])
        totals[key] = totals.get(key, 0) + n
        if rslot == slots.SLOT_STALE:
            stale[origin] = stale.get(origin, 0) + n
    return totals, stale


def _family(name: str) -> CounterMetricFamily | GaugeMetricFamily:
    """An empty counter or gauge family, as :data:`METRICS` defines it."""
    spec = _BY_NAME[name]
    if spec.kind == "counter":
        return CounterMetricFamily(name, spec.help, labels=spec.labels)
    assert spec.kind == "gauge", name
    return GaugeMetricFamily(name, spec.help, labels=spec.labels)


def _histogram_family(name: str) -> HistogramMetricFamily:
    spec = _BY_NAME[name]
    assert spec.kind == "histogram", name
    return HistogramMetricFamily(name, spec.help, labels=spec.labels)


def _histogram(name: str, buckets: Buckets,
               label_values: tuple[str, ...] = ()) -> HistogramMetricFamily:
    family = _histogram_family(name)
    family.add_metric(list(label_values), _bucket_samples(buckets), buckets.total)
    return family


def _bucket_samples(buckets: Buckets) -> list[tuple[str, float]]:
    return [("+Inf" if b == float("inf") else repr(b), float(n))
            for b, n in buckets.cumulative()]


def _single(name: str, value: float) -> Metric:
    family = _family(name)
    family.add_metric([], value)
    return family


class FeddnsCollector(Collector):
    """Builds every ``feddns_*`` family from the app's plain counters, at scrape time.

    Runs on the event loop (the HTTP endpoint is served there), so it reads the
    registry and the table without locks, like every other reader.
    """

    def __init__(self, app: Instance) -> None:
        self.app = app
        self.used = UsedSlots()

    def describe(self) -> list[Metric]:
        """Nothing: the families are built at scrape time (no duplicate-name check)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every family, in the order of :data:`METRICS`."""
        yield from self._dns()
        yield from self._clusters()
        yield from self._table()
        yield from self._process()
        if self.app.bus_stats is not None:
            stats = self.app.bus_stats()
            if stats is not None:
                yield from _bus(stats)

    def _dns(self) -> Iterator[Metric]:
        handler = self.app.handler
        totals, stale = query_totals(handler.front.folded(), self.used)
        queries = _family("feddns_dns_queries_total")
        for (origin, qtype, rcode), n in sorted(totals.items()):
            queries.add_metric([origin, qtype, rcode], n)
        yield queries
        stale_family = _family("feddns_dns_stale_answers_total")
        for origin, n in sorted(stale.items()):
            stale_family.add_metric([origin], n)
        yield stale_family
        latency = _histogram_family("feddns_dns_answer_duration_seconds")
        stats = self.app.server.stats
        for transport, buckets in sorted(stats.latency.items()):
            latency.add_metric([transport], _bucket_samples(buckets), buckets.total)
        yield latency
        dropped = _family("feddns_dns_dropped_total")
        dropped.add_metric(["short"], handler.counters["dropped_short"])
        dropped.add_metric(["response"], handler.counters["dropped_response"])
        yield dropped
        yield _single("feddns_dns_truncated_total", handler.truncated_total())
        errors = _family("feddns_dns_transport_errors_total")
        for kind, n in sorted(stats.errors.items()):
            errors.add_metric([kind], n)
        yield errors
        yield _single("feddns_dns_tcp_connections", stats.tcp_connections)
        yield _single("feddns_dns_tcp_accepted_total", stats.tcp_accepted)
        yield _single("feddns_dns_tcp_connections_peak", stats.tcp_peak)
        yield _single("feddns_dns_tcp_shed_total", stats.tcp_shed)
        timeouts = _family("feddns_dns_tcp_timeouts_total")
        for reason in ("handshake", "idle", "io"):
            timeouts.add_metric([reason], stats.tcp_timeouts[reason])
        yield timeouts
        limits = handler.limits
        limited = _family("feddns_dns_rrl_limited_total")
        limited.add_metric(["slipped"], limits.slipped)
        limited.add_metric(["dropped"], limits.dropped)
        yield limited
        yield _single("feddns_dns_rrl_prefixes", len(limits.rrl) if limits.rrl is not None else 0)
        yield _single("feddns_dns_acl_refused_total", limits.refused)

    def _clusters(self) -> Iterator[Metric]:
        app = self.app
        now = app.clock()
        state = _family("feddns_cluster_state")
        age = _family("feddns_cluster_data_age_seconds")
        fresh_age = _family("feddns_cluster_fresh_age_seconds")
        services = _family("feddns_cluster_services")
        endpoints = _family("feddns_cluster_endpoints")
        info = _family("feddns_cluster_info")
        regions = {c.name: c.region for c in app.settings.clusters}
        kinds = app.source_kinds()
        for name, entry in app.registry.clusters.items():
            shown = entry.display_state
            for value in STATE_VALUES:
                state.add_metric([name, value], 1.0 if shown == value else 0.0)
            if entry.last_sync is not None:
                age.add_metric([name], max(0.0, now - entry.last_sync))
            if entry.last_fresh is not None:
                fresh_age.add_metric([name], max(0.0, now - entry.last_fresh))
            snap = entry.snapshot
            services.add_metric([name], len(snap.services) if snap is not None else 0)
            endpoints.add_metric([name], entry.endpoints)
            info.add_metric([name, regions.get(name, ""), kinds.get(name, "bus")], 1)
        yield from (state, age, fresh_age, services, endpoints, info)
        relists = _family("feddns_source_relists_total")
        events = _family("feddns_source_events_total")
        for cluster, (n_relists, n_events) in sorted(app.kubernetes_counts().items()):
            relists.add_metric([cluster], n_relists)
            events.add_metric([cluster], n_events)
        yield relists
        yield events

    def _table(self) -> Iterator[Metric]:
        app = self.app
        summary = app.compiler.table.summary()
        yield _single("feddns_table_names", summary["names"])
        yield _single("feddns_table_services", summary["services"])
        yield _single("feddns_table_compiled_answers", summary["compiled_answers"])
        yield _single("feddns_table_serial", summary["serial"])
        compiled = app.compiler.stats
        yield _histogram("feddns_table_compile_duration_seconds", compiled.compile_seconds)
        yield _histogram("feddns_table_programming_duration_seconds",
                         compiled.programming_seconds)
        yield _single("feddns_table_changed_services_total", compiled.changed_services)

    def _process(self) -> Iterator[Metric]:
        app = self.app
        stats = app.stats
        yield _single("feddns_isolation_suspected",
                      1.0 if app.compiler.isolation is not None else 0.0)
        yield _single("feddns_isolation_episodes_total", app.compiler.stats.isolation_episodes)
        yield _single("feddns_ready", 1.0 if app.is_ready else 0.0)
        reloads = _family("feddns_config_reloads_total")
        for result in ("success", "failure"):
            reloads.add_metric([result], stats.reloads[result])
        yield reloads
        yield _single("feddns_config_last_reload_successful", 1.0 if stats.last_reload_ok else 0.0)
        build = _family("feddns_build_info")
        build.add_metric([__version__, app.settings.federation], 1)
        yield build
        loop = app.loop
        tasks = len(asyncio.all_tasks(loop)) if loop is not None and not loop.is_closed() else 0
        yield _single("feddns_event_loop_tasks", tasks)
        yield _single("feddns_event_loop_lag_seconds", max(stats.loop_lag, default=0.0))


def _bus(stats: BusStatsLike) -> Iterator[Metric]:
    yield _single("feddns_bus_connected", 1.0 if stats.connected else 0.0)
    in_use = _family("feddns_bus_broker_in_use")
    for broker in stats.brokers:
        in_use.add_metric([broker], 1.0 if stats.connected and broker == stats.broker else 0.0)
    yield in_use
    yield _single("feddns_bus_connects_total", stats.connects)
    yield _single("feddns_bus_published_total", stats.published)
    yield _single("feddns_bus_received_total", stats.received)
    yield _single("feddns_bus_applied_total", stats.applied)
    yield _single("feddns_bus_duplicates_total", stats.duplicates)
    yield _single("feddns_bus_dropped_total", stats.dropped)
    yield _single("feddns_bus_gap_requests_total", stats.gap_requests)
    yield _single("feddns_bus_oversized_total", stats.oversized_own)
    rejected = _family("feddns_bus_rejected_total")
    # Every reason from the start: a counter that appears at 1 is no increase to
    # Prometheus, and the FeddnsBusRejections alert would miss the first rejection.
    for reason in sorted({*stats.reasons, *stats.rejected}):
        rejected.add_metric([reason], stats.rejected.get(reason, 0))
    yield rejected
    online = _family("feddns_bus_peer_online")
    heartbeat = _family("feddns_bus_peer_heartbeat_age_seconds")
    refused = _family("feddns_bus_peer_rejected_services")
    for cluster, peer in sorted(stats.peers.items()):
        if peer.online is not None:
            online.add_metric([cluster], 1.0 if peer.online else 0.0)
        if peer.heartbeat_age is not None:
            heartbeat.add_metric([cluster], peer.heartbeat_age)
        refused.add_metric([cluster], len(peer.rejected_services))
    yield online
    yield heartbeat
    yield refused


def build_registry(app: Instance) -> CollectorRegistry:
    """A registry of its own per app (several apps may run in one test process)."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(FeddnsCollector(app))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The text a scrape gets."""
    return generate_latest(registry)


SLICE_FAMILIES = 8
"""Metric families collected and formatted per turn of the event loop."""


class _Families(Collector):
    """Some families already collected (what one slice formats)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


async def exposition_in_slices(registry: CollectorRegistry) -> bytes:
    """:func:`exposition`, ``SLICE_FAMILIES`` families per turn of the loop.

    A scrape runs on the event loop; built at once it held the loop for one to three
    milliseconds (``bench.loop_stalls``), which every query waiting then waited too.
    The families are read a few at a time, so two of them may be a turn of the loop
    apart (each is consistent in itself, as Prometheus expects of a scrape anyway).
    """
    parts: list[bytes] = []
    batch: list[Metric] = []
    for family in registry.collect():
        batch.append(family)
        if len(batch) >= SLICE_FAMILIES:
            parts.append(generate_latest(_Families(batch)))
            batch = []
            await asyncio.sleep(0)
    if batch:
        parts.append(generate_latest(_Families(batch)))
    return b"".join(parts)
