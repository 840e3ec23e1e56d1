"""Pytest fixtures for the fake Kubernetes API servers.

Use them from a test module or conftest with
``pytest_plugins = ["tests.fakekube.fixtures"]`` (root conftest only) or by
importing the fixture names.  Every fixture stops its servers at teardown, so
no thread or port outlives the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakekube.federation import FakeFederation
from tests.fakekube.server import FakeCluster

__all__ = ["fake_cluster", "fake_federation", "fake_federation_factory"]


@pytest.fixture
def fake_cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    """One started cluster named ``east`` whose token lives in ``tmp_path/east.token``.

    ``fake_cluster.kubeconfig`` is a kubeconfig (context ``east``) using that token file.
    """
    cluster = FakeCluster("east", token_file=tmp_path / "east.token")
    with cluster:
        cluster.write_kubeconfig(tmp_path / "kubeconfig")
        yield cluster


@pytest.fixture
def fake_federation_factory(tmp_path: Path) -> Iterator[Callable[..., FakeFederation]]:
    """Return ``make(names, **cluster_kwargs) -> started FakeFederation``; stopped at teardown."""
    started: list[FakeFederation] = []

    def make(names: Iterable[str] = ("east", "west"), **kwargs: Any) -> FakeFederation:
        fed = FakeFederation(names, directory=tmp_path / f"federation-{len(started)}", **kwargs)
        started.append(fed)
        return fed.start()

    yield make
    for fed in started:
        fed.stop()


@pytest.fixture
def fake_federation(fake_federation_factory: Callable[..., FakeFederation]) -> FakeFederation:
    """Return a started two-cluster federation: ``east`` and ``west.prod``."""
    return fake_federation_factory(("east", "west.prod"))
