"""Warm start: the registry persisted to disk, and loaded back as stale data at start.

Why it exists: a restarted feddns must answer at once, even when every API
server and the bus are unreachable (Lighthouse re-syncs for minutes; CoreDNS
answers SERVFAIL until synced). The file is written atomically (temporary
file, fsync, rename, fsync of the folder) so a crash or a full disk never
leaves a truncated snapshot in place of the last good one; it carries a
format version and a SHA-256 checksum, and a corrupt, truncated or newer
file is ignored with a warning, never a crash (a botched upgrade or a bad
disk must not take DNS down).

Loaded data is *stale* (RFC 8767 adapted): it answers only where no fresh
source does, with the stale TTL and EDE 3, and it ages from its original
sync time, so data older than ``freshness.max_stale`` is not loaded at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feddns.model.services import (
    ClusterSnapshot,
    Endpoint,
    Port,
    Protocol,
    Service,
    ServicePolicy,
    ServiceType,
)

log = logging.getLogger(__name__)

MAGIC = b"feddns-snapshot"
VERSION = 1


class SnapshotError(Exception):
    """The snapshot file cannot be used (the message says why)."""


@dataclass(frozen=True, slots=True)
class SavedCluster:
    """One cluster's data as saved, with the wall-clock time it was last synced."""

    snapshot: ClusterSnapshot
    synced_wall: float


# --- encoding ----------------------------------------------------------------------


def _endpoint(e: Endpoint) -> list[Any]:
    flags = (1 if e.ready else 0) | (2 if e.serving else 0) | (4 if e.terminating else 0)
    return [e.address, flags, e.hostname, e.zone, e.node, e.target]


def _service(s: Service) -> list[Any]:
    policy = None
    if s.policy is not None:
        policy = [list(map(list, s.policy.weights)),
                  list(s.policy.regions) if s.policy.regions is not None else None,
                  s.policy.none_healthy]
    return [s.namespace, s.name, s.type.value, list(s.cluster_ips), list(s.load_balancer_ips),
            [[p.name, p.port, p.protocol.value] for p in s.ports],
            [_endpoint(e) for e in s.endpoints], policy]


def encode(clusters: Mapping[str, SavedCluster], *, federation: str, wall: float) -> bytes:
    """The snapshot file's bytes: a header line, then JSON."""
    body = json.dumps({
        "federation": federation,
        "created": wall,
        "clusters": {
            name: {"synced": saved.synced_wall,
                   "services": [_service(s) for s in saved.snapshot.services.values()]}
            for name, saved in clusters.items()
        },
    }, separators=(",", ":")).encode()
    digest = hashlib.sha256(body).hexdigest()
    return MAGIC + f" {VERSION} {digest} {len(body)}\n".encode() + body


def _decode_service(raw: list[Any]) -> Service:
    ns, name, kind, cips, lbips, ports, eps, policy = raw
    sp = None
    if policy is not None:
        weights, regions, none_healthy = policy
        sp = ServicePolicy(tuple((str(c), float(w)) for c, w in weights),
                           tuple(regions) if regions is not None else None, none_healthy)
    return Service(
        namespace=ns, name=name, type=ServiceType(kind), cluster_ips=tuple(cips),
        load_balancer_ips=tuple(lbips),
        ports=tuple(Port(p[0], int(p[1]), Protocol(p[2])) for p in ports),
        endpoints=tuple(Endpoint(e[0], bool(e[1] & 1), bool(e[1] & 2), bool(e[1] & 4),
                                 e[2], e[3], e[4], e[5]) for e in eps),
        policy=sp,
    )


def decode(data: bytes) -> tuple[str, float, dict[str, SavedCluster]]:
    """Check and parse a snapshot; raise :class:`SnapshotError` on any problem."""
    head, sep, body = data.partition(b"\n")
    parts = head.split(b" ")
    if not sep or len(parts) != 4 or parts[0] != MAGIC:
        raise SnapshotError("not a feddns snapshot (bad header)")
    try:
        version, length = int(parts[1]), int(parts[3])
    except ValueError as exc:
        raise SnapshotError("bad header fields") from exc
    if version > VERSION:
        raise SnapshotError(f"written by a newer feddns (format {version}, this reads {VERSION})")
    if version != VERSION:
        raise SnapshotError(f"unknown format {version}")
    if len(body) != length:
        raise SnapshotError(f"truncated: {len(body)} of {length} bytes")
    if hashlib.sha256(body).hexdigest().encode() != parts[2]:
        raise SnapshotError("checksum mismatch (corrupt file)")
    try:
        doc = json.loads(body)
        clusters = {
            name: SavedCluster(
                ClusterSnapshot.from_services(name, (_decode_service(s) for s in c["services"])),
                float(c["synced"]))
            for name, c in doc["clusters"].items()
        }
        return str(doc["federation"]), float(doc["created"]), clusters
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise SnapshotError(f"malformed content: {exc}") from exc


# --- files -------------------------------------------------------------------------


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync the folder.

    On any error the temporary file is removed and the old snapshot is untouched.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: Path, *, federation: str, wall_now: float,
         max_stale: float) -> dict[str, SavedCluster]:
    """The usable clusters of a snapshot file ({} when missing or unusable, with a warning)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        log.info("no snapshot at %s: starting cold", path)
        return {}
    except OSError as exc:
        log.warning("cannot read snapshot %s (%s): starting cold", path, exc)
        return {}
    try:
        fed, created, clusters = decode(data)
    except SnapshotError as exc:
        log.warning("ignoring snapshot %s: %s; starting cold", path, exc)
        return {}
    if fed != federation:
        log.warning("ignoring snapshot %s: it belongs to federation %r, not %r", path, fed,
                    federation)
        return {}
    usable = {}
    for name, saved in clusters.items():
        age = wall_now - saved.synced_wall
        if age > max_stale:
            log.info("snapshot of cluster %s is %.0f s old, beyond max_stale: not loaded", name,
                     age)
            continue
        usable[name] = saved
    log.info("loaded snapshot %s written %.0f s ago: %d cluster(s), %d service(s)", path,
             wall_now - created, len(usable),
             sum(len(s.snapshot.services) for s in usable.values()))
    return usable
