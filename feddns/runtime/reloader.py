"""Reloading the config (SIGHUP) without dropping a query, or refusing a bad one whole.

Why it exists: a botched config change is one of the commonest ways a DNS
server takes a fleet down, so a reload checks the new file exactly as
``serve`` does (schema and every file it names) and keeps the running config
when anything is wrong, with one log line listing every problem. A valid one
is applied without dropping a query: the sources whose settings changed are
restarted (the others keep running), the registry is told which clusters to
expect, a new answer table is compiled from the new options in batches while
the old one keeps answering, and then the handler, the limits, the front
memo, the transports' timeouts and the query log switch over in one turn of
the event loop. Listen addresses, the federation name, the snapshot path and
the bus section take a restart (logged), except the bus's keys: a key roll adds
a public key everywhere, switches a signer, retires the old key, and none of
these steps may cost a restart (the app re-reads every key file on each reload).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from feddns.checking import load_checked
from feddns.config import BusConfig, Settings
from feddns.dns.front import FrontMemo
from feddns.dns.handling import Handler
from feddns.dns.limiting import Limits
from feddns.dns.server import DnsServer, Handles
from feddns.errors import ConfigError
from feddns.model.registry import Registry
from feddns.observe import logs
from feddns.observe.counting import AppStats
from feddns.runtime.options import locator_from, table_options
from feddns.runtime.supervisor import SourceSupervisor
from feddns.table.compiler import Compiler
from feddns.table.table import AnswerTable

if TYPE_CHECKING:
    from feddns.sources.mqtt import FederationBus

log = logging.getLogger("feddns.app")

RESTART_KEYS = ("federation", "snapshot.path", "observe.listen", "dns.udp_receive_buffer",
                "bus")
"""Settings a reload cannot apply to a running instance (besides the listen addresses)."""
BUS_KEY_FIELDS = frozenset({"keys", "signing_key", "private_keys", "public_keys",
                            "public_keys_dir"})
"""The bus settings a reload applies (the app swaps the bus's keys)."""


@dataclass(frozen=True, slots=True)
class Parts:
    """The running parts a reload reconfigures."""

    registry: Registry
    compiler: Compiler
    handler: Handler
    limits: Limits
    front: FrontMemo
    server: DnsServer
    supervisor: SourceSupervisor
    stats: AppStats


def front_for(settings: Settings, front: FrontMemo) -> FrontMemo | None:
    """The front memo the UDP listener may use (none while the query log must see all)."""
    return None if settings.observe.query_log else front


def handler_for(settings: Settings, handler: Handler) -> Handles:
    """What the transports call: the handler, wrapped by the query log when it is on."""
    return logs.LoggingHandler(handler) if settings.observe.query_log else handler


def restart_changes(old: Settings, new: Settings, *, listen_fixed: bool = False,
                    observe_fixed: bool = False) -> list[str]:
    """The settings that changed but apply only after a restart (command-line values win)."""
    changed = []
    if not listen_fixed and old.dns.listen != new.dns.listen:
        changed.append("dns.listen")
    for key in RESTART_KEYS:
        if key == "observe.listen" and observe_fixed:
            continue
        section, _, field = key.partition(".")
        a, b = getattr(old, section), getattr(new, section)
        if field:
            a, b = getattr(a, field), getattr(b, field)
        elif section == "bus" and a is not None and b is not None:
            a, b = a.model_dump(exclude=BUS_KEY_FIELDS), b.model_dump(exclude=BUS_KEY_FIELDS)
        if a != b:
            changed.append(key)
    return changed


class Reloader:
    """Applies new settings to the running parts, one reload at a time."""

    def __init__(self, parts: Parts, settings: Settings, *, config_path: Path | None,
                 wall: Callable[[], float], listen_fixed: bool = False,
                 observe_fixed: bool = False,
                 on_applied: Callable[[Settings, list[str]], None] | None = None) -> None:
        self.parts = parts
        self.settings = settings
        """The settings in force."""
        self.config_path = config_path
        self.wall = wall
        self.listen_fixed = listen_fixed
        self.observe_fixed = observe_fixed
        self.on_applied = on_applied
        """Told of the new settings and the clusters added (the app starts their gate)."""
        self._lock = asyncio.Lock()

    async def reload(self, settings: Settings | None = None) -> bool:
        """Re-read the config (or apply ``settings``); True when the new one was applied."""
        async with self._lock:
            source = str(self.config_path) if settings is None else "the given settings"
            if settings is None:
                if self.config_path is None:
                    log.error("reload: no config file to re-read (started without -c)")
                    return self._failed("no config file")
                try:
                    settings = await asyncio.to_thread(load_checked, self.config_path)
                except ConfigError as exc:
                    log.error("reload rejected, still serving the previous config: %s",
                              exc.render().replace("\n", "; "))
                    return self._failed(exc.render())
            started = time.perf_counter()
            try:
                summary = await self._apply(settings)
            except Exception as exc:
                # A bug, not a bad file: the old table keeps answering; say so loudly.
                log.exception("reload of %s failed half-way; the previous answer table stays"
                              " in service", source)
                return self._failed(f"{type(exc).__name__}: {exc}")
            stats = self.parts.stats
            stats.reloads["success"] += 1
            stats.last_reload_ok = True
            stats.last_reload_error = None
            stats.last_reload_wall = self.wall()
            log.info("reloaded %s in %.0f ms: %s", source,
                     (time.perf_counter() - started) * 1000, summary)
            return True

    def _failed(self, why: str) -> bool:
        stats = self.parts.stats
        stats.reloads["failure"] += 1
        stats.last_reload_ok = False
        stats.last_reload_error = why
        stats.last_reload_wall = self.wall()
        return False

    async def _apply(self, new: Settings) -> str:
        """Apply valid settings (see the module docstring); return what changed."""
        p = self.parts
        old = self.settings
        for key in restart_changes(old, new, listen_fixed=self.listen_fixed,
                                   observe_fixed=self.observe_fixed):
            log.warning("reload: %s changed; it takes a restart to apply (still using the"
                        " running value)", key)
        old_names = [c.name for c in old.clusters]
        new_names = [c.name for c in new.clusters]
        removed = [n for n in old_names if n not in new_names]
        added = [n for n in new_names if n not in old_names]

        await p.supervisor.reconcile(new)
        p.registry.reconfigure(new_names)
        table = AnswerTable(table_options(new), serial=p.compiler.table.serial,
                            locator=locator_from(new))
        for _ in p.compiler.rebuild(table):
            await asyncio.sleep(0)  # queries are answered from the old table meanwhile

        # The switch-over: no await from here on, so no query sees half of it.
        self.settings = new
        p.limits.configure(new.dns)
        p.front.enabled = not p.limits.active and not new.observe.query_log
        p.handler.use(p.compiler.table, udp_payload_size=new.dns.udp_payload_size)
        p.server.tcp_idle_timeout = new.dns.tcp_idle_timeout
        p.server.tcp_io_timeout = new.dns.tcp_io_timeout
        if new.observe.query_log != old.observe.query_log:
            p.server.set_handler(handler_for(new, p.handler), front_for(new, p.front))
            log.info("query log %s", "on" if new.observe.query_log else "off")
        if new.observe.log_format != old.observe.log_format:
            logs.set_format(new.observe.log_format)
        if self.on_applied is not None:
            self.on_applied(new, added)
        parts = [f"serial {p.compiler.table.serial}",
                 f"{len(p.compiler.table.by_service)} service(s)"]
        if added:
            parts.append(f"clusters added: {', '.join(added)}")
        if removed:
            parts.append(f"clusters removed: {', '.join(removed)}")
        return "; ".join(parts)


def reload_bus_keys(bus: FederationBus, config: BusConfig) -> None:
    """Re-read the bus's key files (a key added, switched or retired; issue #17)."""
    # Imported when used: sealing loads the cryptography library.
    from feddns.sources.mqtt.sealing import BusKeys  # noqa: PLC0415

    try:
        keys = BusKeys.from_config(config)
    except ConfigError as exc:  # changed since the reload's check: keep the running keys
        log.error("reload: bus keys unchanged: %s", exc.render().replace("\n", "; "))
        return
    bus.set_keyring(keys)
    log.info("bus keys: %s", keys.describe())
