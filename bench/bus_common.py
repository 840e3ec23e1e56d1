"""Shared plumbing of the federation-bus benchmarks: broker, key, per-instance configs.

Why it exists: ``bench.bus_latency`` and ``bench.bus_publish`` set the bus up
the same way as ``tests/integration/test_federation.py``: one real mosquitto
on a free loopback port (``tests.mosquitto``), one shared HMAC key file (or,
with :func:`signed`, a key pair per publishing cluster and a directory of
their public keys, issue #17), and one config per feddns instance in which
the instance's own cluster has a ``kubernetes`` source (a context of the fake
API's kubeconfig) and every other member has ``source: {type: bus}``. Short
bus intervals make peers' freshness follow the bus within seconds;
``hold_down``/``readmit_after`` 0 make every change visible at once.
"""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.mosquitto import Mosquitto
from tests.mosquitto import bridged_brokers as mosquitto_bridged

FEDERATION = "bench"
SECRET = "a-benchmark-federation-secret-0123456789"

BUS_DEFAULTS: dict[str, Any] = {
    "heartbeat_interval": 1.0,
    "peer_timeout": 3.0,
    "backoff_max": 1.0,
    "keepalive": 10,
    "connect_timeout": 5.0,
}
"""Bus settings of every benchmark instance (overridable per call)."""


@contextlib.contextmanager
def broker(folder: Path, *, nodelay: bool = False,
           max_queued: int | None = None) -> Iterator[Mosquitto]:
    """A started mosquitto on 127.0.0.1 (persistence off), always stopped on exit.

    What-ifs: ``nodelay`` sets ``set_tcp_nodelay true`` (mosquitto's default is false:
    Nagle on every client socket); ``max_queued`` sets ``max_queued_messages`` (default
    1000; 0 = no limit), which in mosquitto 2.0 also bounds QoS 0 packets waiting to be
    written to one client.
    """
    # mosquitto's own defaults unless a what-if says otherwise (tests.mosquitto's
    # defaults are the README's recommendations, so they are switched off here).
    m = Mosquitto(folder / "mosquitto", tcp_nodelay=nodelay,
                  max_queued_messages=max_queued)
    m.start()
    try:
        yield m
    finally:
        m.stop()


def bridged_brokers(folder: Path, *, pattern: str = "#") -> Any:
    """Two started mosquittos (their own defaults) bridged both ways; stopped on exit.

    The second carries mosquitto's bridge to the first (``topic <pattern> both 1``,
    ``tests.mosquitto``), as a federation with two brokers would run them.
    """
    return mosquitto_bridged(folder, pattern=pattern, defaults=True)


def write_key(directory: Path) -> Path:
    """The shared HMAC secret, in a file every instance's config names."""
    path = directory / "bus-key"
    path.write_text(SECRET)
    path.chmod(0o600)
    return path


def signed(directory: Path, own: Sequence[str]) -> dict[str, Any]:
    """``bus`` settings signing with per-cluster Ed25519 keys instead of the HMAC key.

    Writes a key pair for each cluster of ``own`` (``feddns keygen``'s files) and their
    public keys into ``directory/public``; the result replaces ``keys`` (HMAC off). An
    empty ``own``: a receiver, which holds the public keys only.
    """
    from feddns.sources.mqtt.signatures import write_key_pair

    public = directory / "public"
    public.mkdir(parents=True, exist_ok=True)
    private = []
    for cluster in own:
        key, pub, _ = write_key_pair(directory / "secret", cluster)
        (public / pub.name).write_bytes(pub.read_bytes())
        private.append({"cluster": cluster, "file": str(key)})
    return {"keys": [], "private_keys": private, "public_keys_dir": str(public)}


def bus_section(port: int, key: Path, **overrides: Any) -> dict[str, Any]:
    """The ``bus`` section of a config (also the arguments of ``BusConfig``)."""
    return {"broker": "127.0.0.1", "port": port, "topic_prefix": f"b{port}",
            "keys": [{"id": "k1", "secret_file": str(key)}], **BUS_DEFAULTS, **overrides}


def write_instance_config(directory: Path, *, own: str, clusters: Sequence[str],
                          kubeconfig: Path, port: int, key: Path, max_records: int = 16,
                          bus: dict[str, Any] | None = None,
                          source: dict[str, Any] | None = None,
                          observe: int | None = None) -> Path:
    """A config for the instance of cluster ``own``: its watch, and the bus for the rest."""
    entries = []
    for name in clusters:
        src: dict[str, Any] = (
            {"type": "kubernetes", "kubeconfig": str(kubeconfig), "context": name,
             **(source or {})}
            if name == own else {"type": "bus"})
        entries.append({"name": name, "region": "r1", "zones": ["zone-a", "zone-b", "zone-c"],
                        "source": src})
    cfg = {
        "federation": FEDERATION,
        "dns": {"listen": ["127.0.0.1:0"], "max_records": max_records},
        "observe": {"listen": None if observe is None else f"127.0.0.1:{observe}"},
        "selection": {"hold_down": 0, "readmit_after": 0},
        "clusters": entries,
        "bus": bus_section(port, key, **(bus or {})),
    }
    path = directory / f"feddns-{own}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def bus_metrics(port: int) -> dict[str, float]:
    """The ``feddns_bus_*`` samples of an instance's ``/metrics`` (empty when unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("feddns_bus_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def rejected(metrics: dict[str, float]) -> int:
    """Messages an instance rejected (any reason)."""
    return int(sum(v for k, v in metrics.items() if k.startswith("feddns_bus_rejected_total")))
