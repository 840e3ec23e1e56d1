"""The observe endpoints off loopback: a bearer token for everything but the probes (#17).

A real feddns (tests.support.ServerThread) listens for HTTP on the wildcard
address, which is not loopback, so the rule applies to every request, and is
asked over 127.0.0.1 by urllib, as Prometheus or an operator's curl would; a
second one listens on loopback, as by default, where nothing changed. The
federation page's static files are open there (no data in them) while the JSON
they poll is not. The ``feddns status`` command is run as a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feddns.checking import load_checked
from feddns.errors import ConfigError
from tests.support import ServerThread, serve, write_federation

REPO = Path(__file__).resolve().parents[2]
TOKEN = "3f9c1e7a5b2d4f60a8c9e1b3d5f7a9c1"
CLUSTERS = {"east": {"services": [{"namespace": "shop", "name": "web",
                                   "cluster_ips": ["10.96.1.10"],
                                   "ports": [{"name": "http", "port": 80}],
                                   "endpoints": [{"address": "10.1.0.1"}]}]}}
PROTECTED = ("/metrics", "/debug", "/debug?services=1", "/debug?service=shop/web", "/",
             "/no-such-page")


def get(server: ServerThread, path: str, token: str | None = None,
        scheme: str = "Bearer") -> tuple[int, dict[str, str], str]:
    """GET ``path`` over 127.0.0.1: (status, headers, body)."""
    assert server.app is not None and server.app.http is not None
    port = server.app.http.address[1]  # type: ignore[index]
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def config_with(tmp_path: Path, **observe: Any) -> Path:
    return write_federation(tmp_path, CLUSTERS, extra={"observe": observe})


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    token_file = tmp_path / "observe-token"
    token_file.write_text(TOKEN + "\n")
    config = config_with(tmp_path, listen="0.0.0.0:0", token_file=str(token_file))
    with serve(config) as server:
        yield server, token_file


def test_off_loopback_every_page_but_the_probes_needs_the_token_and_a_401_leaks_nothing(
        guarded: tuple[ServerThread, Path]) -> None:
    server, _ = guarded
    for probe in ("/healthz", "/readyz"):
        assert get(server, probe)[0] == 200, probe  # the kubelet sends no credentials
    wrong = [None, "", TOKEN[:-1], TOKEN + "0", TOKEN.upper(), "x" * 200]
    for path in PROTECTED:
        for token in wrong:
            status, headers, body = get(server, path, token)
            assert (status, body) == (401, "unauthorized\n"), (path, token)
            assert headers["WWW-Authenticate"] == 'Bearer realm="feddns"'
            assert "east" not in str(headers) and "feddns_" not in body
        assert get(server, path, TOKEN, scheme="Basic")[0] == 401
    assert get(server, "/metrics", TOKEN)[0] == 200
    status, _, body = get(server, "/debug", TOKEN)
    assert status == 200 and '"east"' in body
    assert get(server, "/debug?service=shop/web", TOKEN, scheme="bearer")[0] == 200
    assert get(server, "/no-such-page", TOKEN)[0] == 404  # only with the token: not found


def test_off_loopback_the_page_files_need_no_token_and_the_data_they_poll_does(
        guarded: tuple[ServerThread, Path]) -> None:
    server, _ = guarded
    page = REPO / "feddns" / "observe" / "page"
    for path, name, kind in (("/ui", "index.html", "text/html"),
                             ("/ui/", "index.html", "text/html"),
                             ("/ui/index.html", "index.html", "text/html"),
                             ("/ui/page.css", "page.css", "text/css"),
                             ("/ui/page.js", "page.js", "text/javascript")):
        status, headers, body = get(server, path)
        assert status == 200, path
        assert headers["Content-Type"].startswith(kind), path
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert body == (page / name).read_text(), path  # the package's bytes: no data
    for path in ("/debug/federation", "/debug/matrix", "/debug/series",
                 "/debug/decision?service=shop/web", "/ui/feddns.yaml", "/ui/__init__.py"):
        for token in (None, TOKEN[:-1]):
            status, headers, body = get(server, path, token)
            assert (status, body) == (401, "unauthorized\n"), (path, token)
            assert headers["WWW-Authenticate"] == 'Bearer realm="feddns"'
    status, _, body = get(server, "/debug/federation", TOKEN)
    assert status == 200 and '"east"' in body
    assert get(server, "/ui/feddns.yaml", TOKEN)[0] == 404  # with the token: not a page file


def test_a_rotated_token_file_applies_without_a_reload(
        guarded: tuple[ServerThread, Path]) -> None:
    server, token_file = guarded
    rotated = "b" * 40
    token_file.write_text(rotated + "\n")
    assert get(server, "/debug", TOKEN)[0] == 401
    assert get(server, "/debug", rotated)[0] == 200
    token_file.unlink()  # a missing token file closes the pages; the probes stay open
    assert get(server, "/debug", rotated)[0] == 401
    assert get(server, "/healthz")[0] == 200


def test_off_loopback_without_a_token_file_the_pages_are_closed_and_the_probes_open(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with serve(config_with(tmp_path, listen="0.0.0.0:0")) as server:
        assert [get(server, p)[0] for p in PROTECTED] == [401] * len(PROTECTED)
        assert get(server, "/readyz")[0] == 200
    assert any("without observe.token_file" in r.getMessage() for r in caplog.records)


def test_on_loopback_the_pages_stay_open_without_a_token(tmp_path: Path) -> None:
    with serve(config_with(tmp_path, listen="127.0.0.1:0")) as server:
        assert get(server, "/metrics")[0] == 200
        assert get(server, "/debug")[0] == 200
        assert get(server, "/")[0] == 200


def feddns_status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "feddns", "status", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=30, check=False)


def test_status_sends_the_token_of_its_config_and_explains_a_401(
        guarded: tuple[ServerThread, Path], tmp_path: Path) -> None:
    server, token_file = guarded
    assert server.app is not None and server.app.http is not None
    url = f"http://127.0.0.1:{server.app.http.address[1]}"  # type: ignore[index]
    denied = feddns_status("--url", url)
    assert denied.returncode == 2 and "answered 401" in denied.stderr
    assert "--token-file" in denied.stderr
    allowed = feddns_status("--url", url, "--token-file", str(token_file))
    assert allowed.returncode == 0, allowed.stderr
    config = tmp_path / "feddns.yaml"  # the guarded server's own config names the token
    assert feddns_status("--url", url, "-c", str(config)).returncode == 0


@pytest.mark.parametrize(("content", "expected"), [
    (None, "does not exist"),
    ("short\n", "shorter than 16 characters"),
    ("two words-0123456789\n", "one word"),
])
def test_check_config_refuses_a_missing_or_weak_token_file(
        tmp_path: Path, content: str | None, expected: str) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    config = config_with(tmp_path, listen="0.0.0.0:9154", token_file="token")
    with pytest.raises(ConfigError) as info:
        load_checked(config)
    (problem,) = info.value.problems
    assert problem.startswith(f"observe.token_file: {token_file}") and expected in problem
