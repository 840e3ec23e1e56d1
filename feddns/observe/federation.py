"""The federation page's JSON: the overview, the services x clusters matrix, the plots.

Why it exists: the page served at ``/ui`` (``observe/page/``) is static files
that poll these views; keeping the JSON here, next to ``/debug``'s, leaves the
HTTP module with routing only and makes every view testable without a browser.
The overview is ``/debug``'s view plus what a person looking at it wants
(zones, each cluster's last state changes, the damping that decides when a
lost cluster stops answering). The matrix is paged and filtered on the server,
so a page of it costs the same at 10 services as at 10,000: the sorted list of
service names is kept until the answer table's serial moves. Everything runs
on the event loop, like every other reader, without locks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from feddns.model.registry import ClusterState
from feddns.observe.debug import debug_view
from feddns.policy.health import Level

if TYPE_CHECKING:
    from feddns.model.services import ServiceKey
    from feddns.observe.instance import Instance
    from feddns.table.plans import ServicePlan

MAX_PAGE = 200
"""Most matrix rows in one answer."""
MAX_QUERY = 200
"""Characters of a search kept (a search costs one pass over the names per word)."""

LEVELS = {level: level.name.lower().replace("_", "-") for level in Level}
"""Health level -> its name on the page (``ready``, ``last-resort``, ``stale``, ...)."""


def overview_view(app: Instance) -> dict[str, Any]:
    """``/debug``'s view, with each cluster's zones and last state changes."""
    view = debug_view(app)
    wall_now = app.timeline.wall()
    zones = {c.name: list(c.zones) for c in app.settings.clusters}
    for cluster in view["clusters"]:
        cluster["zones"] = zones.get(cluster["name"], [])
        cluster["transitions"] = app.timeline.transitions_view(cluster["name"], wall_now)
    last = app.stats.last_reload_wall
    view["reloads"]["last_at"] = None if last is None else round(last, 3)
    view["reloads"]["last_ago_seconds"] = (None if last is None
                                           else round(max(0.0, wall_now - last), 3))
    selection = app.settings.selection
    view["damping"] = {"hold_down_seconds": selection.hold_down,
                       "readmit_after_seconds": selection.readmit_after}
    view["max_stale_seconds"] = app.settings.freshness.max_stale
    view["now"] = round(wall_now, 3)
    return view


class ServiceIndex:
    """The answer table's services as sorted ``NAMESPACE/NAME`` strings, kept per serial.

    Sorting 10,000 names on every poll of the page would cost the event loop a few
    milliseconds each time; the list changes only when the table does.
    """

    def __init__(self) -> None:
        self._key: tuple[int, int, int] | None = None
        self.names: list[str] = []
        self.keys: list[ServiceKey] = []

    def refresh(self, app: Instance) -> None:
        """Rebuild the lists when the table (or its serial, or its size) changed."""
        table = app.compiler.table
        key = (id(table), table.serial, len(table.plans))
        if key != self._key:
            self.keys = sorted(table.plans)
            self.names = [f"{ns}/{name}" for ns, name in self.keys]
            self._key = key

    def search(self, query: str) -> list[int]:
        """Indexes of the services whose name contains every word of ``query``."""
        words = query.lower().split()
        if not words:
            return list(range(len(self.names)))
        return [i for i, name in enumerate(self.names) if all(w in name for w in words)]


def matrix_view(app: Instance, index: ServiceIndex, *, query: str = "", offset: int = 0,
                limit: int = 50) -> dict[str, Any]:
    """One page of the services x clusters matrix, filtered by ``query``.

    A cell says how many of the service's endpoints are ready in that cluster's data,
    the best health level its candidates have in the compiled plan (what the colour
    shows), their weight, and whether the service's residency excludes the cluster.
    """
    index.refresh(app)
    query = query[:MAX_QUERY]
    matches = index.search(query)
    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, min(offset, max(0, len(matches) - 1)))
    clusters = [(name, entry) for name, entry in app.registry.clusters.items()]
    regions = {c.name: c.region for c in app.settings.clusters}
    table = app.compiler.table
    rows = []
    for i in matches[offset:offset + limit]:
        key = index.keys[i]
        plan = table.plans.get(key)
        if plan is None:
            continue
        cells = []
        for name, entry in clusters:
            svc = (entry.snapshot.services.get(key) if entry.snapshot is not None
                   and entry.state is not ClusterState.EXPIRED else None)
            cells.append(_cell(plan, name, regions.get(name), svc is not None,
                               ready=sum(1 for e in svc.endpoints if e.ready) if svc else 0,
                               endpoints=len(svc.endpoints) if svc else 0))
        rows.append({
            "service": index.names[i],
            "headless": plan.headless,
            "regions": sorted(plan.regions) if plan.regions is not None else None,
            "none_healthy": plan.none_healthy.value,
            "expired": plan.expired,
            "cells": cells,
        })
    return {
        "query": query,
        "total": len(index.names),
        "matches": len(matches),
        "offset": offset,
        "limit": limit,
        "clusters": [{"name": name, "region": regions.get(name), "state": entry.display_state}
                     for name, entry in clusters],
        "rows": rows,
    }


def _cell(plan: ServicePlan, cluster: str, region: str | None, present: bool, *, ready: int,
          endpoints: int) -> dict[str, Any]:
    candidates = [c for c in plan.candidates if c.cluster == cluster]
    region = region or next((c.region for c in candidates), None)
    excluded = plan.regions is not None and region not in plan.regions
    best = min((c.level for c in candidates), default=None)
    return {
        "present": present,
        "ready": ready,
        "endpoints": endpoints,
        "level": None if best is None else LEVELS[best],
        "weight": round(sum(c.weight for c in candidates), 3) if candidates else None,
        "excluded": excluded,
    }


def series_view(app: Instance) -> dict[str, Any]:
    """The plots' data: rates over the last minutes (see ``Timeline.series_view``)."""
    return app.timeline.series_view()
