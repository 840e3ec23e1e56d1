"""Per-cluster Ed25519 key pairs of the bus: key files, key ids, signing and verifying.

Why it exists: with a shared HMAC key every member can speak for every other
(issue #17), so one compromised cluster could steer the whole federation's
traffic. Here each cluster signs with its own private key and every instance
holds only public keys, per cluster: a holder of Y's private key cannot speak
for X. This is the only module that imports ``cryptography`` (the owner
contract in ``pyproject.toml``).

Files: a private key is PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``), a public
key SubjectPublicKeyInfo PEM (``-----BEGIN PUBLIC KEY-----``), as written by
``feddns keygen`` and read by OpenSSL (``openssl pkey -in east.key -pubout``).
In a directory of public keys (a mounted ConfigMap) the file name says the
cluster: ``<cluster>.pub``, or ``<cluster>_<label>.pub`` for a second key of
the same cluster while rolling (``_`` never occurs in a cluster id).

A key id is derived from the public key itself (the first 8 bytes of its
SHA-256, base64url), so nobody has to name keys and two files holding the same
key are recognised as one. Public keys are parsed once, when the config is
loaded; verifying a message is one dictionary lookup and one Ed25519 check.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from feddns.errors import FeddnsError

SIGNATURE_BYTES = 64
KEY_ID_BYTES = 8
PUBLIC_SUFFIX = ".pub"
PRIVATE_SUFFIX = ".key"
_LABEL = re.compile(r"^[A-Za-z0-9.-]{1,40}$")
_CLUSTER_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_CLUSTER = re.compile(rf"^{_CLUSTER_LABEL}(\.{_CLUSTER_LABEL})?$")


class KeyFileError(FeddnsError):
    """A key file cannot be used; the message says what was expected."""


def key_id_of(public: Ed25519PublicKey) -> str:
    """The key's id: base64url of the first 8 bytes of SHA-256 over the raw key (11 chars)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    digest = hashlib.sha256(raw).digest()[:KEY_ID_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class SigningKey:
    """One cluster's private key; the key itself never appears in a ``repr``."""

    __slots__ = ("_private", "cluster", "key_id", "public")

    def __init__(self, cluster: str, private: Ed25519PrivateKey) -> None:
        self.cluster = cluster
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id_of(self.public)

    @classmethod
    def generate(cls, cluster: str) -> SigningKey:
        """A new random key pair (tests; ``feddns keygen`` writes one to files)."""
        return cls(cluster, Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._private.sign(data)

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (for writing a key file)."""
        return self._private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())

    def __repr__(self) -> str:
        return f"SigningKey(cluster={self.cluster!r}, key_id={self.key_id!r})"


def public_pem(public: Ed25519PublicKey) -> bytes:
    """A public key as SubjectPublicKeyInfo PEM."""
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


class PublicKeys:
    """Cluster -> key id -> public key: whose signature counts for which cluster."""

    __slots__ = ("_by_cluster", "_owners")

    def __init__(self, keys: Mapping[str, Iterable[Ed25519PublicKey]] | None = None) -> None:
        self._by_cluster: dict[str, dict[str, Ed25519PublicKey]] = {}
        self._owners: dict[str, set[str]] = {}
        for cluster, ring in (keys or {}).items():
            for public in ring:
                self.add(cluster, public)

    def add(self, cluster: str, public: Ed25519PublicKey) -> str:
        """Accept ``public`` for ``cluster``; return its key id."""
        key_id = key_id_of(public)
        self._by_cluster.setdefault(cluster, {})[key_id] = public
        self._owners.setdefault(key_id, set()).add(cluster)
        return key_id

    def __bool__(self) -> bool:
        return bool(self._by_cluster)

    @property
    def clusters(self) -> tuple[str, ...]:
        """Clusters with at least one key."""
        return tuple(self._by_cluster)

    def ids(self, cluster: str) -> tuple[str, ...]:
        """The key ids accepted for ``cluster``."""
        return tuple(self._by_cluster.get(cluster, ()))

    def owners(self, key_id: str) -> tuple[str, ...]:
        """The clusters ``key_id`` is accepted for (more than one is a distribution error)."""
        return tuple(sorted(self._owners.get(key_id, ())))

    def verify(self, cluster: str, key_id: str, signature: bytes, data: bytes) -> bool | None:
        """True: ``signature`` over ``data`` is by ``cluster``'s key ``key_id``.

        False: that key is ``cluster``'s but the signature does not verify; None: the key
        is not one of ``cluster``'s.
        """
        public = self._by_cluster.get(cluster, {}).get(key_id)
        if public is None:
            return None
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            public.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"PublicKeys({ {c: list(r) for c, r in self._by_cluster.items()}!r})"


# --- key files ---------------------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path} does not exist (expected {what})") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_private_key(path: Path, cluster: str) -> SigningKey:
    """Load ``cluster``'s private key from ``path`` (unencrypted PKCS#8 PEM, Ed25519)."""
    data = _read(path, "an Ed25519 private key, as written by `feddns keygen`")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(f"{path} is encrypted with a password; feddns reads an unencrypted"
                           " PKCS#8 key (keep it in a Secret readable by feddns only)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{path} is not a PEM private key (expected '-----BEGIN PRIVATE"
                           " KEY-----', as written by `feddns keygen`)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds another kind of key ({type(key).__name__}); the"
                           " bus signs with Ed25519 (`feddns keygen` writes one)")
    return SigningKey(cluster, key)


def read_public_key(path: Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key from ``path`` (SubjectPublicKeyInfo PEM)."""
    data = _read(path, "an Ed25519 public key, as written by `feddns keygen`")
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{path} holds a private key; give the public half (.pub) here and"
                           " keep the private key on its own cluster only")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{path} is not a PEM public key (expected '-----BEGIN PUBLIC"
                           " KEY-----', as written by `feddns keygen`)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} holds another kind of key ({type(key).__name__}); the"
                           " bus verifies Ed25519 signatures (`feddns keygen` writes one)")
    return key


def cluster_of_file(name: str) -> str | None:
    """The cluster a public key file's name gives (``<cluster>[_<label>].pub``), or None."""
    if not name.endswith(PUBLIC_SUFFIX):
        return None
    stem = name[: -len(PUBLIC_SUFFIX)]
    cluster, _, label = stem.partition("_")
    if not _CLUSTER.fullmatch(cluster) or len(cluster) > 127:
        return None
    if "_" in stem and not _LABEL.fullmatch(label):
        return None
    return cluster


def public_key_files(directory: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """The ``.pub`` files of ``directory`` with their clusters, and the problems found.

    Other files are ignored (a ConfigMap's ``..data`` links, a README); a ``.pub`` file
    whose name is no cluster id is a problem, not ignored: it was meant to count.
    """
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return [], [f"{directory} does not exist (expected a directory of <cluster>.pub"
                    " files)"]
    except NotADirectoryError:
        return [], [f"{directory} is not a directory (expected <cluster>.pub files in it)"]
    except OSError as exc:
        return [], [f"cannot read {directory}: {exc.strerror or exc}"]
    found: list[tuple[str, Path]] = []
    problems: list[str] = []
    for name in names:
        if name.startswith(".") or not name.endswith(PUBLIC_SUFFIX):
            continue
        cluster = cluster_of_file(name)
        if cluster is None:
            problems.append(f"{directory / name}: the name does not give a cluster (expected"
                            " <cluster>.pub or <cluster>_<label>.pub, the cluster as in"
                            " clusters[].name)")
            continue
        found.append((cluster, directory / name))
    return found, problems


def key_pair_paths(directory: Path, cluster: str, label: str | None) -> tuple[Path, Path]:
    """Where ``feddns keygen`` writes a pair: ``<cluster>[_<label>].key`` and ``.pub``."""
    if not _CLUSTER.fullmatch(cluster):
        raise KeyFileError(f"{cluster!r} is not a cluster id (one RFC 1123 label, or two"
                           " joined by '.')")
    if label is not None and not _LABEL.fullmatch(label):
        raise KeyFileError(f"label {label!r}: use 1-40 of A-Z a-z 0-9 . - (no '_')")
    stem = cluster if label is None else f"{cluster}_{label}"
    return directory / (stem + PRIVATE_SUFFIX), directory / (stem + PUBLIC_SUFFIX)


def write_key_pair(directory: Path, cluster: str, *,
                   label: str | None = None) -> tuple[Path, Path, str]:
    """Write a new key pair for ``cluster``; return (private path, public path, key id).

    The private key is created with mode 0600 and the public one 0644, both with
    ``O_EXCL``: an existing file is never overwritten (a lost private key is a key roll,
    an overwritten one an outage), and a half-written pair is removed.
    """
    private_path, public_path = key_pair_paths(directory, cluster, label)
    for path in (private_path, public_path):
        if path.exists():
            raise KeyFileError(f"{path} exists; refusing to overwrite a key (pick another"
                               " --label, or move it away first)")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create {directory}: {exc.strerror or exc}") from None
    key = SigningKey.generate(cluster)
    _write_new(private_path, key.private_pem(), 0o600)
    try:
        _write_new(public_path, public_pem(key.public), 0o644)
    except KeyFileError:
        private_path.unlink(missing_ok=True)
        raise
    return private_path, public_path, key.key_id


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, mode)  # whatever the umask says
        os.write(fd, data)
    finally:
        os.close(fd)
