"""The static source: clusters, services and endpoints read from a YAML/JSON file.

Why it exists: the embedded demo, the tests and the benchmarks need a
federation without any Kubernetes cluster, and a small fixed federation can
be run this way in production too. The file is validated like the config
(every problem with its key path) and converted at the door into the same
model objects the Kubernetes and MQTT sources produce. The file is polled
for changes; a change replaces each cluster's snapshot atomically, and a
broken edit keeps the last good data (logged once), never empties answers.

Polling must cost the serving event loop nothing: each poll is one ``stat``
in a worker thread, and only a file whose stat changed is read, hashed and
(when its bytes changed) parsed, all in that thread. A file modified shortly
before it was read may change again within the same timestamp tick, so until
it has been read ``RACY_SECONDS`` after its modification time it is read again
on every poll (git's "racily clean" rule). Measured before this rule: a 10,000
service data file read and SHA-256-hashed on the loop every two seconds.

File shape::

    clusters:
      east-1:
        services:
          - namespace: shop
            name: web
            type: ClusterIP          # ClusterIP | LoadBalancer | Headless | ExternalName
            cluster_ips: [10.96.0.10]
            load_balancer_ips: []
            load_balancer_hostnames: []   # LoadBalancer ingress hostnames (resolved by feddns)
            external_name: null      # ExternalName only: the CNAME target
            traffic_distribution: null    # spec.trafficDistribution (PreferClose, ...)
            ports: [{name: http, port: 80, protocol: TCP}]
            endpoints:
              - {address: 10.1.0.5, zone: us-east-1a, hostname: web-0,
                 ready: true, serving: true, terminating: false}
            policy: {weights: {}, shares: {}, answer_mode: null, capacity_aware: null}
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from feddns.config import (
    ClusterId,
    HostName,
    IpAddress,
    Label,
    problems_from_validation,
    read_yaml,
)
from feddns.errors import ConfigError
from feddns.model.registry import Registry
from feddns.model.services import (
    ClusterSnapshot,
    Endpoint,
    Port,
    Protocol,
    Service,
    ServicePolicy,
    ServiceType,
    dedupe_endpoints,
)

log = logging.getLogger(__name__)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EndpointData(_Model):
    """One endpoint; conditions follow EndpointSlice v1 (absent ready/serving = true)."""

    address: IpAddress | None = None
    addresses: list[IpAddress] = Field(default_factory=list)
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None
    hostname: Label | None = None
    zone: str | None = None
    node: str | None = None
    target: str | None = None

    @model_validator(mode="after")
    def _one_address(self) -> EndpointData:
        if self.address is None and not self.addresses:
            raise ValueError("give 'address' or 'addresses'")
        return self


class PortData(_Model):
    """A service port; ``name`` empty for an unnamed port."""

    name: str = Field(default="", pattern=r"^$|^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$")
    port: int = Field(ge=1, le=65535)
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"


class PolicyData(_Model):
    """Per-service DNS policy (the static counterpart of ``feddns.io/*`` annotations)."""

    weights: dict[ClusterId, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    regions: list[Label] | None = None
    none_healthy: Literal["fail-closed", "fail-open", "servfail"] | None = None
    shares: dict[ClusterId, Annotated[float, Field(ge=0, le=100)]] = Field(default_factory=dict)
    answer_mode: Literal["ordered", "subset"] | None = None
    capacity_aware: bool | None = None

    @field_validator("shares")
    @classmethod
    def _at_most_everything(cls, value: dict[str, float]) -> dict[str, float]:
        if sum(value.values()) > 100:
            raise ValueError("shares add up to more than 100 percent")
        return value


class ServiceData(_Model):
    """One cluster's view of a service."""

    namespace: Label
    name: Label
    type: Literal["ClusterIP", "LoadBalancer", "Headless", "ExternalName"] = "ClusterIP"
    # validate_default: a missing cluster_ips is checked too. The checks are field
    # validators so each problem names its key (``services[0].cluster_ips``); ``type``
    # is declared first, so it is already in ``info.data`` when they run.
    cluster_ips: list[IpAddress] = Field(default_factory=list, validate_default=True)
    load_balancer_ips: list[IpAddress] = Field(default_factory=list)
    load_balancer_hostnames: list[HostName] = Field(default_factory=list)
    external_name: HostName | None = None
    traffic_distribution: str | None = Field(default=None, max_length=63)
    ports: list[PortData] = Field(default_factory=list)
    endpoints: list[EndpointData] = Field(default_factory=list)
    policy: PolicyData | None = None

    @field_validator("cluster_ips")
    @classmethod
    def _cluster_ips_fit_type(cls, value: list[str], info: ValidationInfo) -> list[str]:
        kind = info.data.get("type")
        if kind in ("Headless", "ExternalName") and value:
            raise ValueError(f"{_article(kind)} {kind} service has no cluster_ips")
        if kind in ("ClusterIP", "LoadBalancer") and not value:
            raise ValueError(f"a {kind} service needs cluster_ips")
        return value

    @field_validator("load_balancer_ips", "load_balancer_hostnames")
    @classmethod
    def _lb_ingress_fits_type(cls, value: list[str], info: ValidationInfo) -> list[str]:
        kind = info.data.get("type")
        if kind in ("Headless", "ExternalName") and value:
            raise ValueError(f"{_article(kind)} {kind} service has no load-balancer ingress")
        return value

    @field_validator("external_name")
    @classmethod
    def _external_name_fits_type(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("type") != "ExternalName":
            raise ValueError("only an ExternalName service has an external_name")
        return value

    @field_validator("endpoints")
    @classmethod
    def _no_endpoints_for_external_name(cls, value: list[EndpointData],
                                        info: ValidationInfo) -> list[EndpointData]:
        if value and info.data.get("type") == "ExternalName":
            raise ValueError("an ExternalName service has no endpoints")
        return value

    @model_validator(mode="after")
    def _external_name_given(self) -> ServiceData:
        if self.type == "ExternalName" and self.external_name is None:
            raise ValueError("an ExternalName service needs external_name")
        return self


def _article(kind: object) -> str:
    return "an" if kind == "ExternalName" else "a"


class ClusterData(_Model):
    """The services of one cluster."""

    services: list[ServiceData] = Field(default_factory=list)


class StaticData(_Model):
    """The whole static data file."""

    clusters: dict[ClusterId, ClusterData] = Field(default_factory=dict)


def service_from_data(data: ServiceData) -> Service:
    """Convert validated file data into the registry model (the door)."""
    endpoints = []
    intern = sys.intern
    for ep in data.endpoints:
        for address in [ep.address] if ep.address else ep.addresses:
            assert address is not None
            endpoints.append(
                Endpoint(
                    address=intern(address),
                    ready=True if ep.ready is None else ep.ready,
                    serving=True if ep.serving is None else ep.serving,
                    terminating=False if ep.terminating is None else ep.terminating,
                    hostname=ep.hostname,
                    zone=intern(ep.zone) if ep.zone else None,
                    node=ep.node,
                    target=ep.target,
                )
            )
    return Service(
        namespace=data.namespace,
        name=data.name,
        type=ServiceType(data.type),
        cluster_ips=tuple(data.cluster_ips),
        load_balancer_ips=tuple(data.load_balancer_ips),
        ports=tuple(Port(p.name, p.port, Protocol(p.protocol)) for p in data.ports),
        endpoints=dedupe_endpoints(endpoints),
        policy=None if data.policy is None else ServicePolicy(
            tuple(data.policy.weights.items()),
            tuple(data.policy.regions) if data.policy.regions is not None else None,
            data.policy.none_healthy,
            tuple(data.policy.shares.items()),
            data.policy.answer_mode,
            data.policy.capacity_aware,
        ),
        load_balancer_hostnames=tuple(dict.fromkeys(data.load_balancer_hostnames)),
        external_name=data.external_name,
        traffic_distribution=data.traffic_distribution,
    )


def parse_static(raw: object, source: str) -> dict[str, ClusterSnapshot]:
    """Validate parsed file content; raise :class:`ConfigError` listing every problem."""
    if raw is None:
        raw = {}
    try:
        data = StaticData.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, problems_from_validation(exc)) from exc
    out = {}
    # Collected over every cluster before raising: every problem is reported at once.
    problems = []
    for cluster, cdata in data.clusters.items():
        seen: set[tuple[str, str]] = set()
        for i, svc in enumerate(cdata.services):
            if (svc.namespace, svc.name) in seen:
                problems.append(
                    f"clusters.{cluster}.services[{i}]: {svc.namespace}/{svc.name} is listed twice"
                )
            seen.add((svc.namespace, svc.name))
        out[cluster] = ClusterSnapshot.from_services(
            cluster, (service_from_data(s) for s in cdata.services)
        )
    if problems:
        raise ConfigError(source, problems)
    return out


def load_static(path: Path, content: bytes | None = None) -> dict[str, ClusterSnapshot]:
    """Read (unless ``content`` is given) and validate a static data file.

    JSON is read faster than YAML.
    """
    try:
        if content is None:
            content = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read file: {exc.strerror or exc}"]) from exc
    if not content.strip():
        # Truncated by a writer that has not written yet (a plain `>` or an editor saving
        # in place): taken for "no services", it would empty every cluster of the file.
        raise ConfigError(str(path), ["the file is empty (being written? write it to"
                                      " another name and rename it into place); no"
                                      " services at all is `clusters: {}`"])
    if path.suffix == ".json":
        try:
            raw = json.loads(content)
        except ValueError as exc:
            raise ConfigError(str(path), [f"invalid JSON: {exc}"]) from exc
    else:
        raw = read_yaml(path, content)
    return parse_static(raw, str(path))


RACY_SECONDS = 2.0
"""A file read less than this long after its modification time is read again on the
next poll, whatever its stat says (a change within one timestamp tick keeps it)."""

Stamp = tuple[int, int, int, int, int]
"""What a poll compares: modification and change times (ns), size, inode, device."""


@dataclass(frozen=True, slots=True)
class Examined:
    """What a poll found, worked out in a worker thread."""

    stamp: Stamp
    settled: bool
    """True when the file was read long enough after its modification time that an
    unchanged stamp means unchanged content."""
    digest: bytes | None = None
    """SHA-256 of the content; None: the stamp did not change, nothing was read."""
    content: bytes = b""


def examine(path: Path, known: Stamp | None, *, known_settled: bool) -> Examined:
    """Stat ``path``; read and hash it only if the stamp moved or was not settled.

    Runs in a worker thread (it does file I/O and hashing); raises OSError.
    """
    st = os.stat(path)
    stamp = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)
    if stamp == known and known_settled:
        return Examined(stamp, True)
    content = path.read_bytes()
    settled = time.time() - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 >= RACY_SECONDS
    return Examined(stamp, settled, hashlib.sha256(content).digest(), content)


class StaticSource:
    """Feeds the clusters configured with one static file into the registry."""

    @property
    def label(self) -> str:
        """How logs name this source."""
        return f"static source {self.path}"

    def __init__(
        self,
        path: Path,
        clusters: list[str],
        registry: Registry,
        *,
        poll_interval: float,
        clock: Callable[[], float],
    ) -> None:
        self.path = path
        self.clusters = clusters
        self.registry = registry
        self.poll_interval = poll_interval
        self.clock = clock
        self._digest: bytes | None = None
        """SHA-256 of the content last applied."""
        self._stamp: Stamp | None = None
        """The stat of the content last examined (applied or refused)."""
        self._settled = False
        self._refused = False
        """True when the content last examined was refused (the error is logged)."""
        self._last_error: str | None = None

    async def load_once(self) -> bool:
        """Read the file if it changed; apply it; return True when data was applied."""
        try:
            seen = await asyncio.to_thread(examine, self.path, self._stamp,
                                           known_settled=self._settled)
        except OSError as exc:
            self._stamp = None
            self._report(f"cannot read {self.path}: {exc.strerror or exc}")
            return False
        self._stamp, self._settled = seen.stamp, seen.settled
        digest = seen.digest
        if digest is None:  # the same file as last time
            if not self._refused:
                self._confirm()
            return False
        if digest == self._digest:
            # Back to the last good content (a broken edit was reverted): the episode
            # is over, so the next breakage, even an identical one, is logged again.
            self._last_error = None
            self._refused = False
            self._confirm()
            return False
        try:
            snapshots = await asyncio.to_thread(load_static, self.path, seen.content)
        except ConfigError as exc:
            self._refused = True
            self._report(exc.render())
            return False
        self._digest = digest
        self._refused = False
        self._last_error = None
        now = self.clock()
        for cluster in self.clusters:
            snap = snapshots.get(cluster)
            if snap is None:
                log.warning("%s has no data for cluster %s: it serves no services", self.path,
                            cluster)
                snap = ClusterSnapshot(cluster, {})
            self.registry.replace(snap, now=now)
        extra = sorted(set(snapshots) - set(self.clusters))
        if extra:
            log.warning("%s: clusters %s are not in the config and are ignored", self.path,
                        ", ".join(extra))
        log.info("loaded %s: %d cluster(s), %d service(s)", self.path, len(self.clusters),
                 sum(len(s.services) for c, s in snapshots.items() if c in self.clusters))
        return True

    def _confirm(self) -> None:
        """The source is healthy and its data current."""
        now = self.clock()
        for cluster in self.clusters:
            self.registry.confirm(cluster, now=now)

    def _report(self, message: str) -> None:
        if message != self._last_error:
            # Before the first good read there is no data of its own to keep: say what
            # answers instead (a warm-start snapshot, or nothing).
            if self._digest is not None:
                outcome = "keeping the last good data"
            elif any((entry := self.registry.clusters.get(c)) is not None
                     and entry.snapshot is not None for c in self.clusters):
                outcome = "answering from the warm-start snapshot, as stale, until it reads"
            else:
                outcome = "no data yet: names of its clusters answer SERVFAIL"
            log.error("static source: %s (%s)", message, outcome)
            self._last_error = message

    async def run(self) -> None:
        """Load, then poll for changes until cancelled."""
        await self.load_once()
        if self.poll_interval <= 0:
            return
        while True:
            await asyncio.sleep(self.poll_interval)
            await self.load_once()
