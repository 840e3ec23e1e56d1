"""A short seeded fault-sequence run gives no wrong answer (issue #12).

Runs ``bench/chaos.py`` (the CLI, as a subprocess: it also stands as the bench's smoke
run) for 90 s with a fixed seed: two real feddns processes, two bridged mosquittos,
three fake API servers and Unbound, every fault kind at least once, clients asking
throughout. It must report no wrong answer and no crash, and it must show that it
did the work: every fault kind applied, enough answers checked, the verifier's rules
armed (so the test cannot pass vacuously). The verifier itself is tested with
synthetic wrong answers in ``tests/unit/test_chaos_verifier.py``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mosquitto import MOSQUITTO
from tests.support import REPO

FIGURE = re.compile(r"^([a-z0-9-]+): (\S+)$", re.MULTILINE)
COMMENT = re.compile(r"^# (fault|rule) ([a-z0-9-]+): (.*)$", re.MULTILINE)
KINDS = ("down-at-start", "watch-drop", "gone-410", "token-rotation", "api-blip",
         "api-outage", "partition", "long-outage", "mass-loss", "broker-kill",
         "instance-term", "instance-kill")


@pytest.mark.slow
@pytest.mark.skipif(not Path(MOSQUITTO).exists()
                    or (shutil.which("unbound") is None
                        and not Path("/usr/sbin/unbound").exists()),
                    reason="mosquitto and unbound are installed by make test")
def test_a_short_seeded_fault_sequence_gives_no_wrong_answer() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--minutes", "1.5", "--seed", "12",
         "--fault-gap", "5"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout
    figures = dict(FIGURE.findall(out))
    wrong = [line for line in out.splitlines() if line.startswith(("WRONG", "CRASH"))]
    assert proc.returncode == 0 and not wrong, "\n".join(wrong[:20]) + proc.stderr[-3000:]
    assert figures["chaos-wrong-answers"] == "0"
    assert figures["chaos-crashes"] == "0"
    assert figures["chaos-seed"] == "12"
    comments = {(kind, name): value for kind, name, value in COMMENT.findall(out)}
    applied = {k: int(comments[("fault", k)]) for k in KINDS}
    assert all(n >= 1 for n in applied.values()), applied
    assert int(figures["chaos-faults"]) >= len(KINDS) + 3
    assert int(figures["chaos-restarts-during-outage"]) >= 1
    assert int(figures["chaos-answers-direct"]) >= 1000
    assert int(figures["chaos-answers-resolver"]) >= 300
    armed = {name: int(value.split(",")[0].split()[-1])
             for (kind, name), value in comments.items() if kind == "rule"}
    for rule in ("known-name", "obsolete-address", "fresh-candidate", "dead-cluster-address",
                 "expired-answer", "resolver-known-name"):
        assert armed.get(rule, 0) > 0, f"rule {rule} never armed: {armed}"
