"""Data loaded from the bus for a cluster that is not fresh is no loss of a fresh cluster.

Regression (found by the fault-sequence harness, ``bench/chaos.py``, issue #12): an
instance warm-started while one peer cluster was down at its publisher and its own
cluster's source had not synced yet suspected a self-isolation within milliseconds
("clusters north, west lost within 5 s"), because loading the bus's data marked each
cluster FRESH for an instant before its real state (STALE) was set. The episode held
every cluster as before, stale-signalled, for up to ``max_hold``: a partitioned
cluster's address stayed in the answers next to the fresh one's.
"""

from __future__ import annotations

from feddns.model.registry import ClusterState, Registry
from feddns.policy.health import Damping, Isolation, isolation_episode
from tests.unit.test_bus_codec import NOW, Peer, feed, make_merger, web


def transitions(registry: Registry, cluster: str) -> list[ClusterState]:
    return [state for _, state in registry.clusters[cluster].transitions]


def test_a_peer_loaded_while_its_publisher_reports_it_stale_is_never_fresh_here() -> None:
    merger, peer = make_merger(), Peer()
    feed(merger, peer.status(state=ClusterState.STALE), peer.service(web()),
         peer.manifest(("shop", "web")))
    assert merger.registry.clusters["east"].state is ClusterState.STALE
    assert ClusterState.FRESH not in transitions(merger.registry, "east")


def test_data_relayed_for_an_own_cluster_not_synced_yet_is_never_fresh_here() -> None:
    merger, replica = make_merger("east", own=("east",)), Peer(instance="east-replica")
    feed(merger, replica.status(), replica.service(web()), replica.manifest(("shop", "web")))
    assert merger.registry.clusters["east"].state is ClusterState.STALE
    assert ClusterState.FRESH not in transitions(merger.registry, "east")


def test_a_start_during_an_outage_suspects_no_self_isolation() -> None:
    registry = Registry.for_clusters(["east", "west", "north"])
    merger = make_merger(own=("north",), registry=registry)
    east, west = Peer("east", instance="a-1"), Peer("west", instance="a-1")
    north = Peer("north", instance="a-1")
    feed(merger, east.status(), east.service(web()), east.manifest(("shop", "web")),
         west.status(state=ClusterState.STALE), west.service(web("10.2.0.1")),
         west.manifest(("shop", "web")),
         north.status(), north.service(web("10.3.0.1")), north.manifest(("shop", "web")))
    assert [registry.clusters[c].state for c in ("east", "west", "north")] == [
        ClusterState.FRESH, ClusterState.STALE, ClusterState.STALE]
    assert isolation_episode(registry.clusters.values(), now=NOW + 1, damping=Damping(),
                             isolation=Isolation()) is None
