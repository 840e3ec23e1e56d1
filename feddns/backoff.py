"""Retry delays after failures: one policy for every retry loop in feddns.

Why it exists: a Kubernetes watch, the MQTT connection and a background task
that crashed all retry the same way, and used to do it with three copies of
the arithmetic. The policy (client-go's reflector numbers):

* the first ``fast_window`` seconds of a failure episode retry every
  ``FAST_DELAY`` (jittered up to 1.5x): a blip that heals within the
  selection's hold-down must be seen healed within it (with plain doubling,
  a 1.5 s refusal reconnected only after 3.3 s, past the 3 s hold-down);
* after that, ``initial`` doubling to ``maximum``, each delay jittered in
  [d, 2d) and capped;
* a success ends the episode (the next failure starts a new fast window);
  ``reset_after`` seconds of health reset the exponential part to ``initial``.

No I/O, no clock: the caller passes ``now`` (monotonic) and sleeps itself.
"""

from __future__ import annotations

import random

FAST_DELAY = 0.25
"""Pause between attempts within the fast window after a loss (jittered up to 1.5x)."""


class Backoff:
    """The delays of one retry loop (see the module docstring)."""

    __slots__ = ("_failing_since", "_healthy_since", "current", "fast_window", "initial",
                 "maximum", "reset_after")

    def __init__(self, *, initial: float = 0.8, maximum: float = 30.0,
                 reset_after: float = 120.0, fast_window: float = 0.0) -> None:
        self.initial = min(initial, maximum)
        self.maximum = maximum
        self.reset_after = reset_after
        self.fast_window = fast_window
        self.current = self.initial
        self._healthy_since: float | None = None
        self._failing_since: float | None = None

    def healthy(self, now: float) -> None:
        """Note a success: the episode ends.

        After ``reset_after`` seconds of successes the delay starts over from ``initial``.
        """
        self._failing_since = None
        if self._healthy_since is None:
            self._healthy_since = now
        elif now - self._healthy_since >= self.reset_after:
            self.current = self.initial

    def reset(self) -> None:
        """Start over: the last attempt went well for long (a session, a task's run)."""
        self.current = self.initial
        self._failing_since = None

    def next_delay(self, now: float | None = None) -> float:
        """The pause before the next attempt, after a failure at ``now`` (monotonic).

        Without ``now`` there is no fast window: only the exponential part.
        """
        self._healthy_since = None
        if now is not None:
            if self._failing_since is None:
                self._failing_since = now
            if now - self._failing_since < self.fast_window:
                return min(FAST_DELAY * (1 + random.random() / 2), self.maximum)
        delay = self.current
        self.current = min(self.current * 2, self.maximum)
        return min(delay * (1 + random.random()), self.maximum)
