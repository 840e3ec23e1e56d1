"""Test support: Debian's headless Chromium driven by Selenium, and the axe-core checker.

Why it exists: the federation page is tested in a real browser, and that browser
must come from the machine's packages (``chromium``, ``chromium-driver``; `make
test` installs them), never from a download by a test tool. Selenium is given
both paths, so Selenium Manager never looks for a driver of its own. The flags
are the ones this closed network needs (Chromium's background connections are
refused here, many at a time, and slow its start). ``axe_source`` returns
axe-core, the accessibility engine, installed from the npm registry into the
repository's ``.cache/`` by ``make test`` (or here, on first use).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.support import REPO

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
AXE_PACKAGE = "axe-core@4.14.1"
"""The axe-core release the accessibility test runs (the Makefile pins the same one)."""
AXE_DIR = REPO / ".cache" / "axe-core"
AXE_FILE = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--disable-default-apps", "--metrics-recording-only", "--mute-audio",
)


def missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return "Debian packages chromium and chromium-driver are not installed (make test)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@contextlib.contextmanager
def chromium(*, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium under chromedriver, with a fresh profile; quit at the end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="feddns-chromium-")
    for flag in (*FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[str]:
    """The browser console's errors (and failed loads) since the last call."""
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] in ("SEVERE", "ERROR")]


def wait_for(driver: Any, predicate: Callable[[Any], Any], timeout: float = 10.0,
             interval: float = 0.05) -> Any:
    """Poll ``predicate(driver)`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate(driver)
        except Exception as exc:  # the DOM is re-rendered under us: try again
            last = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"page condition not met within {timeout} s (last error: {last})")


def axe_source() -> str | None:
    """axe-core's script, installed from the npm registry on first use; None without npm."""
    if not AXE_FILE.exists():
        npm = shutil.which("npm")
        if npm is None:
            return None
        AXE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix",
                        str(AXE_DIR), AXE_PACKAGE], check=True, timeout=300,
                       stdout=subprocess.DEVNULL)
    return AXE_FILE.read_text()


def run_axe(driver: Any, source: str) -> list[dict[str, Any]]:
    """Run axe-core (WCAG 2 A and AA rules) on the page; return its violations."""
    driver.execute_script(source)
    result: dict[str, Any] = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21aa",
                                                          "best-practice"]}})
           .then((r) => done({violations: r.violations.map((v) => ({
               id: v.id, impact: v.impact, help: v.help,
               nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" "))}))}))
           .catch((e) => done({error: String(e)}));
    """)
    if "error" in result:
        raise AssertionError(f"axe-core failed: {result['error']}")
    violations: list[dict[str, Any]] = result["violations"]
    return violations


def save_png(driver: Any, path: Path) -> Path:
    """A screenshot of the whole page (as tall as its content)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.execute_script("return window.innerWidth")
    driver.set_window_size(width, height + 200)
    driver.execute_script("window.scrollTo(0, 0)")
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path
