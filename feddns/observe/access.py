"""Who may read the observe endpoints: a bearer token off loopback; probes and page files always.

Why it exists: ``/debug``, ``/metrics`` and the index show the federation's
topology (cluster names, regions, peers, brokers, every service's plan), which
is reconnaissance for whoever can reach the port (issue #17). The rule, in one
place and without I/O besides reading the token file:

* ``/healthz`` and ``/readyz`` are always open: the kubelet's probes carry no
  credentials, and they tell nothing but "alive" and "ready".
* The federation page's static files (``/ui``, ``/ui/`` and ``/ui/index.html``,
  ``/ui/page.css``, ``/ui/page.js``) are always open: they are the same bytes in
  every install and carry no federation data, and a browser cannot send a bearer
  token when it loads a page. The page then sends the token itself on each poll
  of ``/debug/...`` (it takes it from ``/ui#token=...`` or asks for it on a 401),
  and those polls are guarded like the rest. Any other path under ``/ui/`` is not
  a page file and stays guarded (401, not 404, without the token).
* Everything else (``/metrics`` included: Prometheus sends a bearer token with
  ``authorization: {credentials_file: ...}``) needs ``Authorization: Bearer
  <token>`` when ``observe.token_file`` is set, and, without one, is open only
  while the endpoint listens on a loopback address (the default); on any other
  address it is closed (401) until a token is configured: fail closed, without
  stopping DNS over an observability setting.

The token is compared in constant time (both sides hashed first, so not even
its length leaks) and re-read when its file changes (a rotated Secret applies
without a reload).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from pathlib import Path

from feddns.checking import token_problem

PAGE_FILES = ("index.html", "page.css", "page.js")
"""The federation page's files (``observe.http`` serves them from ``observe/page/``)."""

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/ui", "/ui/",
                        *(f"/ui/{name}" for name in PAGE_FILES)})
"""Paths no one needs a token for: the kubelet's liveness and readiness probes, and the
federation page's static files (no data in them; the data they poll is guarded)."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (only this machine can connect)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TokenFile:
    """The token of one file, re-read when the file changes (a rotated Secret)."""

    __slots__ = ("_digest", "_stamp", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._digest: bytes | None = None

    def digest(self) -> bytes | None:
        """SHA-256 of the token; None while the file is missing or unusable (closed)."""
        try:
            st = self.path.stat()
        except OSError:
            self._stamp = self._digest = None
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            self._digest = None
            if token_problem(self.path) is None:
                with open(self.path, "rb") as f:
                    self._digest = hashlib.sha256(f.read().strip()).digest()
        return self._digest


class Access:
    """Decides per request whether the observe endpoint may answer."""

    def __init__(self, host: str) -> None:
        self.loopback = is_loopback(host)
        self._file: TokenFile | None = None

    def closed_without_token(self, token_file: Path | None) -> bool:
        """True when nothing but the probes can be read (off loopback, no token set)."""
        return token_file is None and not self.loopback

    def allows(self, path: str, authorization: str | None, token_file: Path | None) -> bool:
        """True when a request for ``path`` with this ``Authorization`` header may be served.

        ``token_file``: ``observe.token_file`` as currently configured (a reload may set,
        move or remove it).
        """
        if path in OPEN_PATHS:
            return True
        if token_file is None:
            return self.loopback
        if self._file is None or self._file.path != token_file:
            self._file = TokenFile(token_file)
        expected = self._file.digest()
        if expected is None or authorization is None:
            return False
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = hashlib.sha256(presented.strip().encode("utf-8", "surrogateescape")).digest()
        return hmac.compare_digest(given, expected)
