"""The warm-start store: the registry loaded from the snapshot at start, saved while running.

Why it exists: a restarted feddns must answer at once, even when every API
server and the bus are unreachable. At start the snapshot's clusters are
restored as stale data, aged from when each one's source was last known fresh;
a warm start counts as synced for the sync gate (the clusters the snapshot did
not have stop holding back NXDOMAIN at once: they never synced before the
restart either). While running, the registry is saved every ``interval``
seconds when it changed; when only freshness moved (a quiet cluster whose
source is healthy), the small freshness file is rewritten instead. A full disk
keeps the last good snapshot and is logged once per episode. The file format
and its atomic writes live in :mod:`feddns.sources.snapshot`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from feddns.model.registry import ClusterState, Registry
from feddns.model.services import ClusterSnapshot
from feddns.sources import snapshot

log = logging.getLogger("feddns.app")


class WarmStart:
    """Loads and saves one instance's snapshot."""

    def __init__(self, path: Path, registry: Registry, *, federation: str,
                 clock: Callable[[], float], wall: Callable[[], float]) -> None:
        self.path = path
        self.registry = registry
        self.federation = federation
        self.clock = clock
        self.wall = wall
        self.warm_started = False
        """True once the snapshot restored at least one cluster."""

    async def load(self, *, known: set[str], max_stale: float) -> bool:
        """Restore the snapshot's ``known`` clusters as stale data; True when any was."""
        started = time.perf_counter()
        saved = await asyncio.to_thread(snapshot.load, self.path, federation=self.federation,
                                        wall_now=self.wall(), max_stale=max_stale)
        now, wall = self.clock(), self.wall()
        for name, item in saved.items():
            if name in known:
                self.registry.restore(item.snapshot, now=now,
                                      age=max(0.0, wall - item.synced_wall))
                self.warm_started = True
        if self.warm_started:
            missing = [n for n in self.registry.awaited() if self.registry.stop_waiting(n)]
            if missing:
                log.warning("warm start: clusters %s are not in the snapshot; not waiting for"
                            " them (unsynced until they sync)", ", ".join(missing))
            # Compiled in batches once serving (and any service a query asks for, at once).
            log.info("warm start: answering from the snapshot after %.0f ms",
                     (time.perf_counter() - started) * 1000)
        return self.warm_started

    async def save_forever(self, interval: Callable[[], float]) -> None:
        """Save the registry every ``interval()`` seconds when it changed (cancel to stop)."""
        saved_generation = -1
        saved_body: str | None = None
        saved_fresh: dict[str, float] = {}
        failing = False
        while True:
            await asyncio.sleep(interval())
            if not any(e.snapshot is not None for e in self.registry.clusters.values()):
                continue  # nothing known yet: never replace a good snapshot with an empty one
            now, wall = self.clock(), self.wall()
            # Copied here, on the loop: the registry changes its dicts in place. Times in
            # whole seconds: a fresh cluster's moves on every save, a lost one's does not.
            live = {e.name: (e.snapshot, float(int(wall - (now - e.last_fresh))))
                    for e in self.registry.clusters.values()
                    if e.snapshot is not None and e.last_fresh is not None
                    and e.state is not ClusterState.EXPIRED}
            fresh = {name: at for name, (_, at) in live.items()}
            generation = self.registry.generation
            try:
                if generation != saved_generation or saved_body is None:
                    # One cluster's services copied per turn of the loop (a million
                    # endpoints' worth in one go held queries for milliseconds); each
                    # cluster is copied whole, as the registry holds it at that turn.
                    clusters = {}
                    for name, (snap, at) in live.items():
                        current = self.registry.clusters.get(name)
                        now_snap = current.snapshot if current is not None else None
                        services = (now_snap or snap).services
                        clusters[name] = snapshot.SavedCluster(
                            ClusterSnapshot(name, dict(services)), at)
                        await asyncio.sleep(0)
                    data = await asyncio.to_thread(snapshot.encode, clusters,
                                                   federation=self.federation, wall=wall)
                    await asyncio.to_thread(snapshot.write_atomically, self.path, data)
                    saved_generation, saved_body = generation, snapshot.body_digest(data)
                elif fresh != saved_fresh:
                    data = snapshot.encode_freshness(fresh, federation=self.federation,
                                                     body=saved_body)
                    await asyncio.to_thread(snapshot.write_atomically,
                                            snapshot.freshness_path(self.path), data)
                else:
                    continue
            except OSError as exc:
                if not failing:
                    log.error("cannot save the snapshot to %s: %s (still serving from memory;"
                              " the previous snapshot is kept)", self.path, exc)
                failing = True
                continue
            if failing:
                log.info("snapshot saved to %s again", self.path)
            failing = False
            saved_fresh = fresh
