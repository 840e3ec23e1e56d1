"""The Kubernetes client's credential check: cheap when nothing changed, exact when it did.

Before every request and every liveness probe the client asks whether its
kubeconfig (or the token file it names) changed. It used to read and parse
the kubeconfig's YAML every time; now a settled file whose stat did not move
is not read at all, while a change, or a file too young to trust its stat
(``RACY_SECONDS``), is read again. No sockets: the client is never used.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from feddns.sources.kubernetes import client as client_module
from feddns.sources.kubernetes.client import ClusterClient


def kubeconfig(path: Path, token_file: Path) -> None:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "east",
        "clusters": [{"name": "east", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"tokenFile": str(token_file)}}],
        "contexts": [{"name": "east", "context": {"cluster": "east", "user": "u"}}],
    }))


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = client_module.yaml.load

    def counting(stream: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(stream, **kwargs)

    monkeypatch.setattr(client_module.yaml, "load", counting)
    return calls


def test_settled_unchanged_credentials_are_not_read_again_and_a_token_rotation_is_seen(
        tmp_path: Path, parses: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("one")
    config = tmp_path / "kubeconfig"
    kubeconfig(config, token)
    later = time.time() + 60  # the files are a minute old: their stat can be trusted
    monkeypatch.setattr(client_module.time, "time", lambda: later)
    cc = ClusterClient(kubeconfig=config, context=None, in_cluster=False)
    first = cc._current_fingerprint()
    for _ in range(5):
        assert cc._current_fingerprint() == first
    assert len(parses) == 1
    token.write_text("two!")  # rotated (another size, so another stat)
    assert cc._current_fingerprint() != first
    assert len(parses) == 2


def test_a_young_file_is_read_on_every_check(tmp_path: Path, parses: list[int]) -> None:
    token = tmp_path / "token"
    token.write_text("one")
    config = tmp_path / "kubeconfig"
    kubeconfig(config, token)
    cc = ClusterClient(kubeconfig=config, context=None, in_cluster=False)
    first = cc._current_fingerprint()
    assert cc._current_fingerprint() == first
    assert len(parses) == 2  # written just now: the stat alone is not trusted yet
