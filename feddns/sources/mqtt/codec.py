"""Bus payloads: encoding own data, and verifying and converting peers' data.

Why it exists: the broker is shared infrastructure, so nothing received from
it is trusted until this module says so. Every payload is a one-line header
(the seal: an HMAC or per-cluster Ed25519 signatures, see ``sealing``) plus a
JSON body, zlib-compressed when large. The seal covers the topic and the body
bytes exactly as sent, so a message cannot be altered or moved to another
topic. The body carries the origin cluster, the sending instance, a generation
and a timestamp; the receiver checks the timestamp against a replay window
(TSIG's fudge, RFC 8945) and the generation against the last one it applied.
Checks run cheapest first: the size cap before anything, the seal before
parsing or inflating a byte, the schema (pydantic) before conversion, the
address policy before the data can reach the registry. What leaves this
module is either a model object or a :class:`Rejected` carrying a reason that
is counted. The schema of a service on
the wire, and its conversion, live in :mod:`.schema`.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

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
from feddns.sources.mqtt.sealing import BusKeys
from feddns.sources.mqtt.topics import ParsedTopic, Topics
from feddns.sources.mqtt.verdicts import Header, Reason, Rejected

COMPRESS_ABOVE = 1024
"""Bodies larger than this many bytes are zlib-compressed (names and addresses compress
well, so 10,000 service keys fit in one manifest)."""
INFLATE_FACTOR = 32
"""A compressed body may inflate to at most this many times ``max_payload_size``."""




# --- decoded messages (model objects only) -------------------------------------


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


class Codec:
    """Seals own messages and verifies peers' ones for one federation's topics."""

    def __init__(self, topics: Topics, keys: BusKeys | KeyRing, policy: AddressPolicy, *,
                 max_payload_size: int) -> None:
        self.topics = topics
        self.keys = BusKeys.of(keys)
        self.policy = policy
        self.max_payload_size = max_payload_size
        self._sealed: dict[str, bytes] = {}
        """Own topic -> digest of the payload last sealed for it (see :meth:`is_own`)."""

    # --- encoding ------------------------------------------------------------

    def seal(self, topic: str, body: dict[str, Any], *, cluster: str | None = None,
             also: Sequence[str] = ()) -> bytes:
        """Serialise, maybe compress, and seal ``body`` for ``cluster``'s ``topic``.

        ``cluster`` defaults to the topic's. ``also``: more clusters the message speaks
        for (a last will), signed by their keys too when this instance signs per cluster.
        """
        if cluster is None:
            parsed = self.topics.parse(topic)
            cluster = parsed.cluster if parsed is not None else ""
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        encoding = b"j"
        if len(raw) > COMPRESS_ABOVE:
            raw, encoding = zlib.compress(raw, 6), b"z"
        payload = self.keys.seal(topic, encoding, raw, cluster=cluster, also=also)
        self._sealed[topic] = hashlib.blake2b(payload, digest_size=16).digest()
        return payload

    def is_own(self, topic: str, payload: bytes) -> bool:
        """True when ``payload`` is what this instance last sealed for ``topic`` (its echo).

        The broker sends every own message back; checking an Ed25519 signature costs
        ~100 µs, so a 10,000-service publish would cost its publisher a second or two
        of verifying itself. Identical bytes are this instance's own message (a replay
        of it is harmless: it is the current one), so the echo is skipped unverified.
        """
        digest = self._sealed.get(topic)
        return digest is not None and digest == hashlib.blake2b(payload,
                                                                 digest_size=16).digest()

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
        return topic, self.seal(topic, body, cluster=cluster)

    def snapshot(self, cluster: str, keys: Iterable[ServiceKey], *, instance: str, gen: int,
                 ts: float) -> tuple[str, bytes]:
        """Topic and signed payload for one own cluster's manifest."""
        topic = self.topics.snapshot(cluster)
        body = self._head(cluster, "snapshot", instance=instance, gen=gen, ts=ts)
        body["services"] = [list(k) for k in sorted(keys)]
        return topic, self.seal(topic, body, cluster=cluster)

    def status(self, cluster: str, *, online: bool, session: int, state: ClusterState,
               clusters: Sequence[str] = (), instance: str, gen: int,
               ts: float) -> tuple[str, bytes]:
        """Topic and signed payload for an own cluster's status (or the last will)."""
        topic = self.topics.status(cluster)
        body = self._head(cluster, "status", instance=instance, gen=gen, ts=ts)
        body.update(online=online, session=session, state=state.value,
                    clusters=list(clusters))
        # Only an "offline" status (a last will) speaks for the other clusters it lists.
        return topic, self.seal(topic, body, cluster=cluster, also=() if online else clusters)

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
        opened = self.keys.open(topic, parsed.cluster, payload)
        body, encoding = opened.body, opened.encoding
        if encoding == b"z":
            body = self._inflate(body)
        try:
            decoded = BODY.validate_json(body)
        except ValidationError as exc:
            raise Rejected(Reason.MALFORMED, _first_error(exc)) from exc
        header = Header(decoded.origin, decoded.instance, decoded.gen, decoded.ts,
                        opened.key_id, opened.scheme, opened.signers)
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
    "BusKeys",
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
