"""Shared fixtures: the demo federation served on a free loopback port, and more.

``namespace`` (a pod-like network namespace, tests/netns.py) is registered here as
a plugin, so pytest rewrites its asserts before any test module imports it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import DEMO_CONFIG, ServerThread, serve

pytest_plugins = ["tests.netns"]


@pytest.fixture(scope="session")
def demo_server() -> Iterator[ServerThread]:
    """The embedded demo, served once for the whole session (read-only tests only)."""
    with serve(DEMO_CONFIG) as server:
        yield server
