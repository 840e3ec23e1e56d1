"""The MQTT federation bus: the only package that imports ``aiomqtt``.

Every feddns instance publishes the clusters it sources itself and receives
every other member's, so each instance sees the whole federation; losing the
broker only ages peers' data (fresh -> stale), it never removes it. See
``bus`` (connection), ``codec`` (signed payloads), ``merging`` (peers into
the registry) and ``publishing`` (own data out).
"""

from feddns.sources.mqtt.bus import BusStats, FederationBus, PeerStats
from feddns.sources.mqtt.codec import KeyRing, Reason

__all__ = ["BusStats", "FederationBus", "KeyRing", "PeerStats", "Reason"]
