"""Several fake Kubernetes API servers plus one kubeconfig: a fake cluster federation.

feddns serves records merged from many member clusters and is configured with
one kubeconfig holding one context per cluster.  ``FakeFederation`` starts K
``FakeCluster`` instances on ephemeral loopback ports and writes exactly that
kubeconfig (context name == cluster name, dotted names allowed), so
integration tests can run the product against a realistic multi-cluster setup.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tests.fakekube.server import FakeCluster, write_kubeconfig

__all__ = ["FakeFederation"]


class FakeFederation:
    """K started ``FakeCluster`` instances and a combined kubeconfig.

    ``FakeFederation(["east", "west.prod"], directory=tmp_path)`` gives
    ``fed["east"]``, ``fed.clusters`` (name → cluster, in order), ``fed.names``
    and ``fed.kubeconfig`` (a Path).  With ``token_files=True`` (default) each
    cluster gets ``<directory>/<name>.token`` and the kubeconfig references it
    via ``tokenFile``, so ``rotate_token()`` is visible to clients that re-read
    the kubeconfig.  Extra keyword arguments go to every ``FakeCluster``.
    """

    def __init__(
        self,
        names: Iterable[str] = ("east", "west"),
        *,
        directory: str | os.PathLike[str] | None = None,
        token_files: bool = True,
        **cluster_kwargs: Any,
    ) -> None:
        self.names = list(names)
        if len(set(self.names)) != len(self.names) or not self.names:
            raise ValueError(f"need distinct, non-empty cluster names, got {self.names}")
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="fakekube-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.clusters: dict[str, FakeCluster] = {
            name: FakeCluster(
                name,
                token_file=self.directory / f"{name}.token" if token_files else None,
                **cluster_kwargs,
            )
            for name in self.names
        }
        self.kubeconfig = self.directory / "kubeconfig"

    def start(self) -> FakeFederation:
        """Start every cluster and (re)write the combined kubeconfig."""
        try:
            for cluster in self.clusters.values():
                cluster.start()
        except BaseException:
            self.stop()
            raise
        self.write_kubeconfig()
        return self

    def stop(self) -> None:
        """Stop every cluster (and delete the directory if this object created it)."""
        for cluster in self.clusters.values():
            cluster.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def write_kubeconfig(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the one-context-per-cluster kubeconfig (default: ``self.kubeconfig``)."""
        return write_kubeconfig(path or self.kubeconfig, self.clusters.values())

    def __getitem__(self, name: str) -> FakeCluster:
        return self.clusters[name]

    def __iter__(self) -> Iterator[FakeCluster]:
        return iter(self.clusters.values())

    def __len__(self) -> int:
        return len(self.clusters)

    def __enter__(self) -> FakeFederation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
