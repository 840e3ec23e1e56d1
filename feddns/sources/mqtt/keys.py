"""The bus's HMAC key ring: every key listed verifies, one signs; secrets never printed.

Why it exists: keys roll (add the new key everywhere, sign with it, remove the
old), and a secret must never reach a log or a ``repr``. The ring is read from
the files or environment variables the config names, every problem reported at
once (``check-config`` runs the same check).
"""

from __future__ import annotations

import os

from feddns.config import BusConfig
from feddns.errors import ConfigError

MIN_SECRET_BYTES = 16


class KeyRing:
    """Key id -> secret; every key verifies, one signs. The secrets never appear in repr."""

    __slots__ = ("_secrets", "signing_id")

    def __init__(self, secrets: dict[str, bytes], *, signing_id: str) -> None:
        if signing_id not in secrets:
            raise ValueError(f"signing key {signing_id!r} is not in the key ring")
        for key_id, secret in secrets.items():
            if len(secret) < MIN_SECRET_BYTES:
                raise ValueError(f"key {key_id!r}: secret shorter than {MIN_SECRET_BYTES}"
                                 " bytes")
        self._secrets = dict(secrets)
        self.signing_id = signing_id

    @classmethod
    def from_config(cls, settings: BusConfig, *,
                    environ: dict[str, str] | None = None) -> KeyRing:
        """Read every key's secret from its file or environment variable."""
        env = os.environ if environ is None else environ
        secrets: dict[str, bytes] = {}
        problems: list[str] = []
        for i, key in enumerate(settings.keys):
            where = f"bus.keys[{i}] ({key.id})"
            secret: bytes | None = None
            if key.secret_file is not None:
                try:
                    secret = key.secret_file.read_bytes().strip()
                except OSError as exc:
                    problems.append(f"{where}: cannot read {key.secret_file}:"
                                    f" {exc.strerror or exc}")
            elif key.secret_env is not None:
                value = env.get(key.secret_env)
                if value is None:
                    problems.append(f"{where}: environment variable {key.secret_env} is not set")
                else:
                    secret = value.strip().encode()
            if secret is not None and len(secret) < MIN_SECRET_BYTES:
                problems.append(f"{where}: secret shorter than {MIN_SECRET_BYTES} bytes")
            elif secret is not None:
                secrets[key.id] = secret
        if problems:
            raise ConfigError("bus key ring", problems)
        return cls(secrets, signing_id=settings.signing_key or settings.keys[0].id)

    @property
    def ids(self) -> tuple[str, ...]:
        """The key ids accepted (not the secrets)."""
        return tuple(self._secrets)

    def secret(self, key_id: str) -> bytes | None:
        """The secret of ``key_id``, or None when it is not in the ring."""
        return self._secrets.get(key_id)

    def __repr__(self) -> str:
        return f"KeyRing(ids={list(self._secrets)!r}, signing_id={self.signing_id!r})"
