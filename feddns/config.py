"""The configuration tree: one YAML file, validated by frozen pydantic models.

Why it exists: a botched config is one of the usual ways a DNS server takes a
fleet down, so the file is validated completely before anything starts (and
before a reload replaces a running config), unknown keys are errors rather
than silently ignored typos, and every problem is reported with its key path
(``clusters[1].region: field required``). Field docstrings are the
documentation: ``check-config`` and the docs generator print them.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from feddns.errors import ConfigError

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


def _check_dns_name(value: str) -> str:
    """Normalise a domain name to lowercase, absolute (trailing dot) form."""
    name = value.strip().lower()
    if not name.endswith("."):
        name += "."
    if name == ".":
        raise ValueError("the root cannot be served; give a domain such as clusterset.local")
    labels = name[:-1].split(".")
    for label in labels:
        if not label or len(label) > 63:
            raise ValueError(f"{value!r} is not a valid domain name (empty or >63-octet label)")
        if not re.fullmatch(r"[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?", label):
            raise ValueError(f"{value!r} is not a valid domain name (label {label!r})")
    if len(name) + 1 > 255:
        raise ValueError(f"{value!r} is longer than 255 octets on the wire")
    return name


def _check_label(value: str) -> str:
    if not _LABEL.fullmatch(value):
        raise ValueError(f"{value!r} is not an RFC 1123 label (lowercase a-z, 0-9, '-', 1-63)")
    return value


def _check_cluster_id(value: str) -> str:
    """A cluster id is one RFC 1123 label or two joined by a dot (KEP-1645/KEP-2149)."""
    parts = value.split(".")
    if len(parts) > 2 or len(value) > 127 or not all(_LABEL.fullmatch(p) for p in parts):
        raise ValueError(
            f"{value!r} is not a cluster id: one RFC 1123 label, or two joined by '.'"
            " (e.g. 'east-1' or 'east-1.prod')"
        )
    return value


def _check_host_port(value: str) -> str:
    parse_host_port(value)
    return value


def parse_host_port(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` or ``[V6]:PORT`` into an IP string and a port number."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([0-9.]+):(\d+)", value.strip())
    if not m:
        raise ValueError(f"{value!r} is not HOST:PORT (IPv6 as [ADDR]:PORT)")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"{value!r}: {host!r} is not an IP address") from exc
    if not 0 <= port <= 65535:
        raise ValueError(f"{value!r}: port must be 0-65535")
    return host, port


DnsName = Annotated[str, AfterValidator(_check_dns_name)]
Label = Annotated[str, AfterValidator(_check_label)]
ClusterId = Annotated[str, AfterValidator(_check_cluster_id)]
HostPort = Annotated[str, AfterValidator(_check_host_port)]
IpAddress = Annotated[str, AfterValidator(lambda v: str(ipaddress.ip_address(v)))]


class OriginConfig(_Model):
    """One served DNS zone (an *origin*)."""

    name: DnsName = "clusterset.local."
    """The zone apex, e.g. ``clusterset.local.`` (KEP-1645 requires this name)."""

    service_address: Literal["load-balancer", "cluster-ip"] = "load-balancer"
    """For services that are not headless, which address of each cluster's service is
    answered: ``load-balancer`` uses the load-balancer ingress IP when the service has
    one and its cluster IP otherwise; ``cluster-ip`` always uses the cluster IP."""


class NameServerConfig(_Model):
    """A name server published in the NS RRset at each origin apex."""

    name: DnsName
    """Its host name. When it lies inside an origin, give its addresses too."""

    addresses: list[IpAddress] = Field(default_factory=list)
    """Addresses answered for ``name`` when it lies inside a served origin."""


class SoaConfig(_Model):
    """The SOA record at each origin apex (RFC 1035 §3.3.13, RFC 2308)."""

    mname: DnsName | None = None
    """Primary name server; defaults to the first ``nameservers`` entry or ``ns.<origin>``."""

    rname: DnsName | None = None
    """Responsible mailbox in DNS form; defaults to ``hostmaster.<origin>``."""

    ttl: int = Field(default=30, ge=0, le=86400)
    """TTL of the SOA record itself."""

    refresh: int = Field(default=3600, ge=0)
    """SOA REFRESH (informational: feddns does not serve zone transfers)."""

    retry: int = Field(default=600, ge=0)
    """SOA RETRY (informational)."""

    expire: int = Field(default=86400, ge=0)
    """SOA EXPIRE (informational)."""

    minimum: int = Field(default=5, ge=0, le=86400)
    """Negative-caching TTL (RFC 2308 §4): NXDOMAIN and NODATA answers are cached for
    ``min(ttl, minimum)`` seconds. Short, so a newly exported service resolves quickly."""


class DnsConfig(_Model):
    """The DNS listener and answer shaping."""

    listen: list[HostPort] = Field(default_factory=lambda: ["0.0.0.0:53"], min_length=1)
    """Addresses to serve on, each over UDP and TCP, as ``HOST:PORT`` or ``[V6]:PORT``."""

    record_ttl: int = Field(default=5, ge=0, le=3600)
    """TTL of A, AAAA and SRV records (CoreDNS's kubernetes plugin also uses 5)."""

    version_ttl: int = Field(default=28800, ge=0)
    """TTL of the ``dns-version.<origin>`` TXT record (KEP-1645: 28800)."""

    udp_payload_size: int = Field(default=1232, ge=512, le=4096)
    """Largest UDP answer sent to an EDNS client (DNS Flag Day 2020: 1232). Clients
    without EDNS get at most 512 octets; larger answers are sent with TC=1."""

    max_records: int = Field(default=16, ge=1, le=1000)
    """Most address records in one answer; a headless service with more ready endpoints
    answers a subset (KEP-1645 allows it), the same subset for A and AAAA."""

    tcp_idle_timeout: float = Field(default=10.0, gt=0)
    """Seconds an idle TCP connection is kept open (RFC 7766 §6.2.3; Knot: 10 s)."""

    tcp_io_timeout: float = Field(default=2.0, gt=0)
    """Seconds allowed to receive the rest of one TCP message or to send one answer."""

    udp_receive_buffer: int = Field(default=4 * 1024 * 1024, ge=65536)
    """Requested UDP socket receive buffer in bytes. The kernel default (about 208 KiB)
    drops queries under load; the effective size is logged at start."""


class StaticSourceConfig(_Model):
    """Endpoints read from a YAML or JSON file (the demo, tests, or a fixed federation)."""

    type: Literal["static"] = "static"
    file: Path
    """The data file; relative paths are resolved against the config file's folder."""

    poll_interval: float = Field(default=2.0, ge=0)
    """Seconds between checks of the file for changes; 0 reads it once."""

    @field_validator("file")
    @classmethod
    def _resolve(cls, value: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        if base is not None and not value.is_absolute():
            return (Path(base) / value).resolve()
        return value


class KubernetesSourceConfig(_Model):
    """Services and EndpointSlices listed and watched from the cluster's API server."""

    type: Literal["kubernetes"] = "kubernetes"
    kubeconfig: Path | None = None
    """A kubeconfig file (relative to the config file's folder); re-read whenever it or
    the token file it names changes, and after every 401, so tokens rotate without a
    restart. Leave empty with ``in_cluster: true``."""

    context: str | None = None
    """The kubeconfig context to use; default: its current context."""

    in_cluster: bool = False
    """Use the pod's service-account credentials (for the cluster feddns runs in)."""

    namespaces: list[Label] = Field(default_factory=list)
    """Watch only these namespaces (one watch per namespace); empty: all namespaces."""

    exported_only: bool = False
    """Serve only services that have a ``ServiceExport`` (multicluster.x-k8s.io) of the
    same name and namespace, as KEP-1645 intends; off: every service is served."""

    read_timeout: float = Field(default=60.0, gt=0)
    """Client-side read timeout in seconds: a silent partition is detected within twice
    this (the idle stream times out, then so does the reconnection)."""

    watch_timeout: float = Field(default=300.0, gt=0)
    """Server-side watch duration in seconds (randomised up to twice this), after which
    the watch is renewed from its last resourceVersion."""

    connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds to establish a connection to the API server."""

    backoff_max: float = Field(default=30.0, gt=0)
    """Longest pause between retries after failures (0.8 s doubling, jittered)."""

    @field_validator("kubeconfig")
    @classmethod
    def _resolve(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        base = (info.context or {}).get("base_dir")
        if value is not None and base is not None and not value.is_absolute():
            return (Path(base) / value).resolve()
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> KubernetesSourceConfig:
        if self.in_cluster == (self.kubeconfig is not None):
            raise ValueError("give either 'kubeconfig' (with an optional 'context') or"
                             " 'in_cluster: true'")
        return self


SOURCE_TYPES = ("static", "kubernetes")


def _source_type(value: Any) -> str:
    """The ``type`` of a source section; absent means ``static`` (older configs)."""
    if isinstance(value, dict):
        return str(value.get("type", "static"))
    return str(getattr(value, "type", "static"))


SourceConfig = Annotated[
    Annotated[StaticSourceConfig, Tag("static")]
    | Annotated[KubernetesSourceConfig, Tag("kubernetes")],
    Discriminator(
        _source_type,
        custom_error_type="source_type",
        custom_error_message="must be one of: static, kubernetes",
    ),
]


class FreshnessConfig(_Model):
    """How long a lost cluster's last data keeps answering (RFC 8767, adapted)."""

    max_stale: float = Field(default=86400.0, gt=0)
    """Seconds a cluster's data is kept after its source was lost; then it expires and no
    longer answers (RFC 8767 suggests one to three days)."""


class ClusterConfig(_Model):
    """A member cluster: its identity, topology and where its data comes from."""

    name: ClusterId
    """Cluster id as it appears in DNS names (one label, or two joined by '.')."""

    region: Label
    """The cluster's region (``topology.kubernetes.io/region``)."""

    zones: list[Label] = Field(min_length=1)
    """The zones its nodes run in (``topology.kubernetes.io/zone``)."""

    source: SourceConfig
    """Where this cluster's services and endpoints come from."""


class Settings(_Model):
    """The whole feddns configuration file."""

    federation: Label = "federation"
    """The federation's name (used in logs, metrics and Federation-v1 style names)."""

    origins: list[OriginConfig] = Field(default_factory=lambda: [OriginConfig()], min_length=1)
    """The zones served; every origin answers for every service of the federation."""

    dns: DnsConfig = Field(default_factory=DnsConfig)
    soa: SoaConfig = Field(default_factory=SoaConfig)
    freshness: FreshnessConfig = Field(default_factory=FreshnessConfig)
    nameservers: list[NameServerConfig] = Field(default_factory=list)
    """The NS RRset at each apex; defaults to ``ns.<origin>`` with no addresses."""

    clusters: list[ClusterConfig] = Field(default_factory=list)
    """The member clusters."""

    # Validated per field, not on the whole model, so each problem carries its key path
    # (``clusters: ...``) instead of ``(top level): clusters: ...``.
    @field_validator("clusters")
    @classmethod
    def _unique_clusters(cls, clusters: list[ClusterConfig]) -> list[ClusterConfig]:
        seen: dict[str, int] = {}
        for i, cluster in enumerate(clusters):
            if cluster.name in seen:
                raise ValueError(
                    f"cluster name {cluster.name!r} is used twice"
                    f" (clusters[{seen[cluster.name]}] and clusters[{i}])"
                )
            seen[cluster.name] = i
        return clusters

    @field_validator("origins")
    @classmethod
    def _disjoint_origins(cls, origins: list[OriginConfig]) -> list[OriginConfig]:
        names = [o.name for o in origins]
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                if a == b or a.endswith("." + b) or b.endswith("." + a):
                    raise ValueError(f"{a!r} and {b!r} overlap")
        return origins


def format_location(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as ``clusters[1].region``."""
    out = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-after", "function-plain")) or part == "[key]":
            # "[key]": pydantic's marker for a bad mapping key; the key itself precedes it.
            continue
        elif previous == "source" and part in SOURCE_TYPES:
            # The tag of the source union is pydantic's bookkeeping, not a key in the file.
            previous = part
            continue
        else:
            out += ("." if out else "") + part
        previous = part
    return out or "(top level)"


def problems_from_validation(exc: ValidationError) -> list[str]:
    """Turn a pydantic error into ``key.path: expected ...`` lines."""
    problems = []
    for err in exc.errors(include_url=False):
        msg = err["msg"]
        msg = msg.removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "field required"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (not a feddns setting; check the spelling)"
        else:
            msg = msg[:1].lower() + msg[1:]
        loc = tuple(err["loc"])
        if err["type"] == "source_type":
            loc = (*loc, "type")
        problems.append(f"{format_location(loc)}: {msg}")
    return problems


def read_yaml(path: Path) -> Any:
    """Read a YAML (or JSON) file, raising :class:`ConfigError` with a position on error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read file: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text: {exc}"]) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}: "
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), [f"{where}invalid YAML: {problem}"]) from exc


def load_settings(path: Path | str) -> Settings:
    """Load and validate a config file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    data = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["(top level): expected a mapping of settings"])
    try:
        return Settings.model_validate(data, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(str(path), problems_from_validation(exc)) from exc
