"""The MQTT federation bus: the only package that imports ``aiomqtt``.

Every feddns instance publishes the clusters it sources itself and receives
every other member's, so each instance sees the whole federation; losing the
broker only ages peers' data (fresh -> stale), it never removes it. See
``bus`` (connection), ``codec`` (signed payloads), ``merging`` (peers into
the registry) and ``publishing`` (own data out).
"""

from feddns.sources.mqtt.bus import FederationBus
from feddns.sources.mqtt.codec import Reason
from feddns.sources.mqtt.keys import KeyRing
from feddns.sources.mqtt.stats import BusStats, PeerStats

__all__ = ["BusStats", "FederationBus", "KeyRing", "PeerStats", "Reason"]
