"""Signed bus payloads: encoding own data, and verifying and converting peers' data.

Why it exists: the broker is shared infrastructure, so nothing received from
it is trusted until this module says so. Every payload is a one-line header
plus a JSON body (zlib-compressed when large)::

    fd1 <key id> <j|z> <base64url HMAC-SHA256> LF <body>

The MAC covers the topic, the key id, the encoding and the body bytes exactly
as sent (HiveMQ "MQTT Security Fundamentals: Message Data Integrity": topic
and payload, never QoS or message id, which change in transit), so a message
cannot be altered or moved to another topic. The body carries the origin
cluster, the sending instance, a generation and a timestamp; the receiver
checks the timestamp against a replay window (TSIG's fudge, RFC 8945) and the
generation against the last one it applied. Checks run cheapest first: the
size cap before anything, the MAC before parsing or inflating a byte, the
schema (pydantic) before conversion, the address policy before the data can
reach the registry. What leaves this module is either a model object or a
:class:`Rejected` carrying a reason that is counted. The schema of a service on
the wire, and its conversion, live in :mod:`.schema`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from feddns.errors import FeddnsError
from feddns.model.registry import ClusterState
from feddns.model.services import Service, ServiceKey
from feddns.sources.mqtt.addresses import AddressPolicy
from feddns.sources.mqtt.keys import KeyRing
from feddns.sources.mqtt.schema import (
    BODY,
    ServiceBody,
    SnapshotBody,
    StatusBody,
    data_from_service,
    service_from_data,
)
from feddns.sources.mqtt.topics import ParsedTopic, Topics

MAGIC = b"fd1"
COMPRESS_ABOVE = 1024
"""Bodies larger than this many bytes are zlib-compressed (names and addresses compress
well, so 10,000 service keys fit in one manifest)."""
INFLATE_FACTOR = 32
"""A compressed body may inflate to at most this many times ``max_payload_size``."""


class Reason(enum.StrEnum):
    """Why a received message was rejected (a label of the rejection counter)."""

    OVERSIZED = "oversized"
    """Larger than ``max_payload_size`` (or inflating beyond its bound)."""
    MALFORMED = "malformed"
    """Not a bus payload: bad header, bad JSON, or a body that fails the schema."""
    UNKNOWN_KEY = "unknown_key"
    """Signed with a key id that is not in the key ring (not yet added, or retired)."""
    BAD_MAC = "bad_mac"
    """The MAC does not match: forged, altered, or signed with another secret."""
    TOPIC_MISMATCH = "topic_mismatch"
    """The signed body names another cluster, kind or service than its topic."""
    REPLAY = "replay"
    """The signed timestamp is outside the replay window of the local wall clock."""
    OLD_GENERATION = "old_generation"
    """Older than data already applied from that origin (replayed or reordered)."""
    ADDRESS = "address"
    """An address outside ``allowed_cidrs`` or inside ``denied_cidrs``."""
    UNKNOWN_CLUSTER = "unknown_cluster"
    """A cluster not in the configuration (``accept_unknown_clusters`` is off)."""


class Rejected(FeddnsError):
    """A received message failed a check; ``reason`` says which.

    ``header`` is set when the failing check came after the MAC was verified and the
    body parsed: the message is then known to come from a key holder, for the origin,
    instance and generation it names (the merger orders such a rejection against the
    data it holds). Before that point nothing in the message can be believed.
    """

    def __init__(self, reason: Reason, detail: str = "", *,
                 header: Header | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.header = header
        super().__init__(f"{reason}: {detail}" if detail else str(reason))


# --- decoded messages (model objects only) -------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    """What every verified message says about itself."""

    origin: str
    instance: str
    gen: int
    ts: float
    key_id: str


@dataclass(frozen=True, slots=True)
class ServiceMessage:
    """A verified service of a peer cluster."""

    header: Header
    service: Service


@dataclass(frozen=True, slots=True)
class SnapshotMessage:
    """A verified manifest of a peer cluster."""

    header: Header
    keys: frozenset[ServiceKey]


@dataclass(frozen=True, slots=True)
class StatusMessage:
    """A verified status of a peer cluster's publishing session."""

    header: Header
    online: bool
    session: int
    state: ClusterState
    clusters: tuple[str, ...]


Decoded = ServiceMessage | SnapshotMessage | StatusMessage


# --- the codec -----------------------------------------------------------------


def _mac_input(topic: str, key_id: bytes, encoding: bytes, body: bytes) -> bytes:
    return b"\0".join((MAGIC, topic.encode(), key_id, encoding, body))


class Codec:
    """Signs own messages and verifies peers' ones for one federation's topics."""

    def __init__(self, topics: Topics, keyring: KeyRing, policy: AddressPolicy, *,
                 max_payload_size: int) -> None:
        self.topics = topics
        self.keyring = keyring
        self.policy = policy
        self.max_payload_size = max_payload_size

    # --- encoding ------------------------------------------------------------

    def seal(self, topic: str, body: dict[str, Any]) -> bytes:
        """Serialise, maybe compress, and sign ``body`` for ``topic``."""
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        encoding = b"j"
        if len(raw) > COMPRESS_ABOVE:
            raw, encoding = zlib.compress(raw, 6), b"z"
        key_id = self.keyring.signing_id.encode()
        secret = self.keyring.secret(self.keyring.signing_id)
        assert secret is not None  # the ring's constructor guarantees it
        mac = hmac.digest(secret, _mac_input(topic, key_id, encoding, raw), hashlib.sha256)
        tag = base64.urlsafe_b64encode(mac).rstrip(b"=")
        return b"%s %s %s %s\n%s" % (MAGIC, key_id, encoding, tag, raw)

    @staticmethod
    def _head(cluster: str, kind: str, *, instance: str, gen: int,
              ts: float) -> dict[str, Any]:
        return {"v": 1, "kind": kind, "origin": cluster, "instance": instance, "gen": gen,
                "ts": round(ts, 3)}

    def service(self, cluster: str, service: Service, *, instance: str, gen: int,
                ts: float) -> tuple[str, bytes]:
        """Topic and signed payload for one own service."""
        topic = self.topics.service(cluster, service.key)
        body = self._head(cluster, "service", instance=instance, gen=gen, ts=ts)
        body["service"] = data_from_service(service)
        return topic, self.seal(topic, body)

    def snapshot(self, cluster: str, keys: Iterable[ServiceKey], *, instance: str, gen: int,
                 ts: float) -> tuple[str, bytes]:
        """Topic and signed payload for one own cluster's manifest."""
        topic = self.topics.snapshot(cluster)
        body = self._head(cluster, "snapshot", instance=instance, gen=gen, ts=ts)
        body["services"] = [list(k) for k in sorted(keys)]
        return topic, self.seal(topic, body)

    def status(self, cluster: str, *, online: bool, session: int, state: ClusterState,
               clusters: Sequence[str] = (), instance: str, gen: int,
               ts: float) -> tuple[str, bytes]:
        """Topic and signed payload for an own cluster's status (or the last will)."""
        topic = self.topics.status(cluster)
        body = self._head(cluster, "status", instance=instance, gen=gen, ts=ts)
        body.update(online=online, session=session, state=state.value,
                    clusters=list(clusters))
        return topic, self.seal(topic, body)

    # --- decoding ------------------------------------------------------------

    def decode(self, topic: str, payload: bytes) -> Decoded:
        """Verify and convert a received payload; raise :class:`Rejected` on any failure.

        Not checked here (they need the receiver's state): the timestamp window
        (:func:`check_time`) and the generation order.
        """
        if len(payload) > self.max_payload_size:
            raise Rejected(Reason.OVERSIZED, f"{len(payload)} bytes")
        parsed = self.topics.parse(topic)
        if parsed is None:
            raise Rejected(Reason.MALFORMED, "not a bus topic")
        newline = payload.find(b"\n", 0, 200)
        fields = payload[:newline].split(b" ") if newline > 0 else []
        if len(fields) != 4 or fields[0] != MAGIC or fields[2] not in (b"j", b"z"):
            raise Rejected(Reason.MALFORMED, "no bus header")
        _, key_id, encoding, tag = fields
        body = payload[newline + 1:]
        try:
            secret = self.keyring.secret(key_id.decode("ascii"))
            mac = base64.urlsafe_b64decode(tag + b"=" * (-len(tag) % 4))
        except (UnicodeDecodeError, binascii.Error, ValueError) as exc:
            raise Rejected(Reason.MALFORMED, "bad header encoding") from exc
        if secret is None:
            raise Rejected(Reason.UNKNOWN_KEY, f"key id {key_id[:32]!r}")
        expected = hmac.digest(secret, _mac_input(topic, key_id, encoding, body),
                               hashlib.sha256)
        if not hmac.compare_digest(mac, expected):
            raise Rejected(Reason.BAD_MAC)
        if encoding == b"z":
            body = self._inflate(body)
        try:
            decoded = BODY.validate_json(body)
        except ValidationError as exc:
            raise Rejected(Reason.MALFORMED, _first_error(exc)) from exc
        header = Header(decoded.origin, decoded.instance, decoded.gen, decoded.ts,
                        key_id.decode("ascii"))
        self._check_topic(parsed, decoded)
        if isinstance(decoded, ServiceBody):
            service = service_from_data(decoded.service)
            bad = self.policy.first_violation(service)
            if bad is not None:
                raise Rejected(Reason.ADDRESS, f"service {service.namespace}/{service.name}:"
                               f" {bad}", header=header)
            return ServiceMessage(header, service)
        if isinstance(decoded, SnapshotBody):
            return SnapshotMessage(header, frozenset(decoded.services))
        return StatusMessage(header, decoded.online, decoded.session, decoded.state,
                             tuple(decoded.clusters))

    def _inflate(self, body: bytes) -> bytes:
        inflater = zlib.decompressobj()
        limit = self.max_payload_size * INFLATE_FACTOR
        try:
            out = inflater.decompress(body, limit)
        except zlib.error as exc:
            raise Rejected(Reason.MALFORMED, "bad compressed body") from exc
        if inflater.unconsumed_tail:
            raise Rejected(Reason.OVERSIZED, f"inflates beyond {limit} bytes")
        if not inflater.eof:
            raise Rejected(Reason.MALFORMED, "truncated compressed body")
        return out

    @staticmethod
    def _check_topic(parsed: ParsedTopic,
                     body: ServiceBody | SnapshotBody | StatusBody) -> None:
        if body.origin != parsed.cluster or body.kind != parsed.kind:
            raise Rejected(Reason.TOPIC_MISMATCH, f"{body.kind} of {body.origin}")
        if isinstance(body, ServiceBody) and (
            (body.service.namespace, body.service.name) != parsed.key
        ):
            raise Rejected(Reason.TOPIC_MISMATCH, "service name differs from its topic")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}"[:200]


def check_time(header: Header, *, wall_now: float, window: float,
               extra_age: float = 0.0) -> None:
    """Raise ``Rejected(REPLAY)`` unless the signed timestamp is within the window.

    ``extra_age`` widens the window into the past only, for retained messages,
    which the broker may hold for up to one republish interval before a new
    subscriber gets them.
    """
    skew = header.ts - wall_now
    if not math.isfinite(skew) or skew > window or -skew > window + extra_age:
        raise Rejected(Reason.REPLAY, f"timestamp {skew:+.0f} s from the local clock")


__all__ = [
    "AddressPolicy",
    "Codec",
    "Decoded",
    "Header",
    "KeyRing",
    "Reason",
    "Rejected",
    "ServiceMessage",
    "SnapshotMessage",
    "StatusMessage",
    "check_time",
]
