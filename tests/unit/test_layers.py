"""One owner per third-party library (STYLE.md rule 5), and a core without I/O (rule 2).

Swapping dnslib, moving to aiomqtt 3 or replacing the HTTP library must touch one
module; the model, policy and DNS semantics must not import sockets, threads or the
clock-reading parts of the standard library.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "feddns"

OWNERS = {
    "kubernetes": {"sources/kubernetes/client.py"},
    "aiomqtt": {"sources/mqtt/bus.py"},
    "paho": set(),
    "aiohttp": {"observe/http.py"},
    "prometheus_client": {"observe/metrics.py"},
    "dnslib": {"soak.py"},
}

PURE = ["model", "policy", "table", "wire.py", "histogram.py", "backoff.py"]
IO_MODULES = {"socket", "asyncio", "threading", "subprocess", "urllib", "aiohttp",
              "kubernetes", "aiomqtt", "time"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_each_third_party_library_is_imported_by_its_owner_only(library: str) -> None:
    users = {str(p.relative_to(PACKAGE)) for p in MODULES if library in imports(p)}
    assert users <= OWNERS[library], f"{library} imported outside its owner: {users}"


@pytest.mark.parametrize("part", PURE)
def test_the_core_does_no_io(part: str) -> None:
    target = PACKAGE / part
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    for path in files:
        bad = imports(path) & IO_MODULES
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"
