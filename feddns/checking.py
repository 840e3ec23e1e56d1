"""A config file and every file it names, checked together before anything starts.

``check-config``, ``serve`` and every reload run these checks.

Why it exists: a config that ``check-config`` rejects must never start (it used
to: a missing kubeconfig passed the schema, and ``serve`` then retried for ever
with a message that named no file), and a user fixing a file wants every problem
at once, not one per attempt. So the schema is validated, and, whatever it says,
each file the raw config names is checked on its own (a static data file loads
and holds data for its clusters; a kubeconfig parses and names a usable context
whose token, certificate and CA files exist; the bus's key, password and TLS
files exist and hold what they should; the observe token file holds a token):
schema problems and file problems are reported together, each
with its key path and the file. ``schema_only`` skips the files, for validating
a config away from the machine it will run on.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from feddns.config import (
    BusConfig,
    KubernetesSourceConfig,
    ObserveConfig,
    Settings,
    SourceConfig,
    StaticSourceConfig,
    problems_from_validation,
    read_config,
)
from feddns.errors import ConfigError
from feddns.sources.kubernetes.kubeconfig import in_cluster_problems, kubeconfig_problems
from feddns.sources.static import load_static

_SOURCE: TypeAdapter[Any] = TypeAdapter(SourceConfig)
MIN_TOKEN_LENGTH = 16
"""Shortest observe token accepted (a shorter file is refused here and never matches):
``openssl rand -hex 32`` makes a good one."""


def load_checked(path: Path | str, *, schema_only: bool = False) -> Settings:
    """Load ``path`` and check the files it names; raise :class:`ConfigError` with all of it."""
    path = Path(path)
    data = read_config(path)
    context = {"base_dir": path.resolve().parent}
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(data, context=context)
    except ValidationError as exc:
        problems += problems_from_validation(exc)
    if not schema_only:
        problems += file_problems(data, context)
    if problems or settings is None:
        raise ConfigError(str(path), problems)
    return settings


def file_problems(data: dict[str, Any], context: dict[str, Any]) -> list[str]:
    """Problems of the files a raw config names (parts that fail the schema are skipped)."""
    out: list[str] = []
    clusters = data.get("clusters")
    static: dict[Path, list[tuple[str, str]]] = {}
    for i, raw in enumerate(clusters if isinstance(clusters, list) else []):
        if not isinstance(raw, dict) or not isinstance(raw.get("source"), dict):
            continue
        where = f"clusters[{i}].source"
        try:
            source = _SOURCE.validate_python(raw["source"], context=context)
        except ValidationError:
            continue  # the schema check reports it
        if isinstance(source, StaticSourceConfig):
            static.setdefault(source.file, []).append((where, str(raw.get("name"))))
        elif isinstance(source, KubernetesSourceConfig):
            if source.in_cluster:
                out += [f"{where}.in_cluster: {p}" for p in in_cluster_problems()]
            elif source.kubeconfig is not None:
                out += [f"{where}.kubeconfig: {p}"
                        for p in kubeconfig_problems(source.kubeconfig, source.context)]
    for file, users in static.items():
        try:
            loaded = load_static(file)
        except ConfigError as exc:
            out += [f"{users[0][0]}.file: {file}: {p}" for p in exc.problems]
            continue
        out += [f"{where}.file: {file} has no data for cluster {name!r}"
                for where, name in users if name not in loaded]
    observe = data.get("observe")
    if isinstance(observe, dict) and isinstance(observe.get("token_file"), str):
        with contextlib.suppress(ValidationError):  # the schema check reports it
            token_file = ObserveConfig.model_validate(observe, context=context).token_file
            problem = token_problem(token_file) if token_file is not None else None
            if problem is not None:
                out.append(f"observe.token_file: {problem}")
    bus = data.get("bus")
    if isinstance(bus, dict):
        with contextlib.suppress(ValidationError):  # the schema check reports it
            out += bus_file_problems(BusConfig.model_validate(bus, context=context))
    return out


def bus_file_problems(bus: BusConfig) -> list[str]:
    """Key, password and TLS files of the bus that are missing or unusable.

    The keys are read exactly as the bus reads them: HMAC secrets, each private and
    public key file (Ed25519, PEM), the public keys directory, and whether one key is
    given for two clusters or an own private key is missing from its cluster's list.
    """
    # Loaded only with a bus: the package brings aiomqtt along.
    from feddns.sources.mqtt.sealing import BusKeys  # noqa: PLC0415

    out: list[str] = []
    try:
        BusKeys.from_config(bus)
    except ConfigError as exc:
        out += exc.problems
    if bus.password_file is not None and not bus.password_file.is_file():
        out.append(f"bus.password_file: {bus.password_file} does not exist")
    if bus.tls is not None:
        for key in ("ca_file", "cert_file", "key_file"):
            file = getattr(bus.tls, key)
            if file is not None and not file.is_file():
                out.append(f"bus.tls.{key}: {file} does not exist")
    return out


def token_problem(path: Path) -> str | None:
    """What is wrong with the observe token file (None: usable); ``observe.access`` agrees."""
    try:
        token = path.read_bytes().strip()
    except FileNotFoundError:
        return f"{path} does not exist (expected a bearer token, e.g. `openssl rand -hex 32`)"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if len(token) < MIN_TOKEN_LENGTH:
        return f"{path}: the token is shorter than {MIN_TOKEN_LENGTH} characters"
    if not token.isascii() or any(c in token for c in b" \t\r\n"):
        return f"{path}: the token must be one word of printable ASCII"
    return None
