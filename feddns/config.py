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
from feddns.model.services import normalise_hostname

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _resolve_relative(value: Path, info: ValidationInfo) -> Path:
    """Resolve a relative path against the config file's folder (when known)."""
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return (Path(base) / value).resolve()
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_relative)]
"""A file or folder named in the config: relative paths are resolved against the config
file's folder."""


def _cidr(value: str) -> str:
    """Normalise a CIDR block (host bits allowed and cleared)."""
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR block such as 10.1.0.0/16") from exc


Cidr = Annotated[str, AfterValidator(_cidr)]


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
HostName = Annotated[str, AfterValidator(normalise_hostname)]
"""A DNS host name from data (a load-balancer hostname, an ExternalName target)."""


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


class RrlConfig(_Model):
    """Response rate limiting over UDP (Knot ``mod-rrl`` semantics, simplified)."""

    responses_per_second: float = Field(gt=0)
    """UDP responses per second allowed to one client prefix (a token bucket refilled at
    this rate); TCP is never limited, so a limited client can always ask over TCP."""

    burst: int | None = Field(default=None, ge=1)
    """Responses a prefix may get at once before the rate applies (the bucket's size);
    default: ``responses_per_second`` (rounded up)."""

    slip: int = Field(default=2, ge=0, le=100)
    """Every ``slip``-th limited response is sent truncated (TC=1, question only) so that
    a real client behind a spoofed flood retries over TCP; the others are dropped.
    1: every limited response slips; 0: all are dropped."""

    ipv4_prefix: int = Field(default=24, ge=1, le=32)
    """IPv4 clients in the same network of this length share one bucket."""

    ipv6_prefix: int = Field(default=56, ge=1, le=128)
    """IPv6 clients in the same network of this length share one bucket."""


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

    tcp_handshake_timeout: float = Field(default=5.0, gt=0)
    """Seconds from accepting a TCP connection to its first complete query (Knot: 5 s);
    a connection that opens and sends nothing (slow-loris) is closed after
    ``min(tcp_idle_timeout, tcp_handshake_timeout)``."""

    max_tcp_clients: int = Field(default=1000, ge=1)
    """Most TCP connections open at once; a connection beyond it is accepted and closed
    at once (counted). Keep it well below the file descriptor limit (RFC 7766 §10)."""

    allow: list[Cidr] = Field(default_factory=list)
    """Source networks (CIDRs) whose queries are answered; any other source gets REFUSED
    over UDP and TCP (counted). Empty: every source is answered."""

    rrl: RrlConfig | None = None
    """Response rate limiting per client prefix over UDP; ``null`` (the default) turns it
    off. Off by default because clients seldom reach feddns directly: pods ask through
    NodeLocal DNSCache or CoreDNS, so one node (or one CoreDNS replica) speaks for many
    clients from one address, and a per-prefix limit must be sized for each deployment.
    Knot also ships RRL off."""


class StaticSourceConfig(_Model):
    """Endpoints read from a YAML or JSON file (the demo, tests, or a fixed federation)."""

    type: Literal["static"] = "static"
    file: ConfigPath
    """The data file; relative paths are resolved against the config file's folder."""

    poll_interval: float = Field(default=2.0, ge=0)
    """Seconds between checks of the file for changes; 0 reads it once."""


class KubernetesSourceConfig(_Model):
    """Services and EndpointSlices listed and watched from the cluster's API server."""

    type: Literal["kubernetes"] = "kubernetes"
    kubeconfig: ConfigPath | None = None
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
    """Client-side read timeout of list and watch requests, in seconds. It is not what
    detects a silent partition (the liveness probe is): it ends a watch stream that has
    been silent this long, which is then resumed from its last resourceVersion."""

    probe_interval: float = Field(default=2.0, ge=0)
    """Seconds between liveness probes of the API server (``GET /version``, answered from
    memory): a silent partition is detected within ``probe_interval + probe_timeout``
    (4 s by default) and the cluster's addresses leave answers ``selection.hold_down``
    later. Costs one small request per interval (30 a minute per replica by default).
    0 turns the probe off (then only ``read_timeout`` detects a silent partition)."""

    probe_timeout: float = Field(default=2.0, gt=0)
    """Seconds a liveness probe may take in all (connection, TLS and answer) before the
    API server counts as unreachable and every watch of the cluster is restarted."""

    watch_timeout: float = Field(default=300.0, gt=0)
    """Server-side watch duration in seconds (randomised up to twice this), after which
    the watch is renewed from its last resourceVersion."""

    connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds to establish a connection to the API server."""

    backoff_max: float = Field(default=30.0, gt=0)
    """Longest pause between retries after failures (0.8 s doubling, jittered)."""

    @model_validator(mode="after")
    def _one_credential(self) -> KubernetesSourceConfig:
        if self.in_cluster == (self.kubeconfig is not None):
            raise ValueError("give either 'kubeconfig' (with an optional 'context') or"
                             " 'in_cluster: true'")
        return self


class BusSourceConfig(_Model):
    """A peer cluster known only through the MQTT federation bus (its own feddns publishes it)."""

    type: Literal["bus"] = "bus"


SOURCE_TYPES = ("static", "kubernetes", "bus")


def _source_type(value: Any) -> str:
    """The ``type`` of a source section; absent means ``static`` (older configs)."""
    if isinstance(value, dict):
        return str(value.get("type", "static"))
    return str(getattr(value, "type", "static"))


SourceConfig = Annotated[
    Annotated[StaticSourceConfig, Tag("static")]
    | Annotated[KubernetesSourceConfig, Tag("kubernetes")]
    | Annotated[BusSourceConfig, Tag("bus")],
    Discriminator(
        _source_type,
        custom_error_type="source_type",
        custom_error_message="must be one of: static, kubernetes, bus",
    ),
]


class FreshnessConfig(_Model):
    """How long a lost cluster's last data keeps answering (RFC 8767, adapted)."""

    max_stale: float = Field(default=86400.0, gt=0)
    """Seconds a cluster's data is kept after its source was last known fresh (counted
    from the loss, never from the last data change); then it expires and no longer
    answers (RFC 8767 suggests one to three days). Warm start loads no data older."""

    sync_timeout: float = Field(default=15.0, ge=0)
    """The sync gate: seconds after start (or after a reload added it) that a cluster which
    has delivered no data yet keeps holding back negative answers. Until every cluster has
    synced (or was restored from the warm-start snapshot), a name not found answers
    SERVFAIL, since it may exist where feddns has not looked yet; after this, the rest of
    the federation answers NXDOMAIN normally, the instance is ready, and the cluster is
    reported *unsynced*. 15 s covers a healthy first sync with room to spare (200,000
    endpoints list in about 4 s; a 10,000-service cluster joins over the bus through
    mosquitto's default queue in about 10 s) and bounds what one member down at start
    costs everyone else: SERVFAIL for unknown names (musl's ``getaddrinfo`` fails a whole
    lookup on it) and an unready replica. 0 never waits."""


class SnapshotConfig(_Model):
    """Warm start: the registry saved to disk and loaded back as stale data at start."""

    path: ConfigPath | None = None
    """The snapshot file (relative to the config file's folder); empty: no warm start.
    Put it on storage that survives a restart (a volume, not the container layer)."""

    interval: float = Field(default=5.0, gt=0)
    """Seconds between saves (only when something changed)."""




class ClientNetworkConfig(_Model):
    """A CIDR whose clients are located in a cluster (and optionally a zone)."""

    cidr: Cidr
    zone: Label | None = None


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

    networks: list[ClientNetworkConfig] = Field(default_factory=list)
    """Client networks of this cluster (pod and node CIDRs): a query from an address
    inside one is placed in this cluster, and in ``zone`` when the entry names one."""

    service_cidrs: list[Cidr] = Field(default_factory=list)
    """The cluster's service (ClusterIP) ranges. Used for reverse zones only: with
    ``reverse.derive``, their PTRs are served (as are those of ``networks``)."""

    @model_validator(mode="after")
    def _network_zones_known(self) -> ClusterConfig:
        for i, net in enumerate(self.networks):
            if net.zone is not None and net.zone not in self.zones:
                raise ValueError(f"networks[{i}].zone {net.zone!r} is not one of this"
                                 f" cluster's zones {self.zones}")
        return self



def _check_topic_prefix(value: str) -> str:
    levels = value.split("/")
    if not value or value.startswith("$") or any(not lvl for lvl in levels) or any(
        c in value for c in "+#\0"
    ):
        raise ValueError(f"{value!r} is not a topic prefix: non-empty levels separated by '/',"
                         " no wildcards, not starting with '$'")
    return value



BUS_ALLOWED_CIDRS = ("0.0.0.0/0", "::/0")
"""Every unicast address: pod, cluster and internal load-balancer addresses are private,
but a LoadBalancer service's ingress address is often public, and refusing it would drop
ordinary services (the demo's ``checkout``). What must never be answered is in
``BUS_DENIED_CIDRS``; narrow this list to the ranges your clusters use (SECURITY.md)."""

BUS_DENIED_CIDRS = (
    # IPv4: "this network" (with 0.0.0.0), loopback, link-local (cloud metadata at
    # 169.254.169.254), multicast, reserved (with the broadcast address 255.255.255.255).
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
    # IPv6: unspecified, loopback and IPv4-compatible (::/96), IPv4-mapped and
    # IPv4-translated (they would smuggle any IPv4 address past the IPv4 rules), the
    # discard prefix, link-local, the deprecated site-local, multicast.
    "::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "100::/64", "fe80::/10", "fec0::/10",
    "ff00::/8",
)
"""Never answered for a peer, whatever ``allowed_cidrs`` and ``denied_cidrs`` say: no
service is ever reachable there, and a peer pointing clients at this host, its link or
the cloud metadata service is the attack the address policy exists for. IPv6 addresses
that embed an IPv4 address (NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo) are
refused when the embedded address is. The CoreDNS ``rebind`` plugin's list is the model."""


class BusKeyConfig(_Model):
    """One HMAC-SHA256 key of the bus key ring; the secret is never written in this file."""

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,32}$")
    """The key id sent with every message so receivers pick the matching secret."""

    secret_file: ConfigPath | None = None
    """A file holding the secret (at least 16 bytes; trailing whitespace is ignored), e.g.
    a mounted Kubernetes Secret; relative paths are resolved against the config's folder."""

    secret_env: str | None = None
    """The name of an environment variable holding the secret (instead of a file)."""

    @model_validator(mode="after")
    def _one_secret(self) -> BusKeyConfig:
        if (self.secret_file is None) == (self.secret_env is None):
            raise ValueError("give either 'secret_file' or 'secret_env'")
        return self


class BusPrivateKeyConfig(_Model):
    """An Ed25519 private key of this instance, for one cluster it publishes (``keygen``)."""

    cluster: ClusterId
    """The cluster it signs for: one this instance sources itself."""

    file: ConfigPath
    """The private key (PKCS#8 PEM, unencrypted), e.g. a mounted Kubernetes Secret readable
    by feddns only; relative paths are resolved against the config's folder."""


class BusPublicKeyConfig(_Model):
    """One cluster's Ed25519 public key: messages for that cluster signed by it are accepted."""

    cluster: ClusterId
    """The cluster whose messages this key may sign (and no other cluster's)."""

    file: ConfigPath
    """The public key (``-----BEGIN PUBLIC KEY-----``, the ``.pub`` of ``feddns keygen``);
    relative paths are resolved against the config's folder."""


class BusTlsConfig(_Model):
    """TLS towards the broker (mosquitto ``cafile``/``require_certificate``)."""

    ca_file: ConfigPath | None = None
    """CA bundle that signed the broker's certificate; default: the system store."""

    cert_file: ConfigPath | None = None
    """Client certificate, for brokers that require one (with ``key_file``)."""

    key_file: ConfigPath | None = None
    """The client certificate's private key."""

    @model_validator(mode="after")
    def _pair(self) -> BusTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give 'cert_file' and 'key_file' together")
        return self


def _check_broker_host(value: str) -> str:
    """A host name or IP address alone: no scheme, no port, no brackets."""
    host = value.strip()
    if "://" in host:
        raise ValueError(f"{value!r}: give the host name alone, without a scheme"
                         " (TLS is the 'tls' section)")
    if host.startswith("["):
        raise ValueError(f"{value!r}: give an IPv6 address without brackets (the port has"
                         " its own key)")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{value!r}: give the port with the 'port' key, not in the host"
                             " name") from None
    elif not re.fullmatch(r"[A-Za-z0-9._-]+", host):
        raise ValueError(f"{value!r} is not a host name or IP address")
    return host


BrokerHost = Annotated[str, AfterValidator(_check_broker_host)]


class BusBrokerConfig(_Model):
    """One MQTT broker of ``bus.brokers``."""

    host: BrokerHost
    """The broker's host name or IP address (no scheme, no port)."""

    port: int = Field(default=1883, ge=1, le=65535)
    """The broker's port (usually 8883 with ``tls``)."""

    @property
    def label(self) -> str:
        """``host:port`` (``[v6]:port``), as logs, ``/debug`` and metrics name it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class BusConfig(_Model):
    """The MQTT federation bus: own clusters go out, the other members' come in.

    Every message is signed and validated; peers' data ages (fresh -> stale), never
    vanishes, when the bus or a peer is lost.
    """

    broker: BrokerHost | None = None
    """The broker's host name or IP address, with one broker (else give ``brokers``)."""

    port: int = Field(default=1883, ge=1, le=65535)
    """The port of ``broker`` (usually 8883 with ``tls``)."""

    brokers: list[BusBrokerConfig] | None = Field(default=None, min_length=1)
    """Several brokers that share the bus's topics (bridged, or one cluster), instead
    of ``broker``: ``[{host: mqtt-a, port: 8883}, {host: mqtt-b}]``. They are tried in
    this order; on losing the one in use the next is tried at once, and only after a
    whole round of failures does the bus pause (``backoff_max``). The bus stays on
    the broker it has until that one is lost. ``tls``, ``username`` and the password
    apply to every broker."""

    topic_prefix: str = "feddns"
    """First topic levels; topics are ``<prefix>/<federation>/clusters/<cluster>/...``."""

    username: str | None = None
    """User name for the broker (mosquitto ``password_file``)."""

    password_file: ConfigPath | None = None
    """A file holding the broker password (read at every connection attempt)."""

    password_env: str | None = None
    """An environment variable holding the broker password (instead of a file)."""

    tls: BusTlsConfig | None = None
    """TLS settings; absent: plain TCP (only for a broker on a trusted network)."""

    keys: list[BusKeyConfig] = Field(default_factory=list)
    """The shared HMAC key ring, for small setups: every member can speak for every other
    (whoever holds the secret can sign any cluster's data). Every key listed is accepted,
    so a new key is added everywhere first, then used for signing, then the old one removed.
    Empty: HMAC is off and only ``private_keys``/``public_keys`` signatures are accepted."""

    signing_key: str | None = None
    """The id of the HMAC key this instance signs with; default: the first key."""

    private_keys: list[BusPrivateKeyConfig] = Field(default_factory=list)
    """Per-cluster signatures (Ed25519): this instance's private key for each cluster it
    publishes (all of them, or none to sign with ``keys``). Its public half is accepted
    for that cluster here too. Peers accept the messages only with the public key."""

    public_keys: list[BusPublicKeyConfig] = Field(default_factory=list)
    """Public keys of the clusters this instance accepts, each for one cluster: a message
    for cluster X is accepted only when signed by one of X's keys (two while X rolls)."""

    public_keys_dir: ConfigPath | None = None
    """A directory of public keys (a mounted ConfigMap), named ``<cluster>.pub`` or
    ``<cluster>_<label>.pub``; read at start and at every reload (SIGHUP). Adds to
    ``public_keys``."""

    keepalive: int = Field(default=30, ge=5, le=3600)
    """MQTT keepalive in seconds: the broker fires the last will ("offline") after about
    1.5 times this without traffic from a vanished instance, and a broker host that
    vanishes without closing the connection (power, partition) is noticed here after
    one to two times this (a PINGREQ without answer), then the next broker is tried."""

    heartbeat_interval: float = Field(default=30.0, gt=0)
    """Seconds between "online" heartbeats for each own cluster."""

    peer_timeout: float = Field(default=90.0, gt=0)
    """A peer not heard from for this many seconds (by local monotonic time) turns
    stale, not absent. At least twice ``heartbeat_interval``, and well above the time a
    full republish takes to reach the peers (a heartbeat queues behind it: 4-6 s for
    10,000 services, ``bench/RESULTS.md``), or every republish turns it stale."""

    republish_interval: float = Field(default=300.0, gt=0)
    """Seconds between full republications of own state, which restore retained messages
    a broker lost (mosquitto keeps none across a restart without persistence)."""

    replay_window: float = Field(default=300.0, gt=0)
    """Accepted difference, in seconds, between a message's signed timestamp and the local
    wall clock (TSIG's fudge, RFC 8945); retained messages may also be up to
    ``republish_interval`` older. Older generations are always rejected."""

    max_payload_size: int = Field(default=256 * 1024, ge=4096, le=256 * 1024 * 1024)
    """Largest accepted message in bytes; keep it below the broker's ``max_packet_size``."""

    allowed_cidrs: list[Cidr] = Field(default_factory=lambda: list(BUS_ALLOWED_CIDRS))
    """Addresses a peer may publish (endpoints, cluster and load-balancer IPs); a service
    with any other address is rejected (that service only; the last accepted version
    stays). Default: every unicast address; loopback, link-local (cloud metadata),
    multicast, unspecified and reserved ranges are refused whatever this says
    (SECURITY.md). Narrow it to the ranges your clusters use."""

    denied_cidrs: list[Cidr] = Field(default_factory=list)
    """More ranges never accepted from a peer, even inside ``allowed_cidrs``, on top of
    the built-in ones that are always refused (see ``allowed_cidrs`` and SECURITY.md)."""

    accept_unknown_clusters: bool = False
    """Also serve peers' clusters that are not in ``clusters`` (off: they are rejected and
    counted, so a typo or a foreign federation cannot add names)."""

    max_queued_messages: int = Field(default=65536, ge=16)
    """Bound of the incoming and outgoing message queues (aiomqtt's are unbounded by
    default); overflow is counted and repaired by resubscribing."""

    connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds to wait for the broker's CONNACK and for each acknowledgement."""

    backoff_max: float = Field(default=30.0, gt=0)
    """Longest pause between rounds of connection attempts (0.8 s doubling, jittered);
    within a round every broker is tried once, without a pause."""

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _check_topic_prefix(value)

    @field_validator("private_keys")
    @classmethod
    def _one_private_key_per_cluster(cls, keys: list[BusPrivateKeyConfig]
                                     ) -> list[BusPrivateKeyConfig]:
        clusters = [k.cluster for k in keys]
        for i, cluster in enumerate(clusters):
            if cluster in clusters[:i]:
                raise ValueError(f"two private keys for cluster {cluster!r}"
                                 f" ([{clusters.index(cluster)}] and [{i}]): an instance signs"
                                 " with one key per cluster (roll it by switching the file)")
        return keys

    @field_validator("brokers", mode="before")
    @classmethod
    def _broker_mappings(cls, value: Any) -> Any:
        for i, entry in enumerate(value if isinstance(value, list) else ()):
            if isinstance(entry, str):
                host, _, port = entry.rpartition(":") if ":" in entry else (entry, "", "")
                hint = f"{{host: {host}, port: {port}}}" if port else f"{{host: {entry}}}"
                raise ValueError(f"[{i}] is {entry!r}: give each broker as a mapping, such as"
                                 f" {hint}")
        return value

    @field_validator("brokers")
    @classmethod
    def _unique_brokers(cls, brokers: list[BusBrokerConfig] | None
                        ) -> list[BusBrokerConfig] | None:
        labels = [b.label for b in brokers or ()]
        for i, label in enumerate(labels):
            if label in labels[:i]:
                raise ValueError(f"the same broker twice: [{labels.index(label)}] and [{i}]"
                                 f" ({label})")
        return brokers

    @property
    def all_brokers(self) -> tuple[BusBrokerConfig, ...]:
        """Every broker in the order they are tried (``broker`` and ``port``: just one)."""
        if self.brokers:
            return tuple(self.brokers)
        assert self.broker is not None  # the validator requires one of the two
        return (BusBrokerConfig(host=self.broker, port=self.port),)

    @field_validator("keys")
    @classmethod
    def _unique_keys(cls, keys: list[BusKeyConfig]) -> list[BusKeyConfig]:
        ids = [k.id for k in keys]
        for key_id in ids:
            if ids.count(key_id) > 1:
                raise ValueError(f"key id {key_id!r} is used twice")
        return keys

    @model_validator(mode="after")
    def _consistent(self) -> BusConfig:
        if self.broker is not None and self.brokers is not None:
            raise ValueError("give either 'broker' (one broker, with 'port') or 'brokers' (a"
                             " list of {host, port}), not both")
        if self.broker is None and self.brokers is None:
            raise ValueError("no broker: give 'broker' (one host, with 'port') or 'brokers'"
                             " (a list of {host, port}, tried in order)")
        if self.brokers is not None and "port" in self.model_fields_set:
            raise ValueError("'port' goes with 'broker'; with 'brokers', give each entry its"
                             " own 'port'")
        if self.signing_key is not None and self.signing_key not in {k.id for k in self.keys}:
            raise ValueError(f"signing_key {self.signing_key!r} is not one of 'keys'")
        if not (self.keys or self.private_keys or self.public_keys
                or self.public_keys_dir is not None):
            raise ValueError("no keys: give 'private_keys' with 'public_keys' or"
                             " 'public_keys_dir' (Ed25519, one key pair per cluster: `feddns"
                             " keygen`), or 'keys' (one shared HMAC secret: every member can"
                             " speak for every other)")
        if self.peer_timeout < 2 * self.heartbeat_interval:
            raise ValueError("peer_timeout must be at least twice heartbeat_interval")
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give either 'password_file' or 'password_env'")
        return self


class LocalityConfig(_Model):
    """How a query's origin is located (see README, "How feddns chooses an answer")."""

    local_cluster: ClusterId | None = None
    """The cluster this instance runs in: clients no network places are taken to be
    there (zone unknown). Empty: such clients get the federation-wide answer."""

    trusted_forwarders: list[Cidr] = Field(default_factory=list)
    """Resolvers whose EDNS Client Subnet option is believed (RFC 7871); ECS from any
    other source is ignored, so clients cannot pick their own answers."""


class IsolationConfig(_Model):
    """Self-isolation is not failover.

    When most clusters are lost at once, feddns suspects its own connectivity and keeps
    answering as before (signalled stale) instead of failing over in the order the losses
    were noticed (see README, "Failures").
    """

    window: float = Field(default=5.0, ge=0)
    """Losses at most this many seconds apart count as one disruption. 5 s is more than a
    simultaneous loss spreads over (liveness probes notice within ``probe_interval +
    probe_timeout``, 4 s) and more than ``hold_down``, so no answer narrows meanwhile."""

    fraction: float = Field(default=0.5, ge=0, le=1)
    """A disruption is suspected to be this instance's own when more than this fraction of
    the clusters that counted as fresh just before it (and at least two) are lost within
    ``window``. 1 turns the rule off."""

    max_hold: float = Field(default=120.0, ge=0)
    """Seconds after which a suspected self-isolation ends anyway and ordinary failover
    resumes (if some clusters stayed fresh meanwhile, the losses are taken to be real; if
    none did, every cluster is stale and answered alike anyway)."""


class SelectionConfig(_Model):
    """Health, damping and fallbacks of answer selection."""

    hold_down: float = Field(default=3.0, ge=0)
    """Seconds a lost cluster keeps counting as fresh before its addresses leave the
    answers (absorbs watch blips; failover takes about this long)."""

    readmit_after: float = Field(default=10.0, ge=0)
    """Seconds a recovered cluster must stay fresh before it counts as fresh again."""

    none_healthy: Literal["fail-closed", "fail-open", "servfail"] = "fail-closed"
    """What a name answers when no candidate is healthy, fresh or stale: NODATA
    (``fail-closed``, default: kube-proxy would refuse such a service anyway), the last
    known addresses (``fail-open``), or SERVFAIL."""

    isolation: IsolationConfig = Field(default_factory=IsolationConfig)
    """When a disruption looks like this instance's own isolation (see its keys)."""

    stale_ttl: int = Field(default=30, ge=1, le=3600)
    """TTL of answers built from stale data (RFC 8767 recommends 30 s); they also carry
    Extended DNS Error 3, Stale Answer (RFC 8914), for EDNS clients."""

    answer_mode: Literal["ordered", "subset"] = "ordered"
    """How an answer with several records follows the weights. ``ordered`` (default):
    every record, rotated from query to query so that the first follows the weights; a
    client that tries the records in turn fails over without asking again, and clients
    asking feddns directly follow the weights. ``subset``: each answer holds only
    ``subset_size`` records, picked by the weights, so that the caches in front of
    feddns (which keep a whole RRset for its TTL and reshuffle it) still follow the
    weights together; a client of a cache then has no other address until the TTL runs
    out. Per service: ``services[].answer_mode``."""

    subset_size: int = Field(default=1, ge=1, le=64)
    """Records per answer in the ``subset`` answer mode (at most ``dns.max_records``)."""

    capacity_aware: bool = False
    """Capacity-aware locality: keep clients in their tier only while it has the ready
    endpoints for them, and send the rest to the next tier in proportion to its capacity
    (demand: this instance's queries per client place; capacity: ready endpoints). Off
    by default: it sends clients across zones and regions while their own is healthy,
    which costs latency and traffic, and feddns sees its clients' demand only through
    their resolvers' caches. Per service: ``services[].capacity_aware``, the annotation
    ``feddns.io/capacity-aware`` or ``service.kubernetes.io/topology-mode: Auto``; a
    Service with ``trafficDistribution: PreferClose`` (or ``PreferSameZone``) keeps the
    nearest tier."""

    capacity_overload: float = Field(default=0.1, ge=0, le=10)
    """How much more demand per ready endpoint than the federation as a whole a tier may
    keep before the rest spills (0.1: 10 % more)."""

    demand_window: float = Field(default=60.0, gt=0)
    """Seconds of queries the demand of capacity-aware locality is measured over (an
    average with this half-life, updated every sixth of it)."""


class HostnamesConfig(_Model):
    """How load-balancer ingress hostnames are resolved (by feddns itself).

    EKS style: ``status.loadBalancer.ingress[].hostname``; their addresses are answered
    like ingress IPs (see README, "Load-balancer hostnames").
    """

    nameservers: list[HostPort] = Field(default_factory=list)
    """DNS servers to ask, as ``HOST:PORT``; empty: the system's (``/etc/resolv.conf``)."""

    min_ttl: int = Field(default=5, ge=1, le=86400)
    """The shortest time, in seconds, a resolution is kept (a TTL of 0 would ask again for
    every compile); answers with a shorter TTL count as this long."""

    max_ttl: int = Field(default=300, ge=1, le=86400)
    """The longest time, in seconds, a resolution is kept before it is refreshed, whatever
    its TTL: a load balancer's addresses change, and their TTLs are often long."""

    max_stale: float = Field(default=900.0, ge=0)
    """Seconds the last good addresses keep answering after their TTL ran out while every
    refresh fails (timeouts, SERVFAIL, NXDOMAIN); then the hostname answers nothing until
    it resolves again. Shown in ``/debug`` meanwhile."""

    timeout: float = Field(default=2.0, gt=0)
    """Seconds one resolution (A and AAAA) may take before it counts as failed."""

    @model_validator(mode="after")
    def _ordered(self) -> HostnamesConfig:
        if self.min_ttl > self.max_ttl:
            raise ValueError("min_ttl is larger than max_ttl")
        return self


class ReverseConfig(_Model):
    """Reverse zones: PTR records for every address feddns answers (README, "Names served")."""

    zones: list[Cidr] = Field(default_factory=list)
    """Networks whose reverse zones are served (``10.96.0.0/12``: the sixteen zones
    ``96.10.in-addr.arpa.`` to ``111.10.in-addr.arpa.``); a network is rounded in to whole
    octets (IPv4) or nibbles (IPv6), so no zone claims an address outside it."""

    derive: bool = False
    """Also serve the reverse zones of every cluster's ``networks`` (pod and node
    addresses: headless endpoints) and ``service_cidrs`` (cluster IPs). Off by default:
    a PTR per headless endpoint costs memory and compile time (about a tenth more at
    a million endpoints), and only resolvers told to forward these zones ask. Names
    outside every reverse zone are REFUSED, as any name outside the origins."""


class ServicePolicyConfig(_Model):
    """Policy for one service (``name`` given) or every service of a namespace."""

    namespace: Label
    name: Label | None = None
    weights: dict[ClusterId, Annotated[float, Field(ge=0)]] | None = None
    """Relative weight per cluster (clusters not listed: weight 0, drained); moves traffic
    between clusters step by step. Default: each cluster's ready-endpoint count."""
    regions: list[Label] | None = None
    """Residency: only addresses in these regions are ever answered, even on failover."""
    none_healthy: Literal["fail-closed", "fail-open", "servfail"] | None = None
    """Overrides ``selection.none_healthy`` for this service."""
    shares: dict[ClusterId, Annotated[float, Field(ge=0, le=100)]] | None = None
    """Percent of every client's answers led by a cluster, whatever its tier for the
    client ("10 % of every client's answers from west.prod": ``{west.prod: 10}``); the
    rest follow locality and weights. The way to move part of a region's traffic."""
    answer_mode: Literal["ordered", "subset"] | None = None
    """Overrides ``selection.answer_mode`` for this service."""
    capacity_aware: bool | None = None
    """Overrides ``selection.capacity_aware`` for this service."""

    @field_validator("shares")
    @classmethod
    def _shares_fit(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and sum(value.values()) > 100:
            raise ValueError("shares add up to more than 100 percent")
        return value


class NamesConfig(_Model):
    """Names served beyond the KEP-1645 set."""

    federation_v1: bool = False
    """Serve Federation v1 style locality names ``<svc>.<ns>.<federation>.svc.<zone>.
    <region>.<origin>`` and ``<svc>.<ns>.<federation>.svc.<region>.<origin>``, each a
    CNAME to the wider name when it has nothing healthy, up to the global
    ``<svc>.<ns>.<federation>.svc.<origin>``."""

    cluster_pinned: bool = False
    """Serve ``<cluster>.<svc>.<ns>.svc.<origin>`` with that cluster's addresses only
    (KEP-1645 reserves this name, so it is off by default)."""

    explain: bool = True
    """Serve ``_explain.<svc>.<ns>.svc.<origin>`` TXT: per cluster, its freshness,
    health, tier for the asking client and why it was or was not chosen."""

    explain_allow: list[Cidr] = Field(default_factory=list)
    """Source networks (CIDRs) that may ask ``_explain`` names; any other source gets
    REFUSED for them (counted with ``dns.allow``'s refusals). Behind CoreDNS or NodeLocal
    DNSCache the source is the forwarder (list the nodes' or the operators' networks).
    Empty: every client that may query (SECURITY.md says why that is the default)."""


class ObserveConfig(_Model):
    """Metrics, health and debug endpoints, and logging (see docs/operations.md)."""

    listen: HostPort | None = "127.0.0.1:9154"
    """HTTP address of ``/metrics`` (Prometheus), ``/healthz``, ``/readyz`` and ``/debug``;
    ``null`` turns the endpoint off. Port 9153 is left to CoreDNS, often the neighbour.
    Changing it takes a restart."""

    log_format: Literal["text", "json"] = "text"
    """Log lines as plain text, or as one JSON object per line (for log collectors)."""

    query_log: bool = False
    """Log every query (client, name, type, rcode): for debugging only, it costs
    throughput. Off: nothing is logged per query."""

    token_file: ConfigPath | None = None
    """A file holding the bearer token (``openssl rand -hex 32``; at least 16 characters)
    that ``/metrics``, ``/debug`` and ``/`` require (``Authorization: Bearer <token>``);
    re-read when the file changes. ``/healthz`` and ``/readyz`` never need it. Unset: those
    pages are open on a loopback ``listen`` and closed (401) on any other address."""


class Settings(_Model):
    """The whole feddns configuration file."""

    federation: Label = "federation"
    """The federation's name (used in logs, metrics and Federation-v1 style names)."""

    origins: list[OriginConfig] = Field(default_factory=lambda: [OriginConfig()], min_length=1)
    """The zones served; every origin answers for every service of the federation."""

    dns: DnsConfig = Field(default_factory=DnsConfig)
    soa: SoaConfig = Field(default_factory=SoaConfig)
    freshness: FreshnessConfig = Field(default_factory=FreshnessConfig)
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    services: list[ServicePolicyConfig] = Field(default_factory=list)
    """Per-service (or per-namespace) policy: each key it sets overrides the same key of a
    namespace entry and of the Service's annotations."""
    names: NamesConfig = Field(default_factory=NamesConfig)
    hostnames: HostnamesConfig = Field(default_factory=HostnamesConfig)
    reverse: ReverseConfig = Field(default_factory=ReverseConfig)
    nameservers: list[NameServerConfig] = Field(default_factory=list)
    """The NS RRset at each apex; defaults to ``ns.<origin>`` with no addresses."""

    clusters: list[ClusterConfig] = Field(default_factory=list)
    """The member clusters."""

    locality: LocalityConfig = Field(default_factory=LocalityConfig)
    """Where queries come from (after ``clusters``, whose names it refers to)."""

    bus: BusConfig | None = Field(default=None, validate_default=True)
    """The MQTT federation bus (absent: this instance neither publishes nor receives)."""

    observe: ObserveConfig = Field(default_factory=ObserveConfig)

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

    @field_validator("bus")
    @classmethod
    def _bus_when_needed(cls, bus: BusConfig | None, info: ValidationInfo) -> BusConfig | None:
        clusters = info.data.get("clusters") or []
        needing = [i for i, c in enumerate(clusters) if isinstance(c.source, BusSourceConfig)]
        if needing and bus is None:
            raise ValueError(f"clusters[{needing[0]}] has source type 'bus': configure the"
                             " bus section (broker, keys)")
        if bus is not None:
            _check_bus_signers(bus, clusters)
        return bus

    @field_validator("locality")
    @classmethod
    def _local_cluster_known(cls, locality: LocalityConfig,
                             info: ValidationInfo) -> LocalityConfig:
        names = {c.name for c in info.data.get("clusters") or []}
        if locality.local_cluster is not None and locality.local_cluster not in names:
            raise ValueError(f"local_cluster {locality.local_cluster!r} is not one of the"
                             " configured clusters")
        return locality


def _check_bus_signers(bus: BusConfig, clusters: list[ClusterConfig]) -> None:
    """Every cluster this instance publishes is signed, and the same way (issue #17)."""
    own = [c.name for c in clusters if not isinstance(c.source, BusSourceConfig)]
    signed = [k.cluster for k in bus.private_keys]
    for i, cluster in enumerate(signed):
        if cluster not in own:
            what = ("has source type 'bus' (another instance publishes it)"
                    if cluster in {c.name for c in clusters} else "is not in clusters")
            raise ValueError(f"private_keys[{i}].cluster {cluster!r} {what}: an instance holds"
                             " private keys only for the clusters it sources itself")
    missing = [c for c in own if c not in signed]
    if signed and missing:
        raise ValueError(f"private_keys has no key for {', '.join(missing)}, which this instance"
                         " publishes too: give a key for every cluster it sources (its last"
                         " will speaks for all of them), or none to sign with 'keys' (HMAC)")
    if own and not signed and not bus.keys:
        raise ValueError(f"nothing to sign with: this instance publishes {', '.join(own)};"
                         " give private_keys (one per cluster it sources, `feddns keygen`) or"
                         " keys (HMAC)")


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


def read_yaml(path: Path, content: bytes | None = None) -> Any:
    """Read a YAML (or JSON) file, raising :class:`ConfigError` with a position on error.

    ``content``: the file's bytes, already read.
    """
    try:
        text = path.read_text(encoding="utf-8") if content is None else content.decode()
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


def read_config(path: Path) -> dict[str, Any]:
    """A config file's raw mapping (an empty file is an empty one).

    Raises :class:`ConfigError` when it is not YAML or not a mapping.
    """
    data = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["(top level): expected a mapping of settings"])
    return data


def load_settings(path: Path | str) -> Settings:
    """Load and validate a config file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    data = read_config(path)
    try:
        return Settings.model_validate(data, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(str(path), problems_from_validation(exc)) from exc
