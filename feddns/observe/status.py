"""``feddns status``: a running instance's clusters and bus, as a table and an exit code.

Why it exists: "is feddns healthy?" must be answerable from a terminal and
from scripts (``feddns status && deploy``) without Prometheus. It reads the
instance's ``/debug`` view over HTTP (the standard library's client: the CLI
does not need an event loop) and exits 0 when every cluster is fresh (and the
bus, if any, is connected), 1 when something is degraded, 2 when the
instance cannot be reached or does not answer as feddns.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TextIO

from feddns.errors import FeddnsError

EXIT_FRESH = 0
EXIT_DEGRADED = 1
EXIT_UNREACHABLE = 2

DEFAULT_URL = "http://127.0.0.1:9154"
"""Where ``observe.listen`` serves by default."""


class StatusError(FeddnsError):
    """The instance could not be reached, or its answer is not a feddns ``/debug`` view."""


def url_from_listen(listen: str) -> str:
    """The URL to reach ``observe.listen`` from this host (a wildcard means loopback)."""
    host, _, port = listen.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
    return f"http://{host}:{port}"


def read_token(path: Path | None) -> str | None:
    """The bearer token in ``path`` (``observe.token_file``), or None without one."""
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StatusError(f"cannot read the token file {path}: {exc}") from exc


def fetch(url: str, *, timeout: float = 3.0, token: str | None = None) -> dict[str, Any]:
    """GET ``<url>/debug`` (with the bearer ``token``, if any) and parse it."""
    if not url.startswith(("http://", "https://")):
        raise StatusError(f"{url}: only http:// and https:// URLs are supported")
    target = url.rstrip("/") + "/debug"
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        target, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            body = resp.read()
    except urllib.error.HTTPError as exc:
        hint = (" (observe.token_file: give --token-file, or -c with the config)"
                if exc.code == 401 else "")
        raise StatusError(f"{target} answered {exc.code} {exc.reason}{hint}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StatusError(f"cannot reach {target}: {getattr(exc, 'reason', exc)}") from exc
    try:
        view = json.loads(body)
    except ValueError as exc:
        raise StatusError(f"{target} did not answer JSON: {exc}") from exc
    if not isinstance(view, dict) or not isinstance(view.get("clusters"), list):
        raise StatusError(f"{target} is not a feddns /debug view")
    return view


def duration(seconds: float | None) -> str:
    """``75.2`` -> ``1m15s``; None -> ``-``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def table(rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ) + "\n"


def problems(view: dict[str, Any]) -> list[str]:
    """Why the instance is not entirely fresh (empty: all fine)."""
    out = [f"{c['name']} {c['state']}" for c in view["clusters"] if c.get("state") != "fresh"]
    if not view.get("ready", False):
        out.append("not ready")
    isolation = view.get("isolation")
    if isolation:
        out.append("self-isolation suspected (" + ", ".join(isolation.get("clusters", [])) + ")")
    bus = view.get("bus")
    if bus is not None and not bus.get("connected", False):
        out.append("bus disconnected")
    return out


def render(view: dict[str, Any], url: str) -> str:
    """The human-readable report."""
    tab = view.get("table", {})
    head = (f"feddns {view.get('version', '?')} at {url}: federation {view.get('federation')},"
            f" {'ready' if view.get('ready') else 'NOT READY'}, serial {tab.get('serial', '?')},"
            f" {tab.get('services', '?')} service(s), {tab.get('names', '?')} name(s)\n\n")
    rows = [["CLUSTER", "STATE", "DATA AGE", "SERVICES", "ENDPOINTS", "SOURCE", "ERROR"]]
    for c in view["clusters"]:
        rows.append([str(c.get("name")), str(c.get("state")),
                     duration(c.get("data_age_seconds")), str(c.get("services", 0)),
                     str(c.get("endpoints", 0)), str(c.get("source", "-")),
                     str(c.get("error") or "-")])
    out = head + table(rows)
    bus = view.get("bus")
    if bus is None:
        out += "\nbus: not configured\n"
    else:
        rejected = sum(bus.get("rejected", {}).values())
        brokers = bus.get("brokers") or []
        state = "DISCONNECTED"
        if bus.get("connected"):
            state = f"connected to {bus['broker']}" if bus.get("broker") else "connected"
        if len(brokers) > 1:
            state += f" (brokers: {', '.join(brokers)})"
        out += (f"\nbus: {state},"
                f" {bus.get('connects', 0)} connect(s), published {bus.get('published', 0)},"
                f" received {bus.get('received', 0)}, applied {bus.get('applied', 0)},"
                f" rejected {rejected}")
        if bus.get("last_error"):
            out += f", last error: {bus['last_error']}"
        out += "\n"
        peers = bus.get("peers") or {}
        if peers:
            peer_rows = [["PEER", "ONLINE", "HEARTBEAT", "SIGNED WITH", "REJECTED SERVICES"]]
            for name, peer in peers.items():
                online = peer.get("online")
                refused = peer.get("rejected_services") or {}
                peer_rows.append([name, "-" if online is None else ("yes" if online else "no"),
                                  duration(peer.get("heartbeat_age_seconds")),
                                  str(peer.get("signed_with") or "-"),
                                  ", ".join(f"{svc} ({why})" for svc, why in refused.items())
                                  or "-"])
            out += table(peer_rows)
    found = problems(view)
    out += ("\nstatus: degraded: " + ", ".join(found) if found
            else f"\nstatus: all {len(view['clusters'])} cluster(s) fresh") + "\n"
    return out


def run_status(url: str, out: TextIO, err: TextIO, *, timeout: float = 3.0,
               token_file: Path | None = None) -> int:
    """Print the report for the instance at ``url``; return the exit code."""
    try:
        view = fetch(url, timeout=timeout, token=read_token(token_file))
    except StatusError as exc:
        print(f"feddns status: {exc}", file=err)
        return EXIT_UNREACHABLE
    out.write(render(view, url))
    return EXIT_DEGRADED if problems(view) else EXIT_FRESH
