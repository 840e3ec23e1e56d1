"""Every metric feddns exports, defined once: name, type, labels, meaning.

Why it exists: the collector (:mod:`.metrics`) builds every family from
:data:`METRICS`, and ``docs/operations.md`` renders its table from it
(:func:`render_metrics_table`; a test keeps the two equal), so the docs cannot
drift from what ``/metrics`` serves. Label values are bounded: query types
outside a fixed list are "other", rcodes are the handful feddns sends, origins
are configured ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from feddns.model.registry import ClusterState

STATE_VALUES = (*(s.value for s in ClusterState), "unsynced")
"""Every ``state`` label value of ``feddns_cluster_state`` (``ClusterEntry.display_state``)."""

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric feddns exports."""

    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str


METRICS: tuple[MetricDef, ...] = (
    # --- DNS -----------------------------------------------------------------------
    MetricDef("feddns_dns_queries_total", "counter", ("origin", "qtype", "rcode"),
              "Answers sent, by served origin (empty unless the rcode is NOERROR or NXDOMAIN),"
              " query type (common types by name, others \"other\") and response code."),
    MetricDef("feddns_dns_stale_answers_total", "counter", ("origin",),
              "Answers built from stale data (RFC 8767); EDNS clients also get Extended DNS"
              " Error 3, Stale Answer. Included in feddns_dns_queries_total as NOERROR."),
    MetricDef("feddns_dns_answer_duration_seconds", "histogram", ("transport",),
              "Time from a query's arrival to its answer being sent, sampled: the first"
              " query after each 10 ms, per transport."),
    MetricDef("feddns_dns_dropped_total", "counter", ("reason",),
              "Packets dropped without an answer: \"short\" (under 12 octets) or \"response\""
              " (QR set)."),
    MetricDef("feddns_dns_truncated_total", "counter", (),
              "UDP answers sent empty with TC=1 because they did not fit the client's size."),
    MetricDef("feddns_dns_transport_errors_total", "counter", ("kind",),
              "Unexpected errors while handling a packet, by transport and exception (each"
              " kind is logged once); \"udp_icmp\" counts ICMP errors for earlier answers."),
    MetricDef("feddns_dns_tcp_connections", "gauge", (), "Open TCP connections."),
    MetricDef("feddns_dns_tcp_accepted_total", "counter", (), "TCP connections accepted."),
    MetricDef("feddns_dns_tcp_connections_peak", "gauge", (),
              "Most TCP connections open at once since start (at most dns.max_tcp_clients)."),
    MetricDef("feddns_dns_tcp_shed_total", "counter", (),
              "TCP connections closed as soon as accepted because dns.max_tcp_clients"
              " connections were open."),
    MetricDef("feddns_dns_tcp_timeouts_total", "counter", ("reason",),
              "TCP connections closed by a timeout: \"handshake\" (no complete first query"
              " within dns.tcp_handshake_timeout), \"idle\" (dns.tcp_idle_timeout) or"
              " \"io\" (a message or an answer stalled for dns.tcp_io_timeout)."),
    MetricDef("feddns_dns_rrl_limited_total", "counter", ("action",),
              "UDP responses over a client prefix's rate (dns.rrl): \"slipped\" (sent empty"
              " with TC=1, so the client retries over TCP) or \"dropped\" (not sent)."),
    MetricDef("feddns_dns_rrl_prefixes", "gauge", (),
              "Client prefixes holding a rate-limit bucket (bounded; idle ones are evicted)."),
    MetricDef("feddns_dns_acl_refused_total", "counter", (),
              "Queries answered REFUSED because their source is outside dns.allow, or asked"
              " an _explain name from outside names.explain_allow (also counted in"
              " feddns_dns_queries_total)."),
    # --- clusters and sources ------------------------------------------------------
    MetricDef("feddns_cluster_state", "gauge", ("cluster", "state"),
              "1 for the cluster's current state (syncing, fresh, stale, expired, or unsynced:"
              " no data yet and past freshness.sync_timeout), 0 for the others."),
    MetricDef("feddns_cluster_fresh_age_seconds", "gauge", ("cluster",),
              "Seconds since the cluster's source was last known fresh (a sync, a change, a"
              " bookmark, a liveness probe, a heartbeat); what max_stale counts from."),
    MetricDef("feddns_cluster_data_age_seconds", "gauge", ("cluster",),
              "Seconds since the cluster's data was last received (a list or a change;"
              " absent before the first). A quiet source's data ages while it stays fresh:"
              " read it with feddns_cluster_state."),
    MetricDef("feddns_cluster_services", "gauge", ("cluster",),
              "Services in the cluster's current data."),
    MetricDef("feddns_cluster_endpoints", "gauge", ("cluster",),
              "Endpoints in the cluster's current data."),
    MetricDef("feddns_cluster_info", "gauge", ("cluster", "region", "source"),
              "1 per cluster, with its region and source kind (static, kubernetes, bus)."),
    MetricDef("feddns_source_relists_total", "counter", ("cluster",),
              "Complete lists received by a Kubernetes source (start, 410 Gone, reconnects)."),
    MetricDef("feddns_source_events_total", "counter", ("cluster",),
              "Watch events applied by a Kubernetes source."),
    # --- answer table ----------------------------------------------------------------
    MetricDef("feddns_table_names", "gauge", (), "Names in the answer table."),
    MetricDef("feddns_table_services", "gauge", (), "Services in the answer table."),
    MetricDef("feddns_table_compiled_answers", "gauge", (),
              "Memoized answers, over every client class."),
    MetricDef("feddns_table_serial", "gauge", (), "The SOA serial."),
    MetricDef("feddns_table_compile_duration_seconds", "histogram", (),
              "Time of one compile turn that changed something (at most 200 services)."),
    MetricDef("feddns_table_programming_duration_seconds", "histogram", (),
              "Time from a registry change (a source event) to the end of the compile that"
              " put the last pending change into the answer table."),
    MetricDef("feddns_table_changed_services_total", "counter", (),
              "Services whose answers changed on a compile."),
    # --- process state -----------------------------------------------------------
    MetricDef("feddns_isolation_suspected", "gauge", (),
              "1 while a self-isolation episode holds answers as they were (most clusters"
              " lost within selection.isolation.window), else 0."),
    MetricDef("feddns_isolation_episodes_total", "counter", (),
              "Suspected self-isolation episodes since start."),
    MetricDef("feddns_ready", "gauge", (),
              "1 once the sync gate opened: every cluster synced (or was restored from the"
              " warm-start snapshot) or freshness.sync_timeout passed (/readyz)."),
    MetricDef("feddns_config_reloads_total", "counter", ("result",),
              "Config reloads (SIGHUP), by result: success or failure."),
    MetricDef("feddns_config_last_reload_successful", "gauge", (),
              "0 when the last reload was rejected (the previous config still runs), else 1."),
    MetricDef("feddns_build_info", "gauge", ("version", "federation"),
              "1, with the feddns version and the federation name."),
    MetricDef("feddns_event_loop_tasks", "gauge", (), "Tasks on the event loop."),
    MetricDef("feddns_event_loop_lag_seconds", "gauge", (),
              "Largest event-loop lag (a timer's lateness) over the last ten seconds;"
              " queries wait at least this long while it lasts."),
    # --- federation bus ----------------------------------------------------------
    MetricDef("feddns_bus_connected", "gauge", (), "1 while connected to the MQTT broker."),
    MetricDef("feddns_bus_broker_in_use", "gauge", ("broker",),
              "1 for the broker the bus is connected to, 0 for the other configured ones"
              " (bus.brokers, host:port)."),
    MetricDef("feddns_bus_connects_total", "counter", (), "Successful broker connections."),
    MetricDef("feddns_bus_published_total", "counter", (), "Messages published."),
    MetricDef("feddns_bus_received_total", "counter", (), "Messages received."),
    MetricDef("feddns_bus_applied_total", "counter", (),
              "Received messages that changed the registry."),
    MetricDef("feddns_bus_duplicates_total", "counter", (),
              "Received messages already known (ignored)."),
    MetricDef("feddns_bus_dropped_total", "counter", (),
              "Received messages discarded because the bounded queue was full."),
    MetricDef("feddns_bus_gap_requests_total", "counter", (),
              "Topics asked for again because their retained message never arrived (a"
              " broker drops what a new subscriber cannot take fast enough)."),
    MetricDef("feddns_bus_oversized_total", "counter", (),
              "Own messages not published because they exceed max_payload_size."),
    MetricDef("feddns_bus_rejected_total", "counter", ("reason",),
              "Received messages rejected (signature, replay, address policy, ...)."),
    MetricDef("feddns_bus_peer_online", "gauge", ("cluster",),
              "1 while the cluster's publisher says it is online, 0 after its last will."),
    MetricDef("feddns_bus_peer_heartbeat_age_seconds", "gauge", ("cluster",),
              "Seconds since the cluster's last heartbeat on the bus."),
    MetricDef("feddns_bus_peer_rejected_services", "gauge", ("cluster",),
              "Services of the cluster whose latest bus message was refused (address policy,"
              " signature, ...): the last accepted version, if any, still answers; the"
              " cluster's other services are not held back."),
)
"""Every metric feddns defines (the process_* and python_* families come from
prometheus_client's standard collectors)."""


def render_metrics_table() -> str:
    """The Markdown table of every metric, for docs/operations.md (a test compares them)."""
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for m in METRICS:
        labels = ", ".join(f"`{label}`" for label in m.labels) or "-"
        text = m.help.replace("|", "\\|")
        lines.append(f"| `{m.name}` | {m.kind} | {labels} | {text} |")
    return "\n".join(lines) + "\n"
