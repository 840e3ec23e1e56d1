"""feddns: an authoritative cross-cluster service-discovery DNS server.

The package version lives here so that the CLI, the ``dns-version``-style
diagnostics and the packaging metadata all read one value; and the moment the
process started, which time limits "from start" count from (the sync gate's
``sync_timeout`` includes the second the imports take).
"""

import time

__version__ = "0.1.0"

STARTED = time.monotonic()
"""Monotonic time this package was first imported (the process's start, for the CLI)."""
