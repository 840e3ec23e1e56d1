"""A real mosquitto broker for tests: started on a free loopback port, stopped, restarted.

Why it exists: the bus must be tested against the broker it meets in
production (retained messages, last wills, QoS 1 redelivery, a restart that
forgets everything), never against a mock or a system-wide broker. Each
broker gets its own generated config and folder; persistence is off unless
asked for, which is mosquitto's own default.

Two brokers can be bridged with mosquitto's own bridge (:func:`bridged_brokers`),
as a federation with more than one broker would run them: one broker carries a
``connection`` to the other with ``topic <pattern> both 1``, so every message
(retained ones with their retain flag: ``try_private true``, mosquitto's default,
marks the connection as a bridge) reaches both, and only one of the two carries
the connection, so nothing can loop (mosquitto.conf(5), "Configuring Bridges").
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.ports import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"



class Mosquitto:
    """One mosquitto process; ``port`` stays the same across :meth:`restart`."""

    def __init__(self, folder: Path, *, persistence: bool = False,
                 max_packet_size: int | None = None,
                 tls: tuple[Path, Path, Path] | None = None,
                 password_file: Path | None = None,
                 acl_file: Path | None = None,
                 max_queued_messages: int | None = 100_000,
                 tcp_nodelay: bool = True) -> None:
        self.folder = folder
        self.bridges: list[tuple[Mosquitto, str]] = []
        """(remote broker, topic pattern) of each bridge this broker carries."""
        self.max_queued_messages = max_queued_messages
        """The README's recommendation by default; None leaves mosquitto's own (1000)."""
        self.tcp_nodelay = tcp_nodelay
        """``set_tcp_nodelay true``, as the README recommends (mosquitto's default: false)."""
        self.persistence = persistence
        self.max_packet_size = max_packet_size
        self.tls = tls
        """(CA file, certificate file, key file) for a TLS-only listener."""
        self.password_file = password_file
        """A ``mosquitto_passwd`` file; anonymous clients are refused when set."""
        self.acl_file = acl_file
        """A mosquitto ACL file (``acl_file``); refused publishes are logged ("Denied")."""
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def log(self) -> str:
        """The broker's log so far (for assertion messages)."""
        path = self.folder / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if self.password_file else 'true'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.folder}/",
            f"log_dest file {self.folder}/mosquitto.log",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "user root",
        ]
        # The settings the README recommends for production brokers (unless told not to).
        if self.tcp_nodelay:
            lines.append("set_tcp_nodelay true")
        if self.max_queued_messages is not None:
            lines.append(f"max_queued_messages {self.max_queued_messages}")
        if self.max_packet_size is not None:
            lines.append(f"max_packet_size {self.max_packet_size}")
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file is not None:
            # "Denied PUBLISH" is logged at the debug level only.
            lines += [f"acl_file {self.acl_file}", "log_type debug"]
        if self.tls is not None:
            ca, cert, key = self.tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        for remote, pattern in self.bridges:
            lines += [
                f"connection bridge-{self.port}-{remote.port}",
                f"address 127.0.0.1:{remote.port}",
                # Both directions at QoS 1 (the bus publishes retained at QoS 1).
                f"topic {pattern} both 1",
                # Announce a bridge: retain flags are forwarded as published, and the
                # remote does not send our own messages back (mosquitto's default).
                "try_private true",
                # A reconnected bridge gets the remote's retained messages again (a
                # broker restarted without persistence has lost them).
                "cleansession true",
                "restart_timeout 1",  # a constant second: tests wait in seconds
                "notifications false",
                f"remote_clientid bridge-{self.port}-{remote.port}",
            ]
        path = self.folder / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 10.0) -> Mosquitto:
        """Start the broker and wait until it accepts connections."""
        config = self._write_config()
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log}")
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.2
            ):
                return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def bridge_to(self, remote: Mosquitto, pattern: str = "#") -> Mosquitto:
        """Carry a bridge to ``remote`` for topics matching ``pattern`` (before start)."""
        self.bridges.append((remote, pattern))
        return self

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the broker: SIGTERM (it saves persistence), or SIGKILL with ``kill``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def restart(self, *, kill: bool = False) -> None:
        """Stop and start again on the same port (without persistence: nothing retained)."""
        self.stop(kill=kill)
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def make_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (via the openssl CLI)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    cert, key, csr = folder / "server.crt", folder / "server.key", folder / "server.csr"
    ext = folder / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=test-ca"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "1", "-extfile", ext],
    ):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    return ca, cert, key


def make_password_file(path: Path, user: str, password: str,
                       *more: tuple[str, str]) -> Path:
    """A mosquitto password file with one user, or more (via ``mosquitto_passwd``)."""
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(path), user, password], check=True,
                   capture_output=True)
    for other, secret in more:
        subprocess.run(["mosquitto_passwd", "-b", str(path), other, secret], check=True,
                       capture_output=True)
    return path


@contextlib.contextmanager
def mosquitto(folder: Path, *, persistence: bool = False, max_packet_size: int | None = None,
              tls: tuple[Path, Path, Path] | None = None,
              password_file: Path | None = None, acl_file: Path | None = None,
              max_queued_messages: int | None = 100_000) -> Iterator[Mosquitto]:
    """A started broker, stopped on exit whatever happened."""
    if not Path(MOSQUITTO).exists():
        raise RuntimeError("mosquitto is not installed (Debian package mosquitto)")
    broker = Mosquitto(folder, persistence=persistence, max_packet_size=max_packet_size,
                       tls=tls, password_file=password_file, acl_file=acl_file,
                       max_queued_messages=max_queued_messages)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@contextlib.contextmanager
def bridged_brokers(folder: Path, *, pattern: str = "#",
                    defaults: bool = False) -> Iterator[tuple[Mosquitto, Mosquitto]]:
    """Two started brokers bridged both ways for ``pattern``; stopped on exit.

    The second carries the bridge to the first, so killing either leaves the other
    serving everything it received; mosquitto re-establishes the bridge (every
    second) once the first is back. With ``defaults``, both keep mosquitto's own
    queue and Nagle settings instead of the README's recommendations.
    """
    if not Path(MOSQUITTO).exists():
        raise RuntimeError("mosquitto is not installed (Debian package mosquitto)")
    # ``defaults``: mosquitto's own queue and Nagle settings (what the benchmarks measure).
    tuning: dict[str, Any] = ({"tcp_nodelay": False, "max_queued_messages": None}
                              if defaults else {})
    first = Mosquitto(folder / "broker-1", **tuning)
    second = Mosquitto(folder / "broker-2", **tuning).bridge_to(first, pattern)
    try:
        first.start()
        second.start()
        yield first, second
    finally:
        second.stop()
        first.stop()
