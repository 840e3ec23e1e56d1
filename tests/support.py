"""Test support: run a real feddns on a loopback port, and query it like a client would.

Why it exists: integration tests must exercise the real transports with
independent clients (dnspython, dig). The server runs in its own thread with
its own event loop, so tests can use blocking clients and subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import yaml

from feddns.app import App
from feddns.config import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "config" / "demo.yaml"
ORIGIN = "clusterset.local."


def write_federation(
    tmp: Path,
    clusters: dict[str, dict[str, Any]],
    *,
    topology: dict[str, tuple[str, list[str]]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a config plus static data for ``clusters`` (name -> {"services": [...]})."""
    data = tmp / "services.yaml"
    data.write_text(yaml.safe_dump({"clusters": clusters}))
    topology = topology or {}
    config: dict[str, Any] = {
        "federation": "test",
        "dns": {"listen": ["127.0.0.1:0"]},
        "clusters": [
            {
                "name": name,
                "region": topology.get(name, ("region-1", ["zone-1"]))[0],
                "zones": topology.get(name, ("region-1", ["zone-1"]))[1],
                "source": {"type": "static", "file": str(data), "poll_interval": 0.05},
            }
            for name in clusters
        ],
    }
    for key, value in (extra or {}).items():
        config[key] = value
    path = tmp / "feddns.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class ServerThread:
    """A real feddns App serving on 127.0.0.1 in a background thread."""

    def __init__(self, settings: Settings, *, listen: str = "127.0.0.1:0",
                 **app_kwargs: Any) -> None:
        self.settings = settings
        self.listen = listen
        self.app_kwargs = app_kwargs
        self.loop = asyncio.new_event_loop()
        self.app: App | None = None
        self.addresses: list[tuple[str, int]] = []
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="feddns-test", daemon=True)

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self._stop = asyncio.Event()
            self.app = App(self.settings, listen=[self.listen], **self.app_kwargs)
            try:
                self.addresses = await self.app.start()
            except BaseException as exc:
                self._error = exc
                self._started.set()
                raise
            self._started.set()
            await self._stop.wait()
            await self.app.stop()

        with contextlib.suppress(BaseException):
            self.loop.run_until_complete(main())
        self.loop.close()

    def start(self, *, wait_loaded: bool = True) -> ServerThread:
        self._thread.start()
        if not self._started.wait(10):
            raise TimeoutError("feddns did not start within 10 s")
        if self._error is not None:
            raise self._error
        if wait_loaded:
            self.wait_loaded()
        return self

    def wait_loaded(self, timeout: float = 10.0) -> None:
        assert self.app is not None
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(self.app.loaded.wait(), timeout), self.loop
        )
        fut.result(timeout + 1)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop thread and return its result."""

        async def wrapper() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(10)

    def stop(self) -> None:
        if self._stop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve(config: Path, **kwargs: Any) -> Iterator[ServerThread]:
    """Run feddns on ``config`` (listening on a free loopback port)."""
    server = ServerThread(load_settings(config), **kwargs)
    with server:
        yield server


def make_query(
    qname: str,
    qtype: str | int = "A",
    *,
    edns: int | None = None,
    payload: int = 1232,
    want_dnssec: bool = False,
    rd: bool = False,
    options: list[Any] | None = None,
) -> dns.message.Message:
    """A query as a client builds it (no EDNS unless asked)."""
    q = dns.message.make_query(
        qname, qtype, use_edns=edns if edns is not None else bool(want_dnssec or options),
        payload=payload, want_dnssec=want_dnssec, options=options,
    )
    if not rd:
        q.flags &= ~dns.flags.RD
    return q


def ask(port: int, query: dns.message.Message, *, tcp: bool = False,
        timeout: float = 3.0) -> dns.message.Message:
    """Send ``query`` to 127.0.0.1:port over UDP (TC honoured, no retry) or TCP."""
    if tcp:
        return dns.query.tcp(query, "127.0.0.1", port=port, timeout=timeout)
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=timeout,
                         ignore_trailing=False, raise_on_truncation=False)


def raw_udp(port: int, payload: bytes, *, timeout: float = 1.0) -> bytes | None:
    """Send raw bytes over UDP; return the reply bytes or None when nothing came back."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(payload, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def records(msg: dns.message.Message, section: str = "answer") -> list[str]:
    """Section contents as sorted zone-text lines (``name ttl IN TYPE rdata``)."""
    out = []
    for rrset in getattr(msg, section):
        for rd in rrset:
            out.append(f"{rrset.name.to_text().lower()} {rrset.ttl} IN "
                       f"{dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}")
    return sorted(out)


def dig(port: int, *args: str, timeout: float = 10.0) -> str:
    """Run the real ``dig`` against 127.0.0.1:port and return its output."""
    exe = shutil.which("dig")
    if exe is None:
        raise RuntimeError("dig is not installed (Debian package bind9-dnsutils)")
    proc = subprocess.run(
        [exe, "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    return proc.stdout + proc.stderr


def http_get(server: ServerThread, path: str) -> tuple[int, str]:
    """GET ``path`` from the server's observe listener: (status, body)."""
    import urllib.error
    import urllib.request

    assert server.app is not None and server.app.http is not None
    host, port = server.app.http.address  # type: ignore[misc]
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def eventually(predicate: Callable[[], bool], within: float = 5.0,
                     step: float = 0.02) -> None:
    """Poll ``predicate`` on the running loop until true; fail after ``within`` s (bounded).

    The async twin of :func:`wait_until`, for tests that run on the event loop.
    """
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(step)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0,
               interval: float = 0.02) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds (bounded loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
