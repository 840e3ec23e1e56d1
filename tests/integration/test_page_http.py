"""The federation page's HTTP side, without a browser: files, headers, JSON and errors.

A real feddns on loopback ports; plain HTTP requests. The browser tests
(``test_page.py``) look at what a person sees; these pin what the listener
serves: the page's three files with a Content-Security-Policy that allows
nothing but this listener, nothing else under ``/ui/``, compact JSON that is
never cached, and the decision's refusals (400 malformed, 404 unknown).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from feddns.config import load_settings
from tests.support import DEMO_CONFIG, ServerThread


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with ServerThread(load_settings(DEMO_CONFIG), observe_listen="127.0.0.1:0") as server:
        assert server.app is not None and server.app.http is not None
        host, port = server.app.http.address  # type: ignore[misc]
        yield f"http://{host}:{port}"


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.mark.parametrize(("path", "kind"), [("/ui", "text/html"), ("/ui/", "text/html"),
                                            ("/ui/page.js", "text/javascript"),
                                            ("/ui/page.css", "text/css")])
def test_the_page_is_served_with_a_policy_that_allows_only_this_listener(
        base: str, path: str, kind: str) -> None:
    status, headers, body = get(base + path)
    assert status == 200
    assert headers["Content-Type"].startswith(kind)
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    # Nothing fetched from elsewhere (the SVG namespace is a name, never fetched).
    plain = body.replace(b"http://www.w3.org/2000/svg", b"")
    assert b"http://" not in plain and b"https://" not in plain


def test_nothing_else_is_served_under_ui(base: str) -> None:
    assert get(base + "/ui/feddns.yaml")[0] == 404
    assert get(base + "/ui/__init__.py")[0] == 404


def test_the_page_json_is_compact_and_never_cached(base: str) -> None:
    for path in ("/debug/federation", "/debug/matrix?q=shop&limit=2", "/debug/series",
                 "/debug/decision?service=shop/web&cluster=east-a"):
        status, headers, body = get(base + path)
        assert status == 200, path
        assert headers["Cache-Control"] == "no-store"
        assert b"\n" not in body
        json.loads(body)
    matrix = json.loads(get(base + "/debug/matrix?q=shop&limit=2&offset=1")[2])
    # shop: api, billing, checkout, legacy, web
    assert (matrix["matches"], matrix["offset"], len(matrix["rows"])) == (5, 1, 2)


@pytest.mark.parametrize(("query", "status"), [
    ("service=web", 400),
    ("service=shop/nope", 404),
    ("service=shop/web&cidr=10.1.0.0/99", 400),
    ("service=shop/web&cluster=mars", 400),
])
def test_a_malformed_or_unknown_decision_is_refused(base: str, query: str, status: int) -> None:
    code, _, body = get(f"{base}/debug/decision?{query}")
    assert code == status
    assert "error" in json.loads(body)
