"""Asking the broker again for retained messages that never arrived.

Why it exists: a broker sends a new subscriber every retained message at once and
drops what the subscriber cannot take fast enough (mosquitto: beyond
``max_queued_messages``, default 1000, QoS 0 included; a large republish can
overflow a slow subscriber the same way), so a peer can miss services or a whole
manifest, and would keep that cluster "unknown" until the next republish. The
repair asks for exactly what is missing, in adaptive batches, and gives up on
nothing: a topic the broker has nothing for is asked again less and less often.
It uses the MQTT client only through :class:`Subscriber` (aiomqtt stays in
:mod:`.bus`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from feddns.sources.mqtt.merging import Merger
from feddns.sources.mqtt.topics import Topics

log = logging.getLogger("feddns.sources.mqtt.bus")

REPAIR_INTERVAL = 2.0
"""Seconds between two looks for retained messages that never arrived."""
REPAIR_MAX_INTERVAL = 60.0
"""Longest pause between two requests for topics the broker had nothing for."""
REPAIR_NEXT_BATCH = 0.5
"""Pause before the next request while a repair is making progress."""
REPAIR_BUSY_RATE = 200.0
"""Incoming messages per second above which a backlog is taken to be still arriving
(steady change traffic and heartbeats stay well below)."""
REPAIR_BATCH = 500
"""Most topics asked for at once: half of mosquitto's default ``max_queued_messages``."""
REPAIR_MIN_BATCH = 16
REPAIR_WAIT = 10.0
"""Longest wait for the answers to one request before unsubscribing again."""
REPAIR_IDLE = 2.0
"""Seconds without one more asked topic arriving after which a request is over."""
REPAIR_LOOK = 0.25
"""Seconds between two looks at what a request brought."""


class Subscriber(Protocol):
    """The MQTT client, as the repair uses it."""

    async def subscribe(self, topic: Any, *args: Any, **kwargs: Any) -> Any:
        """Subscribe (the broker sends the topics' retained messages)."""

    async def unsubscribe(self, topic: Any, *args: Any, **kwargs: Any) -> Any:
        """Unsubscribe."""


class GapRepair:
    """One session's repair loop (see the module docstring)."""

    def __init__(self, client: Subscriber, merger: Merger, topics: Topics, *,
                 counter: Callable[[], int], clock: Callable[[], float],
                 ack_timeout: float) -> None:
        self.client = client
        self.merger = merger
        self.topics = topics
        self.received = counter
        """Incoming messages so far (a backlog still arriving holds the repair back)."""
        self.clock = clock
        self.ack_timeout = ack_timeout
        self.requests = 0
        """Topics asked for again so far."""

    async def run(self) -> None:
        """Every ``REPAIR_INTERVAL``, unless a backlog is still pouring in, ask for the gaps.

        The gaps (:meth:`Merger.gaps`) seen at the previous look too are asked for by
        exact topic: the broker sends each one's retained message again, then the
        exact subscriptions are dropped. The batch halves while part of it goes
        missing and grows back when all of it arrives; topics the broker has
        nothing for are asked again less and less often (up to
        ``REPAIR_MAX_INTERVAL``).
        """
        wait = REPAIR_INTERVAL
        batch_size = REPAIR_BATCH
        seen = self.received()
        previous: set[str] = set()
        while True:
            await asyncio.sleep(wait)
            arrived, seen = self.received() - seen, self.received()
            if arrived > REPAIR_BUSY_RATE * wait:
                continue  # a backlog is still arriving: what is missing may be in it
            gaps = self.merger.gaps(self.topics)
            asked = [topic for topic in gaps if topic in previous][:batch_size]
            if not asked:
                previous, wait = set(gaps), REPAIR_INTERVAL
                continue
            if not self.requests:
                log.info("bus: %d retained message(s) missing (first: %s); asking the"
                         " broker for them again", len(gaps), asked[0])
            self.requests += len(asked)
            await self._ask(asked)
            seen = self.received()
            previous = set(self.merger.gaps(self.topics))
            still = sum(1 for topic in asked if topic in previous)
            if still == len(asked):  # nothing came: the broker has nothing for them now
                wait = min(wait * 2, REPAIR_MAX_INTERVAL)
            else:
                wait = REPAIR_NEXT_BATCH
                batch_size = (max(REPAIR_MIN_BATCH, batch_size // 2) if still
                              else min(REPAIR_BATCH, batch_size * 2))

    async def _ask(self, topics: Sequence[str]) -> None:
        await self.client.subscribe([(topic, 0) for topic in topics],
                                    timeout=self.ack_timeout)
        await self._until_answered(topics)
        await self.client.unsubscribe(list(topics), timeout=self.ack_timeout)
        self.merger.flush(now=self.clock())

    async def _until_answered(self, topics: Sequence[str]) -> None:
        """Wait until every asked topic arrived, or none did for ``REPAIR_IDLE`` s.

        Progress is judged by the asked topics themselves, not by the rate of
        incoming messages: on a busy host the first answers can take longer than
        one look to arrive, and unsubscribing then loses them all. At most
        ``REPAIR_WAIT`` s.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPAIR_WAIT
        wanted = set(topics)
        remaining = len(wanted)
        idle = 0.0
        while loop.time() < deadline:
            await asyncio.sleep(REPAIR_LOOK)
            now_remaining = sum(1 for topic in self.merger.gaps(self.topics) if topic in wanted)
            if now_remaining == 0:
                return
            if now_remaining < remaining:
                remaining, idle = now_remaining, 0.0
            else:
                idle += REPAIR_LOOK
                if idle >= REPAIR_IDLE:
                    return
