"""Which broker of ``bus.brokers`` to try next, and when to pause (no I/O, no clock).

Why it exists: with several brokers (a bridged pair, a cluster), losing the one in
use must move to the next at once, and only a whole round of failures may wait out
a back-off; the rule is small, but it decides how long the bus is gone, so it is
kept apart and tested alone.
"""

from __future__ import annotations


class BrokerRounds:
    """Which broker to try next, and whether to pause first (no I/O, no clock).

    Attempts go round the list in order, starting at the first. After an attempt the
    next broker is tried at once, unless every attempt of the last whole round (as
    many as there are brokers, in a row) failed to establish a session: then the
    caller pauses (backoff) before going on.
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("at least one broker")
        self.count = count
        self.index = 0
        """The broker to try now (an index into the configured list)."""
        self.failed = 0
        """Attempts in a row that did not establish a session."""

    def ended(self, *, established: bool) -> bool:
        """The attempt at :attr:`index` ended; move on. True: pause before the next one."""
        self.failed = 0 if established else self.failed + 1
        self.index = (self.index + 1) % self.count
        return self.failed > 0 and self.failed % self.count == 0
