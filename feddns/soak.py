"""``feddns soak``: a long-running verifier, in the spirit of the Kubernetes soak test.

Why it exists: a DNS server is left running for months; it must not drift
(answers that no longer match its data), leak (memory, file descriptors,
tasks) or slow down. Pointed at a running feddns, the soak reads what the
server believes through ``/debug``, resolves every service name and every
headless endpoint name over UDP and TCP in rounds, checks each answer
against the service's plan, and reports per round: queries, failures,
mismatches, latency percentiles, and the target's RSS, open file
descriptors and task count (from ``/metrics``). With ``--churn FILE`` it also
rewrites a static data file between rounds (endpoints flipped, added and
removed), so answers must follow changing data. It exits non-zero on any
mismatch, or when RSS or p99 latency grew beyond the given thresholds.

Responses are parsed with dnslib (the wire library feddns ships with), so the
check does not reuse feddns's own parser. The expectations follow the
selection rules for a client the server cannot place (every candidate in
tier 0): the best health level present, then positive weights, at most
``max_records`` records, the load-balancer address unless the origin answers
cluster IPs; per-endpoint names of headless services answer their own
addresses. Run it as ``feddns soak`` (arguments in ``feddns.cli``).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import socket
import statistics
import struct
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dnslib
import yaml


@dataclass
class Round:
    """What one round saw."""

    queries: int = 0
    failures: int = 0
    mismatches: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    rss_mib: float = 0.0
    fds: float = 0.0
    tasks: float = 0.0
    details: list[str] = field(default_factory=list)

    def pct(self, p: float) -> float:
        """The ``p``-th latency percentile (ms)."""
        if not self.latencies_ms:
            return float("nan")
        values = sorted(self.latencies_ms)
        return values[min(len(values) - 1, int(p / 100 * len(values)))]


class Target:
    """A running feddns: its DNS address and its observability URL."""

    def __init__(self, dns_host: str, dns_port: int, url: str, *, timeout: float = 2.0,
                 token: str | None = None) -> None:
        self.dns_host = dns_host
        self.dns_port = dns_port
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        """The observe token (``observe.token_file``), needed off loopback."""

    def _get(self, path: str) -> urllib.request.Request:
        return urllib.request.Request(self.url + path, headers=self.headers)  # noqa: S310

    def get_json(self, path: str) -> Any:
        """GET ``path`` and decode it as JSON."""
        with urllib.request.urlopen(self._get(path), timeout=10) as resp:  # noqa: S310
            return json.loads(resp.read())

    def metrics(self) -> dict[str, float]:
        """Unlabelled samples of ``/metrics`` (RSS, fds, tasks)."""
        out: dict[str, float] = {}
        with urllib.request.urlopen(self._get("/metrics"), timeout=10) as resp:  # noqa: S310
            for line in resp.read().decode().splitlines():
                if line.startswith("#") or "{" in line:
                    continue
                name, _, value = line.partition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    continue
        return out

    def ask(self, name: str, qtype: str, *, tcp: bool) -> tuple[dnslib.DNSRecord | None, float]:
        """One query; the parsed reply (None on failure) and its latency in ms."""
        q = dnslib.DNSRecord.question(name, qtype)
        q.header.rd = 0
        q.add_ar(dnslib.EDNS0(udp_len=1232))  # as resolvers ask: answers up to 1232 octets
        packet = q.pack()
        started = time.perf_counter()
        try:
            if tcp:
                with socket.create_connection((self.dns_host, self.dns_port),
                                              timeout=self.timeout) as s:
                    s.sendall(struct.pack("!H", len(packet)) + packet)
                    head = _recv(s, 2)
                    data = _recv(s, struct.unpack("!H", head)[0])
            else:
                with socket.socket(socket.AF_INET6 if ":" in self.dns_host
                                   else socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.settimeout(self.timeout)
                    s.sendto(packet, (self.dns_host, self.dns_port))
                    data = s.recv(65535)
            reply = dnslib.DNSRecord.parse(data)
        except (OSError, dnslib.DNSError, struct.error):
            return None, (time.perf_counter() - started) * 1000
        if reply.header.id != q.header.id or (reply.header.tc and not tcp):
            return None, (time.perf_counter() - started) * 1000
        return reply, (time.perf_counter() - started) * 1000


def _recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


# --- what the registry says ------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """What a name must answer (for a client the server cannot place)."""

    name: str
    qtype: str
    allowed: frozenset[str]
    """Addresses that may appear (normalised text)."""
    count: int
    """How many of them must appear at most (all, or the record cap)."""
    least: int = -1
    """How many must appear at least (-1: exactly ``count``). Lower only when more
    candidates than the cap share addresses: which window is answered then decides."""

    def matches(self, got: set[str]) -> bool:
        """True when ``got`` (normalised addresses) is an answer this allows."""
        least = self.count if self.least < 0 else self.least
        return got <= self.allowed and least <= len(got) <= self.count


def _norm(address: str) -> str:
    """One text form per address (``fd00:0::1`` and ``fd00::1`` compare equal)."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def _is_v6(address: str) -> bool:
    return ":" in address


def expectations(view: dict[str, Any], origin: str, *, lb: bool = True) -> list[Expectation]:
    """Expected address answers of one service, from its ``/debug?service=`` plan.

    ``lb`` is the origin's ``service_address``: True for ``load-balancer`` (the
    ingress address when a cluster's service has one), False for ``cluster-ip``.
    """
    plan = view.get("plan")
    if not plan or plan.get("expired") or plan.get("external"):
        return []  # an ExternalName service answers a CNAME, no address
    ns, svc = view["service"].split("/", 1)
    base = f"{svc}.{ns}.svc.{origin.rstrip('.')}."
    cap = int(plan["max_records"])
    cands = plan["candidates"]
    regions = set(plan["regions"]) if plan.get("regions") is not None else None
    allowed = [c for c in cands if regions is None or c["region"] in regions]
    usable = [c for c in allowed if c["level"] != "unhealthy"]
    out: list[Expectation] = []
    for qtype in ("A", "AAAA"):
        v6 = qtype == "AAAA"
        fam = [(_for_family(c, v6, lb=lb, headless=plan["headless"]),
                [_norm(a) for a in _addresses(c, plan, lb=lb) if _is_v6(a) == v6])
               for c in allowed]
        fam = [(c, addrs) for c, addrs in fam if addrs and c["level"] != "unhealthy"]
        if not fam:
            continue
        best = min(_rank(c) for c, _ in fam)
        chosen = [addrs for c, addrs in fam if _rank(c) == best]
        union = frozenset(a for addrs in chosen for a in addrs)
        count = min(len(union), cap)
        least = -1
        if len(chosen) > cap and sum(len(set(a)) for a in chosen) != len(union):
            least = 1  # windows of the cap may overlap in addresses
        if plan.get("subset_size"):
            count, least = min(count, int(plan["subset_size"])), 1
        if plan.get("capacity_aware") or plan.get("shares"):
            # Spread by demand or shares: a subset of the tier, or more (other tiers).
            union = frozenset(a for c, addrs in fam for a in addrs)
            count, least = min(len(union), cap), 1
        out.append(Expectation(base, qtype, union, count, least))
    if plan["headless"]:
        for c in usable:
            owner = c.get("name")
            if not owner:
                continue
            for qtype in ("A", "AAAA"):
                addrs = frozenset(_norm(a) for a in c["addresses"]
                                  if _is_v6(a) == (qtype == "AAAA"))
                if addrs:
                    out.append(Expectation(f"{owner.rstrip('.')}.{base}", qtype, addrs,
                                           min(len(addrs), cap)))
    return out


_LEVELS = ("ready", "last-resort", "stale", "stale-last-resort", "unhealthy")


def _rank(c: dict[str, Any]) -> tuple[int, int]:
    return (_LEVELS.index(c["level"]), 0 if c["weight"] > 0 else 1)


def _ingress(c: dict[str, Any], plan: dict[str, Any], *, lb: bool) -> bool:
    return lb and not plan["headless"] and bool(
        c.get("load_balancer_addresses") or c.get("load_balancer_resolved")
        or c.get("load_balancer_only"))


def _addresses(c: dict[str, Any], plan: dict[str, Any], *, lb: bool) -> list[str]:
    if _ingress(c, plan, lb=lb):
        return [*c.get("load_balancer_addresses", []), *c.get("load_balancer_resolved", [])]
    return list(c["addresses"])


def _for_family(c: dict[str, Any], v6: bool, *, lb: bool, headless: bool) -> dict[str, Any]:
    """``c`` at its level for one address family (per-family health, README "Health").

    Addresses a load-balancer hostname resolves to count at the service's own level.
    """
    levels = c.get("family_levels")
    if not levels or (_ingress(c, {"headless": headless}, lb=lb)
                      and any(_is_v6(a) == v6 for a in c.get("load_balancer_resolved", []))):
        return c
    return {**c, "level": levels[v6]}


def check(target: Target, exp: Expectation, *, tcp: bool, rnd: Round) -> set[str] | None:
    """Ask and compare: None when the answer matches, else the addresses that came back.

    A query that fails (timeout, bad reply, TC=1 over UDP) counts as a failure
    and returns None: failures are not mismatches.
    """
    reply, ms = target.ask(exp.name, exp.qtype, tcp=tcp)
    rnd.queries += 1
    rnd.latencies_ms.append(ms)
    if reply is None:
        rnd.failures += 1
        return None
    got = {_norm(str(rr.rdata)) for rr in reply.rr
           if rr.rtype == getattr(dnslib.QTYPE, exp.qtype)}
    return None if exp.matches(got) else got


# --- churn -------------------------------------------------------------------------------


def churn(path: Path, rng: random.Random, *, changes: int = 5) -> int:
    """Flip, add and remove endpoints in a static data file; return changes made."""
    doc = yaml.safe_load(path.read_text())
    services = [s for c in doc["clusters"].values() for s in c.get("services", [])]
    made = 0
    for _ in range(changes):
        if not services:
            break
        svc = rng.choice(services)
        eps = svc.setdefault("endpoints", [])
        roll = rng.random()
        if eps and roll < 0.5:
            ep = rng.choice(eps)
            ep["ready"] = not ep.get("ready", True)
        elif roll < 0.75 or not eps:
            octet = rng.randrange(2, 250)
            eps.append({"address": f"10.250.{rng.randrange(250)}.{octet}"})
        elif len(eps) > 1:
            eps.pop(rng.randrange(len(eps)))
        made += 1
    tmp = path.with_suffix(path.suffix + ".soak-tmp")
    tmp.write_text(yaml.safe_dump(doc))
    tmp.replace(path)
    return made


# --- the loop ----------------------------------------------------------------------------


def run_round(target: Target, origin: str, *, max_services: int | None = None) -> Round:
    """One round over every service (and headless endpoint) over UDP and TCP."""
    rnd = Round()
    listing = target.get_json("/debug?services=1")
    keys = listing.get("services") or []
    wanted = origin.rstrip(".").lower() + "."
    lb = next((o.get("service_address") != "cluster-ip" for o in listing.get("origins") or []
               if str(o.get("name", "")).lower() == wanted), True)
    if max_services is not None:
        keys = keys[:max_services]
    for key in keys:
        try:
            view = target.get_json(f"/debug?service={key}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                continue  # deleted since the listing
            raise
        for exp in expectations(view, origin, lb=lb):
            for tcp in (False, True):
                if check(target, exp, tcp=tcp, rnd=rnd) is None:
                    continue
                # The data may have changed between reading it and asking: re-read once.
                try:
                    again = target.get_json(f"/debug?service={key}")
                except urllib.error.HTTPError:
                    continue  # deleted meanwhile
                fresh = {(e.name, e.qtype): e for e in expectations(again, origin, lb=lb)}
                retry = fresh.get((exp.name, exp.qtype))
                if retry is None:
                    continue  # the name no longer has this answer to check
                got = check(target, retry, tcp=tcp, rnd=rnd)
                if got is None:
                    continue
                rnd.mismatches += 1
                rnd.details.append(
                    f"{exp.name} {exp.qtype} ({'tcp' if tcp else 'udp'}): got"
                    f" {sorted(got)}, expected {retry.count} of {sorted(retry.allowed)}")
    metrics = target.metrics()
    rnd.rss_mib = metrics.get("process_resident_memory_bytes", 0.0) / 2**20
    rnd.fds = metrics.get("process_open_fds", 0.0)
    rnd.tasks = metrics.get("feddns_event_loop_tasks", 0.0)
    return rnd


def soak(target: Target, *, duration: float | None, origin: str = "clusterset.local.",
         churn_file: Path | None = None, rss_growth_percent: float = 5.0,
         p99_drift_percent: float = 20.0, interval: float = 1.0,
         out: Callable[[str], None] = print, seed: int = 1) -> int:
    """Run rounds until ``duration`` (None: forever); return the exit code."""
    rng = random.Random(seed)
    started = time.monotonic()
    rounds: list[tuple[float, Round]] = []
    mismatches = 0
    while duration is None or time.monotonic() - started < duration:
        if churn_file is not None:
            churn(churn_file, rng)
        if churn_file is not None or rounds:
            # Paces the rounds (a soak is not a load test) and, after a change, lets the
            # server pick the file up (it polls it).
            time.sleep(interval)
        try:
            rnd = run_round(target, origin)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            out(f"round failed: cannot read the target: {exc}")
            return 2
        elapsed = time.monotonic() - started
        rounds.append((elapsed, rnd))
        mismatches += rnd.mismatches
        out(f"t={elapsed:7.1f}s queries={rnd.queries} failures={rnd.failures} "
            f"mismatches={rnd.mismatches} p50={rnd.pct(50):.2f}ms p95={rnd.pct(95):.2f}ms "
            f"p99={rnd.pct(99):.2f}ms rss={rnd.rss_mib:.1f}MiB fds={rnd.fds:.0f} "
            f"tasks={rnd.tasks:.0f}")
        for detail in rnd.details[:10]:
            out(f"  mismatch: {detail}")
    return summarize(rounds, mismatches, out=out, rss_growth_percent=rss_growth_percent,
                     p99_drift_percent=p99_drift_percent)


def summarize(rounds: list[tuple[float, Round]], mismatches: int, *,
              out: Callable[[str], None], rss_growth_percent: float,
              p99_drift_percent: float) -> int:
    """Print the figures; non-zero when something drifted or mismatched."""
    if not rounds:
        out("soak: no round completed")
        return 2
    total = rounds[-1][0]
    window = min(300.0, total / 3)
    warm = [r for t, r in rounds if t <= window] or [rounds[0][1]]
    last = [r for t, r in rounds if t >= total - window] or [rounds[-1][1]]
    rss_start = statistics.median(r.rss_mib for r in warm)
    rss_end = statistics.median(r.rss_mib for r in last)
    growth = (rss_end - rss_start) / rss_start * 100 if rss_start else 0.0
    p99_first = statistics.median(r.pct(99) for r in warm)
    p99_last = statistics.median(r.pct(99) for r in last)
    drift = (p99_last - p99_first) / p99_first * 100 if p99_first else 0.0
    out(f"soak-rounds: {len(rounds)}")
    out(f"soak-queries: {sum(r.queries for _, r in rounds)}")
    out(f"soak-failures: {sum(r.failures for _, r in rounds)}")
    out(f"soak-mismatches: {mismatches}")
    out(f"soak-rss-growth-percent: {growth:.2f}")
    out(f"soak-p99-drift-percent: {drift:.2f}")
    failed = mismatches > 0 or growth > rss_growth_percent or drift > p99_drift_percent
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    """``feddns soak`` with its parsed arguments (see ``feddns.cli``)."""
    host, port = args.server
    token = None
    if getattr(args, "token_file", None) is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            print(f"feddns soak: cannot read the token file: {exc}", file=sys.stderr)
            return 2
    target = Target(host, port, args.url, timeout=args.timeout, token=token)
    try:
        return soak(target, duration=args.duration, origin=args.origin, churn_file=args.churn,
                    rss_growth_percent=args.max_rss_growth,
                    p99_drift_percent=args.max_p99_drift, interval=args.interval)
    except KeyboardInterrupt:
        return 130

