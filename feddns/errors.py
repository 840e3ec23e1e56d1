"""Every error feddns raises on purpose derives from :class:`FeddnsError`.

One base class lets the CLI and the composition root tell an expected,
explainable failure (bad config, unreadable data file) from a bug, and print
the former as a clear one-line message instead of a traceback.
"""

from __future__ import annotations


class FeddnsError(Exception):
    """Base of every error feddns raises deliberately."""


class ConfigError(FeddnsError):
    """A configuration or data file is invalid; ``problems`` lists each one.

    Each problem is a ``"key.path: what was expected"`` line so the user can
    find and fix it without reading code.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def render(self) -> str:
        """Return the problems as a multi-line, user-facing message."""
        lines = [f"{self.source}: {len(self.problems)} problem(s)"]
        lines.extend(f"  {p}" for p in self.problems)
        return "\n".join(lines)


class WireError(FeddnsError):
    """A DNS message is malformed (answered FORMERR, or dropped when unreadable)."""
