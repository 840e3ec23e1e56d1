"""Sources feed per-cluster snapshots into the registry.

Each source converts its input (a file, a Kubernetes API, the MQTT bus) into
:mod:`feddns.model` objects at the door and writes only through the
registry's methods, on the event loop. To the rest of feddns a source is a
:class:`Source`: something with a name for the logs that runs until cancelled.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class Source(Protocol):
    """One running source (the supervisor restarts it when it fails)."""

    @property
    def label(self) -> str:
        """How logs name it (``kubernetes source east``)."""

    async def run(self) -> None:
        """Feed the registry until cancelled."""


@runtime_checkable
class CountedSource(Protocol):
    """A source of one cluster that counts its lists and events (for metrics)."""

    cluster: str
    relists: int
    events: int
