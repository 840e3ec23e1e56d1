"""The seal on every bus payload: a one-line header carrying an HMAC or Ed25519 signatures.

Why it exists: nothing received from the shared broker is believed until its
seal is checked, and the check must come before a byte of the body is parsed
or inflated. Two formats share the first line::

    fd1 <key id> <j|z> <base64url HMAC-SHA256> LF <body>          shared key ring
    fd2 <j|z> <key id>:<base64url Ed25519>[,<key id>:<sig>...] LF <body>

Both cover the topic, the encoding and the body bytes exactly as sent (HiveMQ
"MQTT Security Fundamentals: Message Data Integrity": topic and payload, never
QoS or message id), so a message cannot be altered or moved to another topic.

``fd1`` (HMAC) proves only that *some* holder of the federation's secret sent
it: every member can speak for every other. ``fd2`` proves *which cluster's*
key signed it, and a message is accepted for cluster X only when signed by one
of X's keys (issue #17): Y's valid signature on X's topic is ``wrong_signer``.
A receiver that predates ``fd2`` rejects it cleanly as malformed (a new magic,
not a new field an old parser might skip). A message carries more than one
signature only as a last will, which says "offline" for every cluster its
instance publishes: it speaks for each cluster whose own key signed it.

During a migration from HMAC an instance may hold both: it accepts ``fd1``
while ``bus.keys`` is set and ``fd2`` for the clusters it has public keys for,
and it signs with its private keys when it has them (README, "Bus keys").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from feddns.config import BusConfig
from feddns.errors import ConfigError, FeddnsError
from feddns.sources.mqtt.keys import KeyRing
from feddns.sources.mqtt.signatures import (
    KeyFileError,
    PublicKeys,
    SigningKey,
    public_key_files,
    read_private_key,
    read_public_key,
)
from feddns.sources.mqtt.verdicts import Reason, Rejected

MAGIC_HMAC = b"fd1"
MAGIC_SIGNED = b"fd2"
MAX_SIGNATURES = 64
"""Signatures one message may carry (a last will: one per cluster its instance publishes)."""
HMAC_HEADER_LIMIT = 200
SIGNED_HEADER_LIMIT = 16 + MAX_SIGNATURES * 100
ENCODINGS = (b"j", b"z")


@dataclass(frozen=True, slots=True)
class Opened:
    """A payload whose seal verified: its body (still encoded) and who vouched for it."""

    encoding: bytes
    body: bytes
    key_id: str
    scheme: str
    signers: frozenset[str] | None
    """Clusters whose own key signed it; None for HMAC (any member could have)."""


def _signed_input(magic: bytes, topic: str, encoding: bytes, body: bytes,
                  key_id: bytes = b"") -> bytes:
    parts = (magic, topic.encode(), key_id, encoding, body) if key_id else (
        magic, topic.encode(), encoding, body)
    return b"\0".join(parts)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


class BusKeys:
    """Every key an instance signs and verifies bus messages with.

    ``hmac``: the shared ring (None: HMAC off, ``fd1`` refused); ``public``: the
    clusters' public keys; ``private``: this instance's own clusters' private keys,
    whose public halves are accepted for those clusters too (own echoes, replicas).
    """

    __slots__ = ("hmac", "private", "public")

    def __init__(self, *, hmac: KeyRing | None = None, public: PublicKeys | None = None,
                 private: Mapping[str, SigningKey] | None = None) -> None:
        self.hmac = hmac
        self.private = dict(private or {})
        self.public = public if public is not None else PublicKeys()
        for cluster, key in self.private.items():
            self.public.add(cluster, key.public)

    @classmethod
    def of(cls, keys: BusKeys | KeyRing) -> BusKeys:
        """``keys`` as a :class:`BusKeys` (a bare HMAC ring: HMAC only)."""
        return keys if isinstance(keys, BusKeys) else cls(hmac=keys)

    @classmethod
    def from_config(cls, settings: BusConfig, *,
                    environ: dict[str, str] | None = None) -> BusKeys:
        """Read every key file the ``bus`` section names; report every problem at once."""
        problems: list[str] = []
        ring = None
        if settings.keys:
            try:
                ring = KeyRing.from_config(settings, environ=environ)
            except ConfigError as exc:
                problems += exc.problems
        private: dict[str, SigningKey] = {}
        for i, entry in enumerate(settings.private_keys):
            try:
                private[entry.cluster] = read_private_key(entry.file, entry.cluster)
            except KeyFileError as exc:
                problems.append(f"bus.private_keys[{i}] ({entry.cluster}): {exc}")
        public = PublicKeys()
        sources: dict[str, list[str]] = {}  # key id -> where it was given (for problems)
        listed: list[tuple[str, Path, str]] = [
            (entry.cluster, entry.file, f"bus.public_keys[{i}]")
            for i, entry in enumerate(settings.public_keys)]
        if settings.public_keys_dir is not None:
            found, dir_problems = public_key_files(settings.public_keys_dir)
            problems += [f"bus.public_keys_dir: {p}" for p in dir_problems]
            listed += [(cluster, path, "bus.public_keys_dir") for cluster, path in found]
        for cluster, path, where in listed:
            try:
                key_id = public.add(cluster, read_public_key(path))
            except KeyFileError as exc:
                problems.append(f"{where} ({cluster}): {exc}")
                continue
            sources.setdefault(key_id, []).append(f"{cluster} ({path})")
        for cluster, key in private.items():
            listed_ids = public.ids(cluster)
            if listed_ids and key.key_id not in listed_ids:
                problems.append(
                    f"bus.private_keys ({cluster}): its public key (id {key.key_id}) is not among"
                    f" the public keys given for {cluster} ({', '.join(listed_ids)}); peers with"
                    " the same list reject what this instance signs: add the new public key"
                    " everywhere first, then switch (README, rolling a cluster's key)")
            sources.setdefault(key.key_id, []).append(f"{cluster} (private key)")
        for key_id in sorted(sources):
            owners = public.owners(key_id)
            for cluster, key in private.items():
                if key.key_id == key_id and cluster not in owners:
                    owners = (*owners, cluster)
            if len(owners) > 1:
                problems.append(
                    f"bus: one key (id {key_id}) is given for clusters {', '.join(owners)}:"
                    f" {'; '.join(sources[key_id])}; each cluster needs its own key pair"
                    " (`feddns keygen CLUSTER`), or one can speak for the other")
        if problems:
            raise ConfigError("bus keys", problems)
        return cls(hmac=ring, public=public, private=private)

    # --- sealing --------------------------------------------------------------------

    def can_sign(self, cluster: str) -> bool:
        """True when messages for ``cluster`` can be sealed (a private key, or HMAC)."""
        return cluster in self.private or self.hmac is not None

    def seal(self, topic: str, encoding: bytes, body: bytes, *, cluster: str,
             also: Sequence[str] = ()) -> bytes:
        """The payload: header line and body, sealed for ``cluster`` (and ``also``'s).

        With ``cluster``'s private key: ``fd2``, signed by it and by the private key of
        each cluster in ``also`` (a last will). Otherwise with the HMAC signing key.
        """
        own = self.private.get(cluster)
        if own is not None:
            data = _signed_input(MAGIC_SIGNED, topic, encoding, body)
            signers = [own, *(self.private[c] for c in dict.fromkeys(also)
                              if c != cluster and c in self.private)][:MAX_SIGNATURES]
            sigs = b",".join(b"%s:%s" % (k.key_id.encode(), _b64(k.sign(data)))
                             for k in signers)
            return b"%s %s %s\n%s" % (MAGIC_SIGNED, encoding, sigs, body)
        ring = self.hmac
        if ring is None:
            raise FeddnsError(f"no key to sign for cluster {cluster}: bus.private_keys has"
                              " none for it and bus.keys (HMAC) is empty")
        key_id = ring.signing_id.encode()
        secret = ring.secret(ring.signing_id)
        assert secret is not None  # the ring's constructor guarantees it
        mac = hmac.digest(secret, _signed_input(MAGIC_HMAC, topic, encoding, body, key_id),
                          hashlib.sha256)
        return b"%s %s %s %s\n%s" % (MAGIC_HMAC, key_id, encoding, _b64(mac), body)

    # --- opening --------------------------------------------------------------------

    def open(self, topic: str, cluster: str, payload: bytes) -> Opened:
        """Verify the seal of a payload received on ``cluster``'s ``topic``.

        Raises :class:`Rejected` (malformed, unknown key, bad MAC or signature, wrong
        signer); nothing of the body has been parsed when it does.
        """
        if payload.startswith(MAGIC_SIGNED + b" "):
            return self._open_signed(topic, cluster, payload)
        newline = payload.find(b"\n", 0, HMAC_HEADER_LIMIT)
        fields = payload[:newline].split(b" ") if newline > 0 else []
        if len(fields) != 4 or fields[0] != MAGIC_HMAC or fields[2] not in ENCODINGS:
            raise Rejected(Reason.MALFORMED, "no bus header")
        _, key_id, encoding, tag = fields
        body = payload[newline + 1:]
        ring = self.hmac
        try:
            name = key_id.decode("ascii")
            mac = _unb64(tag)
        except (UnicodeDecodeError, binascii.Error, ValueError) as exc:
            raise Rejected(Reason.MALFORMED, "bad header encoding") from exc
        secret = ring.secret(name) if ring is not None else None
        if secret is None:
            raise Rejected(Reason.UNKNOWN_KEY, f"HMAC key id {key_id[:32]!r}"
                           + ("" if ring is not None else " (HMAC is off: bus.keys is empty)"))
        expected = hmac.digest(secret, _signed_input(MAGIC_HMAC, topic, encoding, body, key_id),
                               hashlib.sha256)
        if not hmac.compare_digest(mac, expected):
            raise Rejected(Reason.BAD_MAC)
        return Opened(encoding, body, name, "hmac", None)

    def _open_signed(self, topic: str, cluster: str, payload: bytes) -> Opened:
        newline = payload.find(b"\n", 0, SIGNED_HEADER_LIMIT)
        fields = payload[:newline].split(b" ") if newline > 0 else []
        if len(fields) != 3 or fields[1] not in ENCODINGS or not fields[2]:
            raise Rejected(Reason.MALFORMED, "no bus header")
        encoding = fields[1]
        body = payload[newline + 1:]
        items = fields[2].split(b",")
        if len(items) > MAX_SIGNATURES:
            raise Rejected(Reason.MALFORMED, f"more than {MAX_SIGNATURES} signatures")
        try:
            sigs = [(k.decode("ascii"), _unb64(s))
                    for k, _, s in (item.partition(b":") for item in items)]
        except (UnicodeDecodeError, binascii.Error, ValueError) as exc:
            raise Rejected(Reason.MALFORMED, "bad header encoding") from exc
        data = _signed_input(MAGIC_SIGNED, topic, encoding, body)
        public = self.public
        accepted: str | None = None
        failed = False
        tried: set[str] = set()  # each key is tried once, however often a header repeats it
        for key_id, sig in sigs:
            if key_id in tried:
                continue
            verdict = public.verify(cluster, key_id, sig, data)
            if verdict is None:
                continue  # not one of the cluster's keys (a will's other signature)
            tried.add(key_id)
            if verdict:
                accepted = key_id
                break
            failed = failed or verdict is False
        if accepted is None:
            if failed:
                raise Rejected(Reason.BAD_SIGNATURE, f"by a key of {cluster[:64]}")
            raise self._not_signed_by(cluster, sigs, data)
        signers = {cluster}
        for key_id, sig in sigs:  # a last will: more clusters it may speak for
            if key_id in tried:
                continue
            tried.add(key_id)
            for owner in public.owners(key_id):
                if owner not in signers and public.verify(owner, key_id, sig, data):
                    signers.add(owner)
        return Opened(encoding, body, accepted, "ed25519", frozenset(signers))

    def _not_signed_by(self, cluster: str, sigs: list[tuple[str, bytes]],
                       data: bytes) -> Rejected:
        """Why no signature of ``cluster``'s was found: another cluster's, a forgery, none."""
        for key_id, sig in sigs:
            for owner in self.public.owners(key_id):
                if self.public.verify(owner, key_id, sig, data):
                    return Rejected(Reason.WRONG_SIGNER,
                                    f"for {cluster[:64]}, signed by {owner}'s key {key_id}")
                return Rejected(Reason.BAD_SIGNATURE, f"claims {owner}'s key {key_id}")
        shown = ", ".join(k[:16] for k, _ in sigs[:3])
        return Rejected(Reason.UNKNOWN_KEY, f"Ed25519 key id(s) {shown!r} not accepted for"
                        f" {cluster[:64]}")

    def signer_ids(self) -> tuple[str, ...]:
        """What this instance signs with (key ids): a change is a switch of signer."""
        own = tuple(f"{c}:{k.key_id}" for c, k in sorted(self.private.items()))
        if own or self.hmac is None:
            return own
        return (f"hmac:{self.hmac.signing_id}",)

    def describe(self) -> str:
        """One log line: what signs and what is accepted (key ids, never a secret)."""
        signs = ", ".join(f"{c} {k.key_id}" for c, k in sorted(self.private.items()))
        accepts = "; ".join(f"{c}: {', '.join(self.public.ids(c))}"
                            for c in sorted(self.public.clusters))
        hmac_ids = ", ".join(self.hmac.ids) if self.hmac is not None else "off"
        return (f"signing with {signs or 'HMAC'}; Ed25519 accepted for {accepts or 'none'};"
                f" HMAC {hmac_ids}")

    def __repr__(self) -> str:
        return (f"BusKeys(hmac={self.hmac!r}, public={self.public!r},"
                f" private={list(self.private.values())!r})")

