"""The bus's topic tree: building topics for own data and parsing peers' topics.

Why it exists: the topic is half of what a message's MAC covers, so a
message cannot be moved to another cluster's or another service's topic; the
layout is defined once here so publisher and receiver cannot drift apart::

    <prefix>/<federation>/clusters/<cluster>/status                 retained, QoS 1
    <prefix>/<federation>/clusters/<cluster>/snapshot               retained, QoS 1
    <prefix>/<federation>/clusters/<cluster>/services/<ns>/<name>   retained, QoS 1

``snapshot`` is the cluster's manifest (the list of its service keys), which
lets a receiver tell a removed service from one whose retained message has
not arrived (or was lost by a broker restart).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from feddns.model.services import ServiceKey


class TopicKind(enum.StrEnum):
    """What a topic carries."""

    STATUS = "status"
    """Online/offline (and the last will) of the instance publishing the cluster."""
    SNAPSHOT = "snapshot"
    """The manifest: every service key the cluster currently has."""
    SERVICE = "service"
    """One service of the cluster."""


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A topic split into its meaning (not yet trusted: the MAC is checked later)."""

    cluster: str
    kind: TopicKind
    key: ServiceKey | None = None


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names for one federation under one prefix."""

    prefix: str
    federation: str

    @property
    def base(self) -> str:
        """``<prefix>/<federation>/clusters``."""
        return f"{self.prefix}/{self.federation}/clusters"

    @property
    def subscription(self) -> str:
        """The one wildcard subscription that receives every cluster's data."""
        return f"{self.base}/#"

    def status(self, cluster: str) -> str:
        """The status topic of ``cluster``."""
        return f"{self.base}/{cluster}/status"

    def snapshot(self, cluster: str) -> str:
        """The manifest topic of ``cluster``."""
        return f"{self.base}/{cluster}/snapshot"

    def service(self, cluster: str, key: ServiceKey) -> str:
        """The topic of one service of ``cluster``."""
        return f"{self.base}/{cluster}/services/{key[0]}/{key[1]}"

    def parse(self, topic: str) -> ParsedTopic | None:
        """Split a received topic; None when it is not one of ours."""
        head = self.base + "/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head):].split("/")
        if len(parts) == 2 and parts[0] and parts[1] in (TopicKind.STATUS, TopicKind.SNAPSHOT):
            return ParsedTopic(parts[0], TopicKind(parts[1]))
        if len(parts) == 4 and parts[1] == "services" and all(parts):
            return ParsedTopic(parts[0], TopicKind.SERVICE, (parts[2], parts[3]))
        return None
