"""Warm start: the registry persisted to disk, and loaded back as stale data at start.

Why it exists: a restarted feddns must answer at once, even when every API
server and the bus are unreachable (Lighthouse re-syncs for minutes; CoreDNS
answers SERVFAIL until synced). The file is written atomically (temporary
file, fsync, rename, fsync of the folder) so a crash or a full disk never
leaves a truncated snapshot in place of the last good one; it carries a
format version and a SHA-256 checksum, and a corrupt, truncated or newer
file is ignored with a warning, never a crash (a botched upgrade or a bad
disk must not take DNS down).

The body is a pickle of plain tuples, lists, strings and numbers (about six
times faster to load than JSON, which matters for the one-second warm-start
goal at 200,000 endpoints), read by an unpickler that refuses every class, so
a tampered file cannot run code: it can only fail to load.

Loaded data is *stale* (RFC 8767 adapted): it answers only where no fresh
source does, with the stale TTL and EDE 3, and it ages from when its source
was last known fresh (not from its last change: a cluster quiet for a day is
not a day old), so data older than ``freshness.max_stale`` is not loaded at all.
Because a quiet cluster's data does not change, rewriting the whole snapshot
to move that time would cost a full encode every interval; a small freshness
file beside it (``<path>.fresh``: the snapshot's checksum and each cluster's
last fresh wall-clock time) is rewritten instead, and is used only with the
snapshot whose checksum it names.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feddns.errors import FeddnsError
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
VERSION = 3
"""3 added load-balancer hostnames, ExternalName targets, trafficDistribution and the
policy's shares, answer mode and capacity-awareness (issue #13); 2 is still read."""
READABLE = (2, 3)


class SnapshotError(FeddnsError):
    """The snapshot file cannot be used (the message says why)."""


@dataclass(frozen=True, slots=True)
class SavedCluster:
    """One cluster's data as saved, with the wall-clock time its source was last fresh."""

    snapshot: ClusterSnapshot
    synced_wall: float
    """Wall-clock time its source was last known fresh (the data's age counts from it)."""


# --- encoding ----------------------------------------------------------------------


def _service(s: Service) -> tuple[Any, ...]:
    policy = None
    if s.policy is not None:
        p = s.policy
        policy = (p.weights, p.regions, p.none_healthy, p.shares, p.answer_mode,
                  p.capacity_aware)
    return (s.namespace, s.name, s.type.value, s.cluster_ips, s.load_balancer_ips,
            tuple((p.name, p.port, p.protocol.value) for p in s.ports),
            tuple(tuple(e) for e in s.endpoints), policy, s.load_balancer_hostnames,
            s.external_name, s.traffic_distribution)


class _Frames:
    """A pickler's output, received one frame (about 64 KB) at a time.

    ``pickle.dumps`` is one C call that holds the GIL until the whole body is
    built (a 7 MB snapshot: tens of milliseconds, during which the serving loop,
    waiting for the GIL, answers nothing). A pickler writing to a file hands over
    each frame as it is done; this ``write`` is Python code, so the interpreter
    may switch to the loop between two frames. The bytes are the same.
    """

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)


def encode(clusters: Mapping[str, SavedCluster], *, federation: str, wall: float) -> bytes:
    """The snapshot file's bytes: a header line, then the pickled body.

    Runs in a worker thread (the registry's dicts copied on the loop first).
    """
    frames = _Frames()
    pickle.Pickler(frames, protocol=5).dump((
        federation,
        wall,
        tuple((name, saved.synced_wall,
               tuple(_service(s) for s in saved.snapshot.services.values()))
              for name, saved in clusters.items()),
    ))
    body = b"".join(frames.parts)
    digest = hashlib.sha256(body).hexdigest()
    return MAGIC + f" {VERSION} {digest} {len(body)}\n".encode() + body


def body_digest(data: bytes) -> str:
    """The checksum an encoded snapshot's header carries (names it in the freshness file)."""
    return data.split(b"\n", 1)[0].split(b" ")[2].decode("ascii")


def freshness_path(path: Path) -> Path:
    """Where the freshness file of the snapshot at ``path`` lives."""
    return path.with_name(path.name + ".fresh")


def encode_freshness(fresh: Mapping[str, float], *, federation: str, body: str) -> bytes:
    """The freshness file: each cluster's last-fresh wall time, for the snapshot ``body``."""
    return json.dumps({"v": 1, "federation": federation, "body": body,
                       "fresh": dict(fresh)}, sort_keys=True).encode()


def _read_freshness(path: Path, *, federation: str, body: str) -> dict[str, float]:
    """The freshness file's times when it belongs to this snapshot ({} otherwise)."""
    try:
        doc = json.loads(freshness_path(path).read_bytes())
        if doc.get("v") != 1 or doc.get("federation") != federation or doc.get("body") != body:
            return {}
        return {str(k): float(v) for k, v in dict(doc["fresh"]).items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("ignoring %s: %s", freshness_path(path), exc)
        return {}


class _PlainUnpickler(pickle.Unpickler):
    """Loads containers, strings and numbers only: any class reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise SnapshotError(f"snapshot refers to {module}.{name}: refused")


def _decode_service(raw: tuple[Any, ...]) -> Service:
    # Format 2 ends after the policy; format 3 adds three fields (and three to the policy).
    ns, name, kind, cips, lbips, ports, eps, policy = raw[:8]
    hostnames, external, traffic = raw[8:] if len(raw) > 8 else ((), None, None)
    sp = None
    if policy is not None:
        weights, regions, none_healthy = policy[:3]
        shares, mode, capacity = policy[3:] if len(policy) > 3 else ((), None, None)
        sp = ServicePolicy(tuple((str(c), float(w)) for c, w in weights),
                           tuple(regions) if regions is not None else None, none_healthy,
                           tuple((str(c), float(v)) for c, v in shares), mode, capacity)
    make = Endpoint._make
    return Service(
        namespace=ns, name=name, type=ServiceType(kind), cluster_ips=tuple(cips),
        load_balancer_ips=tuple(lbips),
        ports=tuple(Port(p[0], int(p[1]), Protocol(p[2])) for p in ports),
        endpoints=tuple(map(make, eps)),
        policy=sp,
        load_balancer_hostnames=tuple(hostnames),
        external_name=external,
        traffic_distribution=traffic,
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
    if version not in READABLE:
        raise SnapshotError(f"format {version} is no longer read (this reads {VERSION})")
    if len(body) != length:
        raise SnapshotError(f"truncated: {len(body)} of {length} bytes")
    if hashlib.sha256(body).hexdigest().encode() != parts[2]:
        raise SnapshotError("checksum mismatch (corrupt file)")
    try:
        federation, created, raw_clusters = _PlainUnpickler(io.BytesIO(body)).load()
        clusters = {}
        for name, synced, services in raw_clusters:
            snap = ClusterSnapshot(name, {(s[0], s[1]): _decode_service(s) for s in services})
            clusters[str(name)] = SavedCluster(snap, float(synced))
        return str(federation), float(created), clusters
    except SnapshotError:
        raise
    except Exception as exc:  # any malformed content is a refused file, never a crash
        raise SnapshotError(f"malformed content: {type(exc).__name__}: {exc}") from exc


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
    fresher = _read_freshness(path, federation=federation, body=body_digest(data))
    usable = {}
    for name, stored in clusters.items():
        saved = stored
        if fresher.get(name, saved.synced_wall) > saved.synced_wall:
            saved = SavedCluster(saved.snapshot, fresher[name])
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
