"""What checking a received bus message ends in: its verified header, or a counted rejection.

Why it exists: the seal (``sealing``: the MAC or the signatures) and the body
(``codec``: schema, topic, addresses) are checked by two modules, and both must
end in the same two outcomes, so they live below both: a :class:`Header` that
says what a verified message claims about itself and *who vouched for it*, or
a :class:`Rejected` carrying a :class:`Reason` (a label of
``feddns_bus_rejected_total``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from feddns.errors import FeddnsError


class Reason(enum.StrEnum):
    """Why a received message was rejected (a label of the rejection counter)."""

    OVERSIZED = "oversized"
    """Larger than ``max_payload_size`` (or inflating beyond its bound)."""
    MALFORMED = "malformed"
    """Not a bus payload: bad header, bad JSON, or a body that fails the schema."""
    UNKNOWN_KEY = "unknown_key"
    """Signed with a key id that no key ring holds (not yet added, retired, or HMAC off)."""
    BAD_MAC = "bad_mac"
    """The HMAC does not match: forged, altered, or signed with another secret."""
    BAD_SIGNATURE = "bad_signature"
    """An Ed25519 signature by a known key does not verify: forged or altered in transit."""
    WRONG_SIGNER = "wrong_signer"
    """Validly signed, but only by another cluster's key: a member speaking for another
    (a compromised member, or a key distributed under the wrong cluster's name)."""
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


@dataclass(frozen=True, slots=True)
class Header:
    """What every verified message says about itself, and who vouched for it."""

    origin: str
    instance: str
    gen: int
    ts: float
    key_id: str
    scheme: str = "hmac"
    """``hmac`` (a shared key: any holder could have sent it) or ``ed25519``."""
    signers: frozenset[str] | None = None
    """The clusters whose own key signed the message (Ed25519); None with HMAC, which
    cannot tell members apart. A last will speaks for another cluster only if listed."""

    def speaks_for(self, cluster: str) -> bool:
        """True when the message may change ``cluster``'s state (its seal covers it)."""
        return self.signers is None or cluster in self.signers


class Rejected(FeddnsError):
    """A received message failed a check; ``reason`` says which.

    ``header`` is set when the failing check came after the seal was verified and the
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
