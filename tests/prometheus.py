"""A real Prometheus server for tests: Debian's ``prometheus``, on loopback, its own data.

Why it exists: the alert rules and the dashboard are only worth something if a real
Prometheus loads them, scrapes a real feddns and evaluates them; promtool's unit tests
check the rules' logic on made-up series, this checks them against what feddns really
exports. Each server gets a free port, a fresh TSDB folder, a one-second scrape and
evaluation interval, and the rules given; it is stopped (SIGTERM, then SIGKILL) at the
end. Queries go through Prometheus's own HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.ports import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "config" / "prometheus" / "feddns-rules.yaml"
RULE_TESTS = REPO / "config" / "prometheus" / "feddns-rules.test.yaml"


def missing() -> str | None:
    """Why Prometheus tests cannot run here (None: they can)."""
    if not (Path(PROMETHEUS).exists() and Path(PROMTOOL).exists()):
        return "Debian package prometheus is not installed (make test installs it)"
    return None


def rules_with_for(rules: Path, duration: str, out: Path) -> Path:
    """A copy of ``rules`` with every ``for:`` set to ``duration`` (the test's clock).

    Expressions, labels and annotations stay as shipped: only the wait before an
    alert fires is shortened, so the test sees a fault turn into a firing alert in
    seconds, not minutes.
    """
    data = yaml.safe_load(rules.read_text())
    for group in data["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = duration
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


class Prometheus:
    """One Prometheus process scraping ``targets`` every second."""

    def __init__(self, folder: Path, targets: list[str], *, rules: Path | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": "feddns",
                                "static_configs": [{"targets": targets}]}],
        }
        if rules is not None:
            config["rule_files"] = [str(rules)]
        self.config = folder / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Prometheus:
        log = (self.folder / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.config}",
             f"--storage.tsdb.path={self.folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log}")
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"prometheus not ready within {timeout} s: {self.log}")

    @property
    def log(self) -> str:
        path = self.folder / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a successful answer."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise AssertionError(f"prometheus answered {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) of ``expr`` now."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def firing(self) -> list[dict[str, str]]:
        """The labels of every firing alert."""
        return [alert["labels"] for alert in self.api("alerts")["alerts"]
                if alert["state"] == "firing"]

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)


@contextlib.contextmanager
def prometheus(folder: Path, targets: list[str], *,
               rules: Path | None = None) -> Iterator[Prometheus]:
    """A started Prometheus, stopped when the block ends."""
    server = Prometheus(folder, targets, rules=rules)
    try:
        yield server.start()
    finally:
        server.stop()
