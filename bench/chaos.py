"""Faults in sequence (issue #12): a seeded schedule of overlapping faults, every answer judged.

Why it exists: single-fault tests (``tests/integration/test_outages.py``,
``test_bus_outages.py``, ``bench/outages.py``) show that each failure is handled
alone; production sees them in sequence and overlapping: a partition while a
broker restarts, feddns killed while a cluster is down, a token rotated during
a re-list. This harness runs that, and a verifier checks every answer against
what was true at the moment it was given.

Topology (all on 127.0.0.1). Three fake Kubernetes API servers in this process
(``tests/fakekube``: ``east``, ``west``, ``north``; one kubeconfig with a
``tokenFile`` per cluster), two real mosquittos bridged by mosquitto's own
bridge (``tests.mosquitto``, the README's broker settings), two real feddns CLI
processes (``python -m feddns serve``, each with a snapshot on disk, so they can
be SIGTERMed, SIGKILLed and warm-started) and a real Unbound forwarding
``clusterset.local`` to instance B:

* instance **A** sources all three clusters directly and publishes them on the bus;
* instance **B** sources ``north`` directly and receives ``east`` and ``west`` over the
  bus (``north`` is thus known to both instances both ways: its own watch and a relay);
* both use ``bus.brokers: [broker-1, broker-2]``.

Services (namespace ``shop``, in every cluster unless said): ``web`` (ClusterIP,
IPv4, two endpoints), ``api`` (dual-stack ClusterIP, an IPv4 and an IPv6 slice),
``db`` (headless, three endpoints), ``solo`` (``north`` only), and ``tmp-N``
services created in one cluster and deleted 15-60 s later. Every address is
unique to one cluster and service, so an answer's addresses say where they came
from. Data changes slowly all the time (a seeded stream): endpoints going
unready and ready again, services added and removed.

Faults (a seeded ``random.Random``; each with a random duration; they overlap,
but never two outages of one API server at once): ``watch-drop`` (every watch
cut), ``gone-410`` (history expired; watches ended with a 410 or cut),
``token-rotation`` (the token file rewritten, the old token revoked at once or
after 10 s, sometimes the kubeconfig rewritten too), ``api-blip`` (refused for
0.5-2 s, less than ``hold_down``), ``api-outage`` (refused 8-25 s),
``partition`` (silent 6-25 s), ``long-outage`` (refused or silent for longer
than ``max_stale``: data expires), ``mass-loss`` (two or three API servers go
silent within a second: self-isolation), ``broker-kill`` (SIGKILL, restarted
2-20 s later without persistence), ``instance-term`` / ``instance-kill`` (A or B
stopped with SIGTERM / SIGKILL, restarted 1-6 s later from its snapshot, often
while a cluster is down), ``down-at-start`` (one API server refusing from before
the instances start until past ``sync_timeout``).

Settings. Defaults everywhere except: ``freshness.max_stale: 30`` (one day) so
data expires during a run, ``freshness.sync_timeout: 8`` (15) so a short run
passes the gate, and the bus's ``heartbeat_interval: 2`` (30), ``peer_timeout:
6`` (90), ``keepalive: 5`` (30) and ``backoff_max: 2`` (30) so the bus's
detection and reconnection take seconds, not minutes. ``hold_down`` (3),
``readmit_after`` (10), the liveness probe (2 s + 2 s), isolation (5 s, 0.5,
120 s), TTLs (5 / 30 / negative 5) and ``none_healthy: fail-closed`` are the
defaults. Unbound runs with the test suite's forwarding config plus
``infra-keep-probing: yes`` (it keeps probing an upstream it saw time out, as
one in front of a restarting server should).

What a *wrong answer* is. Clients ask continuously: A and AAAA, UDP and TCP, with
EDNS, straight to A and B and through Unbound in front of B. The harness
recorded every fault and data change with its time; from them it knows, for
each instance and cluster, whether each path by which the instance hears of the
cluster (its watch, a peer's publication on the bus, a relay) was surely UP,
surely DOWN or uncertain (changing, starting, reconnecting) at any moment, and
derives (``bench/chaos_verifier.py``; budgets from the settings above plus a
3 s margin; B = the sync budget: 5 s for a watch, 9 s over the bus):

* *current*: the instance surely holds the cluster's data as of B seconds ago
  (its direct source UP for B + ``readmit_after`` + margin, or every path UP for B);
* *surely fresh*: a fresh-capable path UP for B + ``readmit_after`` + margin;
* *known dead*: every fresh-capable path DOWN for longer than detection (watch 4.2 s:
  probe interval + timeout; bus 8 s: ``peer_timeout`` + heartbeat) + ``hold_down`` +
  margin;
* *known name*: a cluster that has the service was current while it had it (kept while
  the instance runs, across a restart only if known ``snapshot.interval`` + 2 s
  before the stop, dropped when the service is deleted or its data may have expired);
* *surely expired*: every path DOWN for longer than ``max_stale`` + the expiry check +
  margin; *possibly expired*: no fresh-capable path UP for ``max_stale`` - 5 s - margin;
* *isolation possible*: since the instance's process started, two clusters lost (their
  last fresh-capable path leaving UP) close enough that feddns may have noticed them
  within ``isolation.window`` (5 s) of each other (a refusal or a stopped publisher is
  noticed within 1 s, a silent API server within 5.2 s, a dead bus within 9 s), until
  every cluster lost since then is surely fresh again, or ``max_hold`` + margin + that
  notice time passed (README, "Self-isolation is not failover": a loss during an episode
  joins it).

A direct answer is wrong when (rule names as printed):

* ``bogus-address``: an address that is no address of that name and type anywhere;
* ``nxdomain-known-name`` / ``servfail-known-name``: NXDOMAIN or SERVFAIL for a known name
  (README: a name known from any source never answers SERVFAIL, gate or not);
* ``expired-answer``: an address of a cluster whose data surely expired;
* ``obsolete-address``: an address of a current cluster that was not in that cluster's
  answer at any moment of the last B seconds (a deleted service, an unready endpoint);
* with a *fresh candidate* (a cluster surely fresh and current whose answer for the name
  held the same ready addresses for the last B seconds) and no isolation possible:
  ``dead-cluster-address`` (an address of a known-dead cluster),
  ``stale-while-fresh`` (the stale TTL 30), ``missing-fresh-address`` (a fresh
  candidate's ready address absent, NODATA included);
* ``unsignalled-stale``: the stale TTL without Extended DNS Error 3.

Through Unbound (what survives caching): ``bogus-address``; NXDOMAIN for a name known
to B without a break for longer than the negative TTL (5 s) + margin; SERVFAIL for a
name known, and B running, both for longer than the stale TTL (30 s) + margin; an
address of a cluster that was known dead (with a fresh candidate, no isolation) or
surely expired at every moment the resolver can have fetched it (its TTL tells).

Deliberately not checked, and why: unanswered queries (a stopped instance does not
answer; counted as ``chaos-unanswered``); NXDOMAIN for a name its instance cannot
know yet (created while its cluster was down, or only in a cluster not synced:
documented, README sync gate); SERVFAIL for names not yet known (the gate) or
known only from expired data (documented); answers during a possible
self-isolation episode are not checked for failover, staleness or missing
addresses ("answers held as before", README); a cluster within ``readmit_after``
of its recovery may be absent (documented); which of several paths' data an
instance uses while none of them is fresh (undocumented either way); SRV and
locality (every client is unknown here, so every cluster is tier 0).

    .venv/bin/python -m bench.chaos --minutes 30 --seed 2026   # the RESULTS.md run
    .venv/bin/python -m bench.chaos --plan --minutes 2 --seed 7  # the schedule only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import yaml

from bench.chaos_verifier import (
    Knowledge,
    Observation,
    ServiceSpec,
    Timers,
    Truth,
    Verifier,
    World,
    describe,
    recent,
)
from bench.harness import REPO, figure
from tests import localdns
from tests.fakekube import FakeFederation, make_endpointslice, make_service
from tests.mosquitto import Mosquitto
from tests.ports import free_port

CLUSTERS = ("east", "west", "north")
REGIONS = {"east": ("us-east", "us-east-1a"), "west": ("us-west", "us-west-2a"),
           "north": ("eu-north", "eu-north-1a")}
DIRECT = {"A": CLUSTERS, "B": ("north",)}
"""Instance -> the clusters it sources itself (the rest reach it over the bus)."""
BROKERS = ("broker-1", "broker-2")
ORIGIN = "clusterset.local."
KEY = "a-chaos-federation-secret-0123456789abcdef"
OUTAGES = ("api-blip", "api-outage", "partition", "long-outage", "mass-loss")
INSTANT = ("watch-drop", "gone-410", "token-rotation")
RESTARTS = ("instance-term", "instance-kill")
KINDS = ("down-at-start", *INSTANT, *OUTAGES, "broker-kill", *RESTARTS)
TIMERS = Timers()
SETTINGS: dict[str, Any] = {
    "freshness": {"max_stale": TIMERS.max_stale, "sync_timeout": TIMERS.sync_timeout},
}
BUS: dict[str, Any] = {"heartbeat_interval": TIMERS.heartbeat_interval,
                       "peer_timeout": TIMERS.peer_timeout, "keepalive": 5,
                       "backoff_max": TIMERS.bus_backoff_max}


def qname(service: str) -> str:
    return f"{service}.shop.svc.{ORIGIN}"


# --------------------------------------------------------------------------- the schedule


@dataclass(frozen=True)
class Fault:
    """One planned fault: when (seconds after the start), what, on what, for how long."""

    at: float
    kind: str
    targets: tuple[str, ...]
    duration: float = 0.0
    detail: str = ""

    def label(self) -> str:
        extra = f" {self.detail}" if self.detail else ""
        span = f" for {self.duration:.1f}s" if self.duration else ""
        return f"{self.kind} {','.join(self.targets)}{extra}{span}"


def plan(seed: int, seconds: float, *, gap: float) -> list[Fault]:
    """The seeded fault schedule: every kind dealt from shuffled decks.

    Faults start ``gap`` s apart on average, so a short run gets each kind at least once
    and a long one many times.
    """
    rng = random.Random(f"chaos-faults-{seed}")
    busy: dict[str, list[tuple[float, float]]] = {}

    def free(target: str, a: float, b: float) -> bool:
        return all(b <= s or a >= e for s, e in busy.get(target, []))

    def take(target: str, a: float, b: float) -> None:
        busy.setdefault(target, []).append((a, b))

    out = []
    first = rng.choice(CLUSTERS)
    down = TIMERS.sync_timeout + rng.uniform(4, 15)
    out.append(Fault(0.0, "down-at-start", (first,), down))
    take(first, 0.0, down + 1)
    deck: list[str] = []
    t = 5.0
    first_deck = True
    while t < seconds:
        if not deck:
            deck = [k for k in KINDS if k != "down-at-start"] + list(INSTANT)
            rng.shuffle(deck)
            if first_deck:
                # A self-isolation episode suspends the failover rules for up to
                # max_hold (120 s): the first deck deals it last, so that a short run
                # checks failovers before it.
                deck.remove("mass-loss")
                deck.append("mass-loss")
                first_deck = False
        kind = deck.pop(0)
        fault = _place(rng, kind, t, free, take)
        if fault is None:
            deck.append(kind)  # nothing free for it now: later
        else:
            out.append(fault)
        t += rng.uniform(0.5, 1.5) * gap
    return out


def _place(rng: random.Random, kind: str, t: float, free: Any, take: Any) -> Fault | None:
    clusters = list(CLUSTERS)
    rng.shuffle(clusters)
    if kind in INSTANT:
        c = clusters[0]
        detail = ""
        if kind == "gone-410":
            detail = rng.choice(["410-on-stream", "410-on-reconnect"])
        if kind == "token-rotation":
            detail = (f"grace={rng.choice([0, 10])}s"
                      + (" +kubeconfig" if rng.random() < 0.5 else ""))
        return Fault(t, kind, (c,), 0.0, detail)
    if kind in ("api-blip", "api-outage", "partition", "long-outage"):
        duration = {"api-blip": rng.uniform(0.5, 2.0), "api-outage": rng.uniform(8, 25),
                    "partition": rng.uniform(6, 25),
                    "long-outage": rng.uniform(TIMERS.max_stale + 8,
                                               TIMERS.max_stale + 25)}[kind]
        for c in clusters:
            if free(c, t, t + duration + 1):
                take(c, t, t + duration + 1)
                detail = rng.choice(["refused", "silent"]) if kind == "long-outage" else ""
                return Fault(t, kind, (c,), duration, detail)
        return None
    if kind == "mass-loss":
        count = rng.choice([2, 3])
        duration = rng.uniform(10, 30)
        chosen = [c for c in clusters if free(c, t, t + duration + 2)][:count]
        if len(chosen) < 2:
            return None
        for c in chosen:
            take(c, t, t + duration + 2)
        return Fault(t, kind, tuple(chosen), duration, f"spread={rng.uniform(0.1, 1.0):.2f}s")
    if kind == "broker-kill":
        brokers = list(BROKERS)
        rng.shuffle(brokers)
        duration = rng.uniform(2, 20)
        for b in brokers:
            if free(b, t, t + duration + 5):
                take(b, t, t + duration + 5)
                return Fault(t, kind, (b,), duration)
        return None
    if kind in RESTARTS:
        instances = list(DIRECT)
        rng.shuffle(instances)
        duration = rng.uniform(1, 6)
        for i in instances:
            if free(i, t, t + duration + 15):
                take(i, t, t + duration + 15)
                return Fault(t, kind, (i,), duration)
        return None
    raise ValueError(kind)


def during_outage(faults: list[Fault], restart: Fault) -> bool:
    """Whether a planned restart falls inside a planned API-server outage."""
    return any(f.kind in (*OUTAGES, "down-at-start") and f.at <= restart.at <= f.at + f.duration
               for f in faults)


# --------------------------------------------------------------------------- the data


def initial_services() -> dict[tuple[str, str], ServiceSpec]:
    out = {}
    for ci, c in enumerate(CLUSTERS, start=1):
        out[(c, "web")] = ServiceSpec(False, {4: f"10.96.{ci}.1"},
                                      {f"10.{ci}.1.1": True, f"10.{ci}.1.2": True})
        out[(c, "api")] = ServiceSpec(False, {4: f"10.96.{ci}.2", 6: f"fd00:96:{ci}::2"},
                                      {f"10.{ci}.2.1": True, f"fd00:{ci}:2::1": True})
        out[(c, "db")] = ServiceSpec(True, {}, {f"10.{ci}.3.{n}": True for n in (1, 2, 3)})
    out[("north", "solo")] = ServiceSpec(False, {4: "10.96.3.4"}, {"10.3.4.1": True})
    return out


def kube_objects(cluster: str, service: str, spec: ServiceSpec) -> list[tuple[str, Any]]:
    """The Service and EndpointSlices of a spec, as ``(resource, object)``."""
    zone = REGIONS[cluster][1]
    port = {"web": 80, "api": 443, "db": 5432}.get(service, 8080)
    ports = [{"name": "tcp", "port": port}]
    svc = make_service("shop", service, headless=spec.headless, ports=ports,
                       cluster_ips=[spec.cluster_ips[f] for f in sorted(spec.cluster_ips)]
                       or None)
    out: list[tuple[str, Any]] = [("services", svc)]
    for family in (4, 6):
        eps = [(a, r) for a, r in spec.endpoints.items() if ":" in a] if family == 6 else [
            (a, r) for a, r in spec.endpoints.items() if ":" not in a]
        if not eps:
            continue
        endpoints = [{"addresses": [a], "conditions": {"ready": r}, "zone": zone,
                      **({"hostname": f"{service}-{n}"} if spec.headless else {})}
                     for n, (a, r) in enumerate(sorted(eps))]
        out.append(("endpointslices", make_endpointslice(
            "shop", f"{service}-v{family}", service, endpoints=endpoints, ports=ports,
            address_type="IPv6" if family == 6 else "IPv4")))
    return out


# --------------------------------------------------------------------------- processes


@dataclass
class Instance:
    name: str
    config: Path
    port: int
    observe: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None


def instance_config(tmp: Path, name: str, kubeconfig: Path, brokers: list[Mosquitto],
                    observe: int) -> Path:
    clusters = []
    for c in CLUSTERS:
        region, zone = REGIONS[c]
        source: dict[str, Any] = (
            {"type": "kubernetes", "kubeconfig": str(kubeconfig), "context": c}
            if c in DIRECT[name] else {"type": "bus"})
        clusters.append({"name": c, "region": region, "zones": [zone], "source": source})
    key = tmp / "bus-key"
    key.write_text(KEY)
    key.chmod(0o600)
    cfg = {
        "federation": "chaos",
        "dns": {"listen": ["127.0.0.1:0"]},
        "observe": {"listen": f"127.0.0.1:{observe}"},
        "snapshot": {"path": str(tmp / f"snapshot-{name}")},
        **SETTINGS,
        "clusters": clusters,
        "bus": {"brokers": [{"host": "127.0.0.1", "port": m.port} for m in brokers],
                "topic_prefix": "chaos", "keys": [{"id": "k1", "secret_file": str(key)}],
                **BUS},
    }
    path = tmp / f"feddns-{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def unbound_config(tmp: Path, port: int, upstream: int) -> Path:
    return localdns.unbound_config(tmp, port, upstream, extra="    infra-keep-probing: yes\n")


def start_unbound(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("unbound") or "/usr/sbin/unbound"
    with log.open("wb") as out:
        return subprocess.Popen([exe, "-d", "-c", str(conf)], stdout=out,
                                stderr=subprocess.STDOUT)


async def answers(port: int) -> bool:
    """The server on ``port`` answers the apex SOA (any answer will do)."""
    query = dns.message.make_query(ORIGIN, "SOA")
    with contextlib.suppress(Exception):
        await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=0.3)
        return True
    return False


async def wait_answering(port: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await answers(port):
            return True
        await asyncio.sleep(0.05)
    return False


# --------------------------------------------------------------------------- the run


@dataclass
class Report:
    seed: int
    minutes: float = 0.0
    checked: Counter[str] = field(default_factory=Counter)
    rcodes: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    unanswered: int = 0
    unanswered_while_up: int = 0
    stale: int = 0
    crashes: list[str] = field(default_factory=list)
    restarts_during_outage: int = 0
    ticks: int = 0
    exempt: Counter[str] = field(default_factory=Counter)
    isolation_ticks: Counter[str] = field(default_factory=Counter)


class Chaos:
    """One run: build everything, apply the schedule, ask and check, tear down."""

    def __init__(self, tmp: Path, *, seed: int, seconds: float, gap: float,
                 clients: int, interval: float, verbose: bool) -> None:
        self.tmp = tmp
        self.seed = seed
        self.seconds = seconds
        self.clients = clients
        self.interval = interval
        self.verbose = verbose
        self.schedule = plan(seed, seconds, gap=gap)
        self.truth = Truth()
        self.world = World(TIMERS, clusters=CLUSTERS, direct=DIRECT, brokers=BROKERS)
        self.knowledge = Knowledge(self.world, self.truth)
        self.verifier = Verifier(self.world, self.truth, self.knowledge)
        self.report = Report(seed)
        self.events: list[tuple[float, str]] = []
        self.t0 = time.monotonic()
        self.specs: dict[tuple[str, str], ServiceSpec] = {}
        self.fed = FakeFederation(CLUSTERS, directory=tmp / "clusters")
        first = Mosquitto(tmp / "broker-1")
        self.brokers = {"broker-1": first,
                        "broker-2": Mosquitto(tmp / "broker-2").bridge_to(first)}
        self.instances: dict[str, Instance] = {}
        self.unbound: subprocess.Popen[bytes] | None = None
        self.unbound_port = free_port()
        self.tmp_counter = 0
        self.deleted: list[str] = []
        self.stopping = False
        self.query_rng = random.Random(f"chaos-queries-{seed}")

    def now(self) -> float:
        return time.monotonic()

    def note(self, what: str) -> None:
        t = self.now()
        self.events.append((t, what))
        if self.verbose:
            print(f"# {t - self.t0:8.2f}s {what}", flush=True)

    # -- data ------------------------------------------------------------------------------

    def put(self, cluster: str, service: str, spec: ServiceSpec | None) -> None:
        """Apply a service to its fake API server, then record it as the truth."""
        fake = self.fed[cluster]
        t = self.now()
        if spec is None:
            fake.delete_service("shop", service)
            for family in (4, 6):
                fake.delete_endpointslice("shop", f"{service}-v{family}", missing_ok=True)
            self.specs.pop((cluster, service), None)
        else:
            for resource, obj in kube_objects(cluster, service, spec):
                fake.apply(resource, obj)
            self.specs[(cluster, service)] = spec
        self.truth.update(cluster, service, spec, t, self.now())

    async def churn(self) -> None:
        """Slow, seeded data changes: readiness flips, services added and removed."""
        rng = random.Random(f"chaos-data-{self.seed}")
        while not self.stopping:
            await asyncio.sleep(rng.uniform(2, 6))
            roll = rng.random()
            c = rng.choice(CLUSTERS)
            if roll < 0.5:
                service = rng.choice(["web", "api", "web", "api", "solo"])
                if service == "solo":
                    c = "north"
                spec = self.specs.get((c, service))
                others_down = any(not any(s.endpoints.values())
                                  for (cc, sv), s in self.specs.items()
                                  if sv == service and cc != c)
                if spec is None or others_down or not all(spec.endpoints.values()):
                    continue
                asyncio.get_running_loop().create_task(
                    self.unready_for(c, service, rng.uniform(8, 25)))
            elif roll < 0.7:
                spec = self.specs[(c, "db")]
                address = rng.choice(sorted(spec.endpoints))
                flipped = dict(spec.endpoints, **{address: not spec.endpoints[address]})
                await asyncio.to_thread(self.put, c, "db", ServiceSpec(True, {}, flipped))
                self.note(f"data db@{c} {address} ready={flipped[address]}")
            else:
                asyncio.get_running_loop().create_task(
                    self.temporary(c, rng.uniform(15, 60)))

    async def unready_for(self, cluster: str, service: str, seconds: float) -> None:
        spec = self.specs[(cluster, service)]
        down = ServiceSpec(spec.headless, spec.cluster_ips, dict.fromkeys(spec.endpoints, False))
        await asyncio.to_thread(self.put, cluster, service, down)
        self.note(f"data {service}@{cluster} unready for {seconds:.0f}s")
        await asyncio.sleep(seconds)
        await asyncio.to_thread(self.put, cluster, service, spec)
        self.note(f"data {service}@{cluster} ready")

    async def temporary(self, cluster: str, seconds: float) -> None:
        n = self.tmp_counter = self.tmp_counter + 1
        name = f"tmp-{n}"
        spec = ServiceSpec(False, {4: f"10.97.{n // 250}.{n % 250 + 1}"},
                           {f"10.98.{n // 250}.{n % 250 + 1}": True})
        await asyncio.to_thread(self.put, cluster, name, spec)
        self.note(f"data {name}@{cluster} added for {seconds:.0f}s")
        await asyncio.sleep(seconds)
        await asyncio.to_thread(self.put, cluster, name, None)
        self.deleted = [*self.deleted[-9:], name]
        self.note(f"data {name}@{cluster} deleted")

    # -- components ------------------------------------------------------------------------

    async def set_api(self, cluster: str, state: str) -> None:
        fake = self.fed[cluster]
        self.world.set_api(cluster, "changing", self.now())
        action = {"refused": fake.refuse, "partitioned": fake.partition}.get(state)
        if action is None:
            action = fake.accept if fake.refusing else fake.heal
        await asyncio.to_thread(action)
        self.world.set_api(cluster, state, self.now())

    async def kill_broker(self, name: str) -> None:
        self.world.set_broker(name, "changing", self.now())
        await asyncio.to_thread(self.brokers[name].stop, kill=True)
        self.world.set_broker(name, "down", self.now())

    async def start_broker(self, name: str) -> None:
        self.world.set_broker(name, "changing", self.now())
        await asyncio.to_thread(self.brokers[name].start)
        self.world.set_broker(name, "up", self.now())

    def spawn(self, inst: Instance) -> None:
        self.world.set_proc(inst.name, "starting", self.now())
        with inst.log.open("ab") as out:
            inst.proc = subprocess.Popen(
                [sys.executable, "-m", "feddns", "serve", "-c", str(inst.config), "--listen",
                 f"127.0.0.1:{inst.port}", "--log-level", "info"],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)

    async def start_instance(self, inst: Instance) -> None:
        self.spawn(inst)
        if not await wait_answering(inst.port, 60):
            self.report.crashes.append(f"{inst.name} did not answer within 60 s of its start")
            self.note(f"CRASH {inst.name}: not answering after start")
            return
        self.world.set_proc(inst.name, "running", self.now())

    async def stop_instance(self, inst: Instance, sig: signal.Signals) -> None:
        t = self.now()
        self.world.set_proc(inst.name, "changing", t)
        self.knowledge.stopped(inst.name, t)
        proc = inst.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                self.report.crashes.append(f"{inst.name} did not exit within 20 s of {sig.name}")
                proc.kill()
                await asyncio.to_thread(proc.wait)
        self.world.set_proc(inst.name, "stopped", self.now())

    # -- faults ----------------------------------------------------------------------------

    async def apply(self, f: Fault) -> None:
        self.report.faults[f.kind] += 1
        self.note(f"fault {f.label()}")
        target = f.targets[0]
        if f.kind == "watch-drop":
            await asyncio.to_thread(self.fed[target].drop_watches)
        elif f.kind == "gone-410":
            fake = self.fed[target]
            if f.detail == "410-on-stream":
                await asyncio.to_thread(fake.expire_history, terminate_watches=True)
            else:
                await asyncio.to_thread(fake.expire_history)
                await asyncio.to_thread(fake.drop_watches)
        elif f.kind == "token-rotation":
            grace = float(f.detail.split("=")[1].split("s")[0])
            await asyncio.to_thread(self.fed[target].rotate_token, grace_seconds=grace)
            if "kubeconfig" in f.detail:
                await asyncio.to_thread(self.fed.write_kubeconfig)
        elif f.kind in ("api-blip", "api-outage", "partition", "long-outage", "down-at-start"):
            silent = f.kind == "partition" or f.detail == "silent"
            await self.set_api(target, "partitioned" if silent else "refused")
            await asyncio.sleep(f.duration)
            await self.set_api(target, "up")
            self.note(f"healed {target} ({f.kind})")
        elif f.kind == "mass-loss":
            spread = float(f.detail.split("=")[1].rstrip("s"))
            for c in f.targets:
                await self.set_api(c, "partitioned")
                await asyncio.sleep(spread / max(1, len(f.targets) - 1))
            await asyncio.sleep(f.duration)
            for c in f.targets:
                await self.set_api(c, "up")
            self.note(f"healed {','.join(f.targets)} (mass-loss)")
        elif f.kind == "broker-kill":
            await self.kill_broker(target)
            await asyncio.sleep(f.duration)
            await self.start_broker(target)
            self.note(f"restarted {target}")
        elif f.kind in RESTARTS:
            inst = self.instances[target]
            await self.stop_instance(
                inst, signal.SIGTERM if f.kind == "instance-term" else signal.SIGKILL)
            await asyncio.sleep(f.duration)
            await self.start_instance(inst)
            self.note(f"restarted {target}")

    async def faults(self) -> None:
        loop = asyncio.get_running_loop()
        tasks = []
        for f in self.schedule:
            if f.kind == "down-at-start":
                continue
            delay = self.t0 + f.at - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.stopping:
                break
            tasks.append(loop.create_task(self.apply(f)))
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks)

    # -- asking and checking ---------------------------------------------------------------

    def pick(self) -> tuple[str, int, str, str, str]:
        rng = self.query_rng
        target = rng.choices(["A", "B", "resolver:B"], weights=[35, 35, 30])[0]
        port = self.unbound_port if target.startswith("resolver") else self.instances[
            target].port
        transport = rng.choice(["udp", "tcp"])
        qtype = rng.choices(["A", "AAAA"], weights=[60, 40])[0]
        live = [s for (_, s) in self.specs if s.startswith("tmp-")]
        roll = rng.random()
        if roll < 0.7 or (roll < 0.85 and not live):
            service = rng.choice(["web", "api", "db", "solo"])
        elif roll < 0.85:
            service = rng.choice(live)
        elif roll < 0.95 and self.deleted:
            service = rng.choice(self.deleted)
        else:
            service = f"nope-{rng.randrange(1000)}"
        return target, port, transport, qtype, service

    async def ask(self, target: str, port: int, transport: str, qtype: str,
                  service: str) -> None:
        query = dns.message.make_query(qname(service), qtype, use_edns=0)
        t_send = self.now()
        try:
            if transport == "udp":
                reply = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=1.0)
            else:
                reply = await dns.asyncquery.tcp(query, "127.0.0.1", port=port, timeout=2.0)
        except Exception:
            self.report.unanswered += 1
            instance = target.rsplit(":", maxsplit=1)[-1]
            running, since = self.world.running(instance, t_send)
            if running and since < t_send - 10 and self.world.running(instance, self.now())[0]:
                self.report.unanswered_while_up += 1
            return
        t_recv = self.now()
        records = tuple(
            (rd.address, rrset.ttl) for rrset in reply.answer
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) for rd in rrset)
        obs = Observation(
            t_send, t_recv, target, transport, qname(service), service, qtype,
            dns.rcode.to_text(reply.rcode()), records,
            frozenset(int(e.code) for e in reply.extended_errors()))
        self.report.checked[target.split(":", maxsplit=1)[0] if ":" in target else "direct"] += 1
        self.report.rcodes[obs.rcode] += 1
        if any(ttl == TIMERS.stale_ttl for _, ttl in records):
            self.report.stale += 1
        wrongs = self.verifier.check(obs)
        for wrong in wrongs:
            self.flag(obs, wrong.rule, wrong.why)
        if not wrongs and obs.rcode in ("NXDOMAIN", "SERVFAIL") and any(
                self.truth.exists_throughout(c, service, t_send - 10, t_recv)
                for c in self.truth.clusters_of(service)):
            # A name that exists, denied or failed, that the verifier accepted: the
            # instance cannot know it (yet) or only from expired data. Counted, and shown
            # with --verbose, so the exemptions can be read.
            self.report.exempt[obs.rcode] += 1
            if self.verbose:
                print(f"# exempt +{t_send - self.t0:.3f}s {target} {transport} {service}"
                      f" {qtype} {obs.rcode}", flush=True)

    def flag(self, obs: Observation, rule: str, why: str) -> None:
        t = obs.t_send
        faults = "; ".join(recent(self.events, t)) or "none"
        line = (f"WRONG +{t - self.t0:.3f}s {obs.target} {obs.transport} {obs.qname} {obs.qtype}"
                f" answered={describe(obs)} rule={rule}: {why} | recent: {faults}"
                f" | {self.debug_summary(obs.instance)}")
        self.report.wrong.append(line)
        print(line, flush=True)

    def debug_summary(self, instance: str) -> str:
        inst = self.instances[instance]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{inst.observe}/debug",
                                        timeout=1) as reply:
                view = json.loads(reply.read())
        except Exception as exc:
            return f"/debug of {instance}: {type(exc).__name__}"
        states = ",".join(f"{c['name']}={c['state']}({c['source']})"
                          for c in view.get("clusters", []))
        iso = view.get("isolation")
        return f"{instance}: {states} isolation={iso['clusters'] if iso else None}"

    async def client(self) -> None:
        while not self.stopping:
            await self.ask(*self.pick())
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        while not self.stopping:
            self.knowledge.tick(self.now())
            self.report.ticks += 1
            for name in DIRECT:
                self.report.isolation_ticks[name] += self.world.isolation_possible(
                    name, self.now())
            for inst in self.instances.values():
                state = self.world.proc[inst.name].at(self.now())
                if state == "running" and inst.proc is not None and inst.proc.poll() is not None:
                    self.report.crashes.append(
                        f"{inst.name} exited with {inst.proc.returncode} at"
                        f" +{self.now() - self.t0:.1f}s (see {inst.log})")
                    self.note(f"CRASH {inst.name} exited {inst.proc.returncode}")
                    self.world.set_proc(inst.name, "stopped", self.now())
                    self.knowledge.stopped(inst.name, self.now())
                    await self.start_instance(inst)
            await asyncio.sleep(0.25)

    # -- the whole run ---------------------------------------------------------------------

    async def run(self) -> Report:
        self.fed.start()
        for key, spec in initial_services().items():
            self.put(*key, spec)
        self.t0 = self.now()
        loop = asyncio.get_running_loop()
        background = []
        try:
            start = self.schedule[0]
            await self.set_api(start.targets[0], "refused")
            self.report.faults[start.kind] += 1
            self.note(f"fault {start.label()}")
            for name in BROKERS:
                await self.start_broker(name)
            brokers = list(self.brokers.values())
            for name in DIRECT:
                observe = free_port()
                self.instances[name] = Instance(
                    name, instance_config(self.tmp, name, self.fed.kubeconfig, brokers, observe),
                    free_port(), observe, self.tmp / f"feddns-{name}.log")
            await asyncio.gather(*(self.start_instance(i) for i in self.instances.values()))
            conf = unbound_config(self.tmp, self.unbound_port, self.instances["B"].port)
            self.unbound = start_unbound(conf, self.tmp / "unbound.log")
            if not await wait_answering(self.unbound_port, 20):
                raise RuntimeError("unbound did not answer")

            async def heal_start() -> None:
                await asyncio.sleep(max(0.0, self.t0 + start.duration - self.now()))
                await self.set_api(start.targets[0], "up")
                self.note(f"healed {start.targets[0]} (down-at-start)")

            background = [loop.create_task(heal_start()), loop.create_task(self.faults()),
                          loop.create_task(self.churn()), loop.create_task(self.tick())]
            background += [loop.create_task(self.client()) for _ in range(self.clients)]
            await asyncio.sleep(max(0.0, self.t0 + self.seconds - self.now()))
        finally:
            self.stopping = True
            self.report.minutes = (self.now() - self.t0) / 60
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()
            await self.teardown()
        applied = [f for f in self.schedule if f.at <= self.seconds]
        self.report.restarts_during_outage = sum(
            1 for f in applied if f.kind in RESTARTS and during_outage(applied, f))
        return self.report

    async def teardown(self) -> None:
        if self.unbound is not None:
            self.unbound.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.unbound.wait, 10)
            if self.unbound.poll() is None:
                self.unbound.kill()
        for inst in self.instances.values():
            if inst.proc is not None and inst.proc.poll() is None:
                inst.proc.terminate()
                try:
                    await asyncio.to_thread(inst.proc.wait, 20)
                except subprocess.TimeoutExpired:
                    inst.proc.kill()
        for broker in self.brokers.values():
            await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(self.fed.stop)


def print_report(chaos: Chaos) -> int:
    r = chaos.report
    figure("chaos-seed", r.seed)
    figure("chaos-minutes", round(r.minutes, 2))
    figure("chaos-answers", sum(r.checked.values()))
    figure("chaos-answers-direct", r.checked["direct"])
    figure("chaos-answers-resolver", r.checked["resolver"])
    figure("chaos-wrong-answers", len(r.wrong))
    figure("chaos-faults", sum(r.faults.values()))
    for kind in KINDS:
        print(f"# fault {kind}: {r.faults[kind]}", flush=True)
    figure("chaos-restarts-during-outage", r.restarts_during_outage)
    figure("chaos-stale-answers", r.stale)
    for rcode in ("NOERROR", "NXDOMAIN", "SERVFAIL"):
        print(f"# rcode {rcode}: {r.rcodes[rcode]}", flush=True)
    for rcode in ("NXDOMAIN", "SERVFAIL"):
        print(f"# {rcode} for a name that existed (not known to the instance: accepted):"
              f" {r.exempt[rcode]}", flush=True)
    figure("chaos-unanswered", r.unanswered)
    figure("chaos-unanswered-while-up", r.unanswered_while_up)
    figure("chaos-crashes", len(r.crashes))
    for name in DIRECT:
        share = r.isolation_ticks[name] / max(1, r.ticks)
        print(f"# self-isolation possible at {name}: {share:.0%} of the run (failover rules"
              " suspended)", flush=True)
    rules = sorted(set(chaos.verifier.armed) | set(chaos.verifier.broken))
    for rule in rules:
        print(f"# rule {rule}: armed {chaos.verifier.armed[rule]},"
              f" wrong {chaos.verifier.broken[rule]}", flush=True)
    for crash in r.crashes:
        print(f"CRASH {crash}", flush=True)
    return 1 if r.wrong or r.crashes else 0


@contextlib.contextmanager
def workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="feddns-chaos-") as tmp:
        yield Path(tmp)


def main() -> None:
    """Run the harness and print its figures; exit 1 on a wrong answer or a crash."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-gap", type=float, default=8.0,
                        help="mean seconds between two faults' starts")
    parser.add_argument("--clients", type=int, default=3, help="concurrent asking clients")
    parser.add_argument("--query-interval", type=float, default=0.05,
                        help="pause of each client between two queries (s)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="run in this folder and keep it (logs, configs, snapshots)")
    parser.add_argument("--verbose", action="store_true", help="print every fault and change")
    parser.add_argument("--plan", action="store_true", help="print the schedule and exit")
    args = parser.parse_args()
    seconds = args.minutes * 60
    if args.plan:
        for f in plan(args.seed, seconds, gap=args.fault_gap):
            print(f"{f.at:8.2f}s {f.label()}")
        return
    print(f"# chaos: seed {args.seed}, {args.minutes:g} min, a fault every"
          f" {args.fault_gap:g} s on average, {args.clients} clients", flush=True)
    with workdir(args.keep) as tmp:
        chaos = Chaos(tmp, seed=args.seed, seconds=seconds, gap=args.fault_gap,
                      clients=args.clients, interval=args.query_interval,
                      verbose=args.verbose)
        asyncio.run(chaos.run())
        code = print_report(chaos)
        if args.keep is not None:
            print(f"# logs and configs kept in {tmp}", flush=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
