"""Shared fixtures: the demo federation served on a free loopback port, a broker, and more.

``namespace`` (a pod-like network namespace, tests/netns.py) and ``resolvers``
(getaddrinfo built against glibc and musl, tests/clients.py) are registered here
as plugins, so pytest rewrites their asserts before any test module imports them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mosquitto import Mosquitto, mosquitto
from tests.support import DEMO_CONFIG, ServerThread, serve

pytest_plugins = ["tests.netns", "tests.clients"]


@pytest.fixture(scope="session")
def demo_server() -> Iterator[ServerThread]:
    """The embedded demo, served once for the whole session (read-only tests only)."""
    with serve(DEMO_CONFIG) as server:
        yield server


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh, real mosquitto (no persistence) for one test, stopped after it."""
    with mosquitto(tmp_path / "mosquitto") as started:
        yield started
