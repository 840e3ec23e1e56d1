"""The README's quick start works as written: `make demo`, and every `dig` line it shows.

Runs the README's first command (``make demo``) as a user would, then replays each
``$ dig @127.0.0.1 -p 5353 ...`` line of the README against it with the real ``dig``
and compares the output with the lines the README prints below it (record order
aside: answers rotate; and ages aside: ``synced 1s ago``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests.support import REPO, wait_until

DEMO_PORT = 5353


def readme_dig_examples() -> list[tuple[str, list[str]]]:
    """(dig arguments, expected output lines) for every dig example in the README."""
    text = (REPO / "README.md").read_text()
    out = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        lines = [line.strip() for line in block.splitlines()]
        i = 0
        while i < len(lines):
            if lines[i].startswith("$ dig @127.0.0.1 -p 5353 "):
                args = lines[i].removeprefix("$ dig @127.0.0.1 -p 5353 ")
                expected = []
                i += 1
                while i < len(lines) and not lines[i].startswith("$"):
                    if lines[i]:
                        expected.append(lines[i])
                    i += 1
                out.append((args, expected))
            else:
                i += 1
    return out


def normalise(line: str) -> str:
    return re.sub(r"synced \d+s ago", "synced Ns ago", " ".join(line.split()))


@pytest.fixture(scope="module")
def make_demo() -> Iterator[None]:
    if shutil.which("make") is None or shutil.which("dig") is None:
        pytest.skip("make and dig are installed on every machine make test runs on")
    proc = subprocess.Popen(["make", "-s", "demo"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        def answers() -> bool:
            done = subprocess.run(["dig", "@127.0.0.1", "-p", str(DEMO_PORT), "+short",
                                   "+time=1", "+tries=1", "web.shop.svc.clusterset.local"],
                                  capture_output=True, text=True, check=False)
            return "10.96.1.10" in done.stdout

        wait_until(answers, timeout=120, interval=0.2)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


EXAMPLES = readme_dig_examples()


def test_the_readme_shows_dig_examples() -> None:
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize(("args", "expected"), EXAMPLES, ids=[a for a, _ in EXAMPLES])
def test_each_readme_dig_example_prints_what_the_readme_says(
        make_demo: None, args: str, expected: list[str]) -> None:
    done = subprocess.run(["dig", "@127.0.0.1", "-p", str(DEMO_PORT), *args.split()],
                          capture_output=True, text=True, timeout=20, check=False)
    got = [line for line in done.stdout.splitlines()
           if line.strip() and "WARNING" not in line]
    assert sorted(map(normalise, got)) == sorted(map(normalise, expected))
