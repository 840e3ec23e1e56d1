"""The HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz``, ``/debug`` (the aiohttp user).

Why it exists: Prometheus scrapes, Kubernetes probes and operators need one
small HTTP port next to DNS. It is served by aiohttp on the event loop itself,
so a scrape or a ``/debug`` reads the registry and the answer table exactly as
queries do, without locks or a second thread (prometheus_client's own server
runs in a thread, which would read the registry while the loop changes it).
aiohttp already comes with the Kubernetes client; it is imported only once
DNS is serving, so its import time never delays the first answer.

Semantics follow CoreDNS's ``health`` and ``ready`` plugins: ``/healthz`` is
200 while the process runs its loop, ``/readyz`` is 503 until the sync gate
opens (every configured cluster synced once or was restored from the
warm-start snapshot, or ``freshness.sync_timeout`` passed for those that did
not), then 200 for good (a cluster lost later does not make the instance
unready: it still answers, from stale data). A 200 names the clusters that
are *unsynced* (past the gate without data), so a probe's log shows them. No
request is logged. Off loopback, everything but the probes and the page's
static files needs the bearer token of ``observe.token_file``
(``observe.access``); a refusal is a bare 401.

The federation page (``/ui``, the files of ``observe/page/``) is read-only and
static: it polls ``/debug/federation``, ``/debug/matrix``, ``/debug/decision``
and ``/debug/series`` (sending the token it was given in ``/ui#token=...`` or
asked for), whose JSON is built in ``observe.federation`` and
``observe.decision``; this module only routes.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web

from feddns.observe.access import Access
from feddns.observe.debug import debug_view, parse_service, service_view, services_view
from feddns.observe.decision import DecisionError, decision_view
from feddns.observe.federation import ServiceIndex, matrix_view, overview_view, series_view
from feddns.observe.metrics import CONTENT_TYPE, build_registry, exposition_in_slices

if TYPE_CHECKING:
    from feddns.observe.instance import Instance

log = logging.getLogger(__name__)


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=2, sort_keys=False) + "\n",
                        status=status, content_type="application/json")


PAGE_FILES = {"index.html": "text/html", "page.css": "text/css",
              "page.js": "text/javascript"}
"""The federation page's files (package data of ``feddns.observe``) and their types; the
same names as ``observe.access.PAGE_FILES``, which serves them without a token."""
PAGE_HEADERS = {
    # Nothing but this listener: no inline script, no outside resource, no framing.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self';"
                               " img-src 'self' data:; connect-src 'self'; base-uri 'none';"
                               " form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _page_json(data: object, status: int = 200) -> web.Response:
    """Compact JSON for the page's polls (never cached)."""
    return web.Response(text=json.dumps(data, separators=(",", ":")), status=status,
                        content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


class ObserveServer:
    """Serves the observability endpoints of one app on ``host:port``."""

    def __init__(self, app: Instance, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.registry = build_registry(app)
        self.address: tuple[str, int] | None = None
        self._runner: web.AppRunner | None = None
        self._services = ServiceIndex()
        self._page: dict[str, bytes] = {}
        self.access = Access(host)

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        """Serve only what ``observe.access`` allows; otherwise 401 and nothing else."""
        if self.access.allows(request.path, request.headers.get("Authorization"),
                              self.app.settings.observe.token_file):
            return await handler(request)
        # RFC 6750 §3: the scheme in WWW-Authenticate; no body beyond one word, no hint.
        return web.Response(status=401, text="unauthorized\n",
                            headers={"WWW-Authenticate": 'Bearer realm="feddns"'})

    def _routes(self) -> web.Application:
        webapp = web.Application(middlewares=[self._guard])
        webapp.router.add_get("/metrics", self.metrics)
        webapp.router.add_get("/healthz", self.healthz)
        webapp.router.add_get("/readyz", self.readyz)
        webapp.router.add_get("/debug", self.debug)
        webapp.router.add_get("/", self.index)
        # The federation page and its JSON (read-only).
        webapp.router.add_get("/ui", self.page)
        webapp.router.add_get("/ui/", self.page)
        webapp.router.add_get("/ui/{file}", self.page)
        webapp.router.add_get("/debug/federation", self.federation)
        webapp.router.add_get("/debug/matrix", self.matrix)
        webapp.router.add_get("/debug/decision", self.decision)
        webapp.router.add_get("/debug/series", self.series)
        return webapp

    async def start(self) -> tuple[str, int]:
        """Listen; return the bound address (port 0 picks a free one)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        runner = web.AppRunner(self._routes(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
        self._runner = runner
        self.address = (self.host, sock.getsockname()[1])
        if self.access.closed_without_token(self.app.settings.observe.token_file):
            log.warning("observe: listening on %s without observe.token_file: /metrics, /debug"
                        " and / answer 401 until a token is set (/healthz and /readyz stay"
                        " open)", self.host)
        return self.address

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def index(self, request: web.Request) -> web.Response:
        """A list of the endpoints."""
        return web.Response(text="feddns: /ui /metrics /healthz /readyz /debug"
                                 " /debug?services=1 /debug?service=NAMESPACE/NAME\n")

    async def metrics(self, request: web.Request) -> web.Response:
        """The Prometheus text format."""
        return web.Response(body=await exposition_in_slices(self.registry),
                            headers={"Content-Type": CONTENT_TYPE})

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while the event loop runs (it is what answers this)."""
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        """200 once ready (latched), else 503 naming the clusters still awaited."""
        registry = self.app.registry
        if self.app.is_ready:
            unsynced = registry.unsynced()
            detail = (f"; degraded: unsynced past sync_timeout: {', '.join(unsynced)}"
                      if unsynced else "")
            return web.Response(text=f"ready{detail}\n")
        waiting = registry.awaited()
        return web.Response(status=503, text=(
            f"not ready: waiting for {', '.join(waiting)} (at most sync_timeout"
            f" {self.app.settings.freshness.sync_timeout:g} s)\n" if waiting
            else "not ready: compiling\n"))

    async def debug(self, request: web.Request) -> web.Response:
        """The JSON view; ``?services=1`` lists the services, ``?service=NS/NAME`` one plan."""
        service = request.query.get("service")
        if service is None:
            if request.query.get("services") not in (None, "", "0"):
                return _json(services_view(self.app))
            return _json(debug_view(self.app))
        key = parse_service(service)
        if key is None:
            return _json({"error": f"service={service!r} is not NAMESPACE/NAME"}, 400)
        view = service_view(self.app, key)
        if view is None:
            return _json({"error": f"service {service} is not known"}, 404)
        return _json(view)

    # --- the federation page -----------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        """The page's files, read from the package once."""
        name = request.match_info.get("file", "index.html")
        kind = PAGE_FILES.get(name)
        if kind is None:
            raise web.HTTPNotFound()
        body = self._page.get(name)
        if body is None:
            body = (resources.files("feddns.observe") / "page" / name).read_bytes()
            self._page[name] = body
        return web.Response(body=body, content_type=kind, charset="utf-8",
                            headers=PAGE_HEADERS)

    async def federation(self, request: web.Request) -> web.Response:
        """The overview: clusters with their last state changes, bus, reloads, isolation."""
        return _page_json(overview_view(self.app))

    async def matrix(self, request: web.Request) -> web.Response:
        """One page of the services x clusters matrix: ``?q=WORDS&offset=N&limit=N``."""
        query = request.query
        return _page_json(matrix_view(self.app, self._services, query=query.get("q", ""),
                                      offset=_int(query.get("offset"), 0),
                                      limit=_int(query.get("limit"), 50)))

    async def decision(self, request: web.Request) -> web.Response:
        """The answer and its explanation for ``?service=NS/NAME`` from a chosen place."""
        query = request.query
        try:
            return _page_json(decision_view(
                self.app, service=query.get("service", ""), cluster=query.get("cluster"),
                zone=query.get("zone"), cidr=query.get("cidr"), origin=query.get("origin")))
        except DecisionError as exc:
            return _page_json({"error": str(exc)}, exc.status)

    async def series(self, request: web.Request) -> web.Response:
        """The plots' data: rates by rcode, stale answers, programming latency."""
        return _page_json(series_view(self.app))
