"""The ``/debug`` JSON view: what a running feddns believes, for people and ``feddns status``.

Why it exists: "why does this name answer that?" is answered by the registry's
per-cluster state (fresh or stale, since when, why) and by a service's plan
(its candidates per cluster and their health level and weight); this module
renders both as plain JSON, together with the DNS transport's limits and
their counters. ``/debug?services=1`` lists every service of the answer table
(``feddns soak`` walks it). It runs on the event loop, so it reads the
registry and the answer table without locks, and reads the clock once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from feddns import __version__
from feddns.model.services import ServiceKey
from feddns.observe.metrics import name_from_wire

if TYPE_CHECKING:
    from feddns.observe.instance import BusStatsLike, Instance


def debug_view(app: Instance) -> dict[str, Any]:
    """The whole instance: clusters, answer table, bus, readiness and reloads."""
    now = app.clock()
    kinds = app.source_kinds()
    regions = {c.name: c.region for c in app.settings.clusters}
    clusters = []
    for name, entry in app.registry.clusters.items():
        snap = entry.snapshot
        clusters.append({
            "name": name,
            "region": regions.get(name),
            "source": kinds.get(name, "bus"),
            "state": entry.display_state,
            "state_age_seconds": round(max(0.0, now - entry.state_since), 3),
            "data_age_seconds": (None if entry.last_sync is None
                                 else round(max(0.0, now - entry.last_sync), 3)),
            "fresh_age_seconds": (None if entry.last_fresh is None
                                  else round(max(0.0, now - entry.last_fresh), 3)),
            "synced_once": entry.synced_once,
            "restored": entry.restored,
            "unsynced": entry.unsynced,
            "error": entry.error,
            "services": len(snap.services) if snap is not None else 0,
            "endpoints": entry.endpoints,
        })
    table: dict[str, Any] = dict(app.compiler.table.summary())
    table["origins"] = [o.name for o in app.settings.origins]
    table["loaded"] = app.compiler.table.loaded
    stats = app.stats
    bus = app.bus_stats() if app.bus_stats is not None else None
    return {
        "version": __version__,
        "federation": app.settings.federation,
        "config": str(app.config_path) if app.config_path is not None else None,
        "uptime_seconds": round(time.monotonic() - stats.started, 3),
        "ready": app.is_ready,
        "warm_started": app.warm_started,
        "isolation": None if app.compiler.isolation is None else {
            "suspected": True,
            "since_seconds": round(max(0.0, now - app.compiler.isolation.start), 3),
            "clusters": sorted(app.compiler.isolation.members),
            "max_hold_seconds": app.settings.selection.isolation.max_hold,
        },
        "sync_gate": {
            "open": app.registry.is_loaded,
            "sync_timeout_seconds": app.settings.freshness.sync_timeout,
            "awaited": app.registry.awaited(),
            "unsynced": app.registry.unsynced(),
        },
        "clusters": clusters,
        "hostnames": app.hostname_status(),
        "table": table,
        "bus": None if bus is None else bus_view(bus),
        "dns": dns_view(app),
        "reloads": {
            "success": stats.reloads["success"],
            "failure": stats.reloads["failure"],
            "last_ok": stats.last_reload_ok,
            "last_error": stats.last_reload_error,
        },
    }


def dns_view(app: Instance) -> dict[str, Any]:
    """The transport's limits and what they did: TCP connections, rate limiting, ACL."""
    stats = app.server.stats
    limits = app.handler.limits
    rrl = limits.rrl
    return {
        "tcp": {
            "connections": stats.tcp_connections,
            "peak": stats.tcp_peak,
            "max_clients": limits.max_tcp_clients,
            "accepted": stats.tcp_accepted,
            "shed": stats.tcp_shed,
            "timeouts": {reason: stats.tcp_timeouts[reason]
                         for reason in ("handshake", "idle", "io")},
        },
        "rrl": None if rrl is None else {
            "responses_per_second": rrl.rate,
            "burst": rrl.burst,
            "slip": rrl.slip,
            "prefixes": len(rrl),
            "evicted": rrl.evicted,
        },
        "rrl_slipped": limits.slipped,
        "rrl_dropped": limits.dropped,
        "acl": None if limits.acl is None else [str(n) for n in limits.acl.networks],
        "acl_refused": limits.refused,
    }


def services_view(app: Instance) -> dict[str, Any]:
    """Every service of the answer table as ``NAMESPACE/NAME``, and the served origins."""
    return {
        "services": [f"{ns}/{name}" for ns, name in sorted(app.compiler.table.plans)],
        "origins": [{"name": o.name, "service_address": o.service_address}
                    for o in app.settings.origins],
    }


def bus_view(bus: BusStatsLike) -> dict[str, Any]:
    """The bus's state and counters."""
    return {
        "connected": bus.connected,
        "broker": bus.broker,
        "brokers": list(bus.brokers),
        "connects": bus.connects,
        "last_error": bus.last_error,
        "published": bus.published,
        "received": bus.received,
        "applied": bus.applied,
        "duplicates": bus.duplicates,
        "dropped": bus.dropped,
        "gap_requests": bus.gap_requests,
        "rejected": dict(bus.rejected),
        "peers": {
            name: {"online": peer.online,
                   "heartbeat_age_seconds": (None if peer.heartbeat_age is None
                                             else round(peer.heartbeat_age, 3)),
                   "services": peer.services,
                   "complete": peer.complete,
                   "rejected_services": dict(peer.rejected_services),
                   "signed_with": peer.signed_with}
            for name, peer in sorted(bus.peers.items())
        },
    }


def parse_service(value: str) -> ServiceKey | None:
    """``"shop/web"`` -> ``("shop", "web")``; None when it is not ``NAMESPACE/NAME``."""
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name or "/" in name:
        return None
    return namespace, name


def service_view(app: Instance, key: ServiceKey) -> dict[str, Any] | None:
    """One service: each cluster's view of it and its compiled plan; None when unknown."""
    now = app.clock()
    views = []
    for entry in app.registry.clusters.values():
        svc = entry.snapshot.services.get(key) if entry.snapshot is not None else None
        if svc is None:
            continue
        views.append({
            "cluster": entry.name,
            "state": entry.state.value,
            "type": svc.type.value,
            "cluster_ips": list(svc.cluster_ips),
            "load_balancer_ips": list(svc.load_balancer_ips),
            "load_balancer_hostnames": list(svc.load_balancer_hostnames),
            "external_name": svc.external_name,
            "traffic_distribution": svc.traffic_distribution,
            "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol.value}
                      for p in svc.ports],
            "endpoints": [{"address": e.address, "ready": e.ready, "serving": e.serving,
                           "terminating": e.terminating, "hostname": e.hostname,
                           "zone": e.zone} for e in svc.endpoints],
        })
    plan = app.compiler.table.plans.get(key)
    if plan is None and not views:
        return None
    out: dict[str, Any] = {"service": f"{key[0]}/{key[1]}", "clusters": views, "plan": None}
    if plan is not None:
        out["plan"] = {
            "headless": plan.headless,
            "external": plan.external,
            "shares": [{"cluster": c, "percent": p} for c, p in plan.shares],
            "answer_mode": "ordered" if plan.subset is None else "subset",
            "subset_size": plan.subset,
            "capacity_aware": plan.capacity_aware,
            "allocation": [{"place": {"cluster": p.cluster, "region": p.region, "zone": p.zone},
                            "shares": [{"cluster": k[0], "name": name_from_wire(k[1])
                                        if k[1] else None, "share": v} for k, v in alloc]}
                           for p, alloc in plan.allocation],
            "expired": plan.expired,
            "regions": sorted(plan.regions) if plan.regions is not None else None,
            "none_healthy": plan.none_healthy.value,
            "record_ttl": plan.record_ttl,
            "stale_ttl": plan.stale_ttl,
            "max_records": plan.cap,
            "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol.value}
                      for p in plan.ports],
            "clusters": [{"name": c.name, "region": c.region, "state": c.state,
                          "fresh": c.fresh,
                          "data_age_seconds": (None if c.last_sync is None
                                               else round(max(0.0, now - c.last_sync), 3))}
                         for c in plan.clusters],
            "candidates": [{
                "cluster": c.cluster,
                "region": c.region,
                "zones": list(c.zones),
                "addresses": list(c.addresses),
                "load_balancer_addresses": list(c.lb_addresses),
                "load_balancer_resolved": list(c.lb_resolved),
                "load_balancer_only": c.lb_only,
                "external_name": (name_from_wire(c.external_name)
                                  if c.external_name is not None else None),
                "level": c.level.name.lower().replace("_", "-"),
                "family_levels": (None if c.family_levels is None else
                                  [lv.name.lower().replace("_", "-") for lv in c.family_levels]),
                "weight": c.weight,
                "capacity": c.capacity,
                "endpoint": c.endpoint,
                "name": name_from_wire(c.owner) if c.owner else None,
            } for c in plan.candidates],
        }
    return out
