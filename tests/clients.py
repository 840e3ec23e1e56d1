"""The C library's ``getaddrinfo`` as a test client, built against glibc and against musl.

Why it exists: applications reach feddns through their C library, and the two C
libraries of Linux containers treat the same answers differently. glibc asks A and
AAAA and keeps whichever succeeded; musl (Alpine images) asks both at once and
accepts only NOERROR and NXDOMAIN replies, so a SERVFAIL for either type makes the
whole lookup fail with EAI_AGAIN once its timeout (5 s) has passed. dig cannot show
that; ``tests/clients/getaddrinfo.c`` built twice can: with ``gcc`` (glibc,
dynamically linked) and with ``musl-gcc -static`` (Debian package musl-tools; a
static binary needs no musl installed where it runs).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.netns import Namespace, require

SOURCE = Path(__file__).resolve().parent / "clients" / "getaddrinfo.c"

# libc -> (compiler, Debian package, extra flags)
COMPILERS = {
    "glibc": ("gcc", "gcc", ()),
    "musl": ("musl-gcc", "musl-tools", ("-static",)),
}


@dataclass(frozen=True)
class Resolver:
    """One build of ``resolve``: which C library it uses and where the binary is."""

    libc: str
    path: Path

    def lookup(self, namespace: Namespace, names: Iterable[str], *,
               family: str | None = None) -> Lookups:
        """Resolve ``names`` inside ``namespace`` in one run; ``family`` "-4" or "-6"."""
        args = [str(self.path), *([family] if family else []), *names]
        began = time.monotonic()
        done = namespace.run(*args, timeout=60)
        return Lookups(self.libc, parse_lookups(done.stdout), time.monotonic() - began,
                       done.stdout + done.stderr)


@dataclass(frozen=True)
class Lookups:
    """The outcome of one run: name -> "ok ADDR ..." or "error EAI_xxx", and how long it took."""

    libc: str
    results: dict[str, str]
    seconds: float
    output: str


def parse_lookups(stdout: str) -> dict[str, str]:
    """``resolve``'s lines as name -> "ok ADDR ..." or "error EAI_xxx" (message text dropped)."""
    results = {}
    for line in stdout.splitlines():
        name, outcome, *rest = line.split()
        results[name] = " ".join([outcome, *rest]) if outcome == "ok" else f"error {rest[0]}"
    return results


def build_resolvers(directory: Path) -> dict[str, Resolver]:
    """Compile ``resolve`` for each C library into ``directory``; fail with the compiler's words."""
    resolvers = {}
    for libc, (compiler, package, flags) in COMPILERS.items():
        exe = require(compiler, package)
        out = directory / f"resolve-{libc}"
        built = subprocess.run(
            [exe, *flags, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(SOURCE)],
            capture_output=True, text=True, check=False, timeout=120)
        if built.returncode != 0:
            pytest.fail(f"cannot build {SOURCE.name} with {compiler}:\n{built.stderr}")
        resolvers[libc] = Resolver(libc, out)
    return resolvers


@pytest.fixture(scope="session")
def resolvers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Resolver]:
    """``resolve`` built against glibc and musl, once per test session."""
    return build_resolvers(tmp_path_factory.mktemp("clients"))
