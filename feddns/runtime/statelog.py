"""Cluster state changes, logged once each, whichever source or timer caused them.

Why it exists: a cluster's state moves for many reasons (its watch, its probe,
the bus, a timer, a reload), and an operator reading the log wants one line per
change, with the reason, not one per event. This remembers the last state seen
per cluster and logs the difference; the app calls it after every compile and
on the monitor's tick.
"""

from __future__ import annotations

import logging

from feddns.model.registry import ClusterState, Registry

log = logging.getLogger("feddns.app")


class ClusterStateLog:
    """Logs each cluster's state change once (INFO when fresh, WARNING otherwise)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._seen: dict[str, ClusterState] = {}

    def note(self) -> None:
        """Log the changes since the last call."""
        seen = self._seen
        for name, entry in self.registry.clusters.items():
            before = seen.get(name, ClusterState.SYNCING)
            seen[name] = entry.state
            if before is entry.state:
                continue
            why = f" ({entry.error})" if entry.error else ""
            level = logging.INFO if entry.state is ClusterState.FRESH else logging.WARNING
            log.log(level, "cluster %s: %s -> %s%s", name, before.value, entry.state.value, why)
        for name in [n for n in seen if n not in self.registry.clusters]:
            del seen[name]
