"""Starting the observe endpoint (``/metrics``, probes, ``/debug``, ``/ui``) beside DNS.

Why it exists: the HTTP side is optional and must never stop or delay DNS. aiohttp
takes a quarter of a second to import, so it is imported in a thread once DNS
answers, and a port that cannot be bound is logged, not raised: the instance
serves DNS without metrics rather than not at all.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import TYPE_CHECKING

from feddns.config import parse_host_port

if TYPE_CHECKING:
    from feddns.observe.http import ObserveServer
    from feddns.observe.instance import Instance

log = logging.getLogger("feddns.app")


async def start_observe(instance: Instance, listen: str | None) -> ObserveServer | None:
    """Serve the observe endpoint on ``listen`` for ``instance``; None if off or unbindable."""
    if listen is None:
        return None
    host, port = parse_host_port(listen)
    module = await asyncio.to_thread(importlib.import_module, "feddns.observe.http")
    server: ObserveServer = module.ObserveServer(instance, host, port)
    try:
        bound = await server.start()
    except OSError as exc:
        log.error("cannot serve metrics and health on %s: %s; DNS is served without them",
                  listen, exc)
        return None
    log.info("metrics, health and debug on http://%s/metrics, /healthz, /readyz, /debug",
             f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}")
    return server
