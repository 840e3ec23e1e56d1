"""Load-balancer ingress hostnames: resolved by feddns, answered like ingress IPs.

The resolver (``sources.hostnames``) runs here with a fake lookup and a fake
clock, one ``step`` at a time: no sockets, no sleeps. The answers are case
tables through the real answer table: a hostname-only load balancer answers
what its hostname resolves to, never its cluster IP (other clusters seldom
reach it), and nothing while the name is not resolved yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from feddns.config import HostnamesConfig
from feddns.errors import FeddnsError
from feddns.model.registry import Registry
from feddns.model.services import ClusterSnapshot, Endpoint, Port, Service, ServiceType
from feddns.sources.hostnames import HostnameResolver
from feddns.sources.resolving import Answer
from tests.unit.dnscase import Case, Federation, check, federation, settings_for

ELB = "a1b2-123.us-east-1.elb.amazonaws.com"
KEY = ("shop", "checkout")
NAME = "checkout.shop.svc.clusterset.local."
NEG = ("clusterset.local. 5 IN SOA ns.clusterset.local. hostmaster.clusterset.local. "
       "2000 3600 600 86400 5",)


def checkout(*, hostnames: tuple[str, ...] = (ELB,), ips: tuple[str, ...] = (),
             cluster_ip: str = "10.96.1.20", v6: bool = False) -> Service:
    eps = (Endpoint("10.1.1.21"),) if not v6 else (Endpoint("fd00:1::21"),)
    return Service("shop", "checkout", ServiceType.LOAD_BALANCER, cluster_ips=(cluster_ip,),
                   load_balancer_ips=ips, load_balancer_hostnames=hostnames,
                   ports=(Port("https", 443),), endpoints=eps)


# --- the registry's index of hostnames --------------------------------------------------


def test_the_registry_knows_which_hostnames_services_use_across_every_change() -> None:
    reg = Registry.for_clusters(["east", "west"])
    reg.replace(ClusterSnapshot.from_services("east", [checkout()]), now=1.0)
    reg.replace(ClusterSnapshot.from_services("west", [checkout(hostnames=("b.example.com",))]),
                now=1.0)
    assert reg.hostnames() == [ELB, "b.example.com"]
    reg.put_service("east", KEY, checkout(hostnames=("c.example.com",)), now=2.0)
    assert reg.hostnames() == ["b.example.com", "c.example.com"]
    reg.put_service("east", KEY, None, now=3.0)
    assert reg.hostnames() == ["b.example.com"]
    reg.remove_cluster("west")
    assert reg.hostnames() == []


def test_resolved_addresses_recompile_every_service_that_uses_the_hostname() -> None:
    reg = Registry.for_clusters(["east"])
    reg.replace(ClusterSnapshot.from_services("east", [checkout()]), now=1.0)
    reg.take_dirty()
    reg.set_resolved(ELB, ("192.0.2.10",))
    assert reg.take_dirty() == [KEY]
    reg.set_resolved(ELB, ("192.0.2.10",))  # no change: nothing to recompile
    assert reg.take_dirty() == []


# --- the resolver, step by step -----------------------------------------------------------


@dataclass
class FakeLookup:
    """Answers from a table; a FeddnsError value is raised instead."""

    answers: dict[tuple[str, str], Answer | FeddnsError] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)

    async def addresses(self, hostname: str, rdtype: str) -> Answer:
        self.asked.append((hostname, rdtype))
        answer = self.answers.get((hostname, rdtype), Answer((), None))
        if isinstance(answer, FeddnsError):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def resolver(lookup: FakeLookup, **settings: float) -> tuple[HostnameResolver, Registry, Clock]:
    reg = Registry.for_clusters(["east"])
    reg.replace(ClusterSnapshot.from_services("east", [checkout()]), now=1.0)
    clock = Clock()
    return HostnameResolver(reg, HostnamesConfig(**settings), clock=clock,
                            lookup=lookup), reg, clock


async def test_a_hostname_resolves_into_the_registry_with_its_ttl_kept_within_bounds() -> None:
    lookup = FakeLookup({(ELB, "A"): Answer(("192.0.2.11", "192.0.2.10"), 60),
                         (ELB, "AAAA"): Answer(("2001:db8::10",), 30)})
    res, reg, clock = resolver(lookup)
    due = await res.step()
    assert reg.resolved[ELB] == ("192.0.2.10", "192.0.2.11", "2001:db8::10")
    assert due == pytest.approx(clock.now + 0.8 * 30)  # the smaller TTL, refreshed before it
    state = res.status()[0]
    assert (state["hostname"], state["ttl"], state["error"]) == (ELB, 30, None)


@pytest.mark.parametrize(("ttl", "kept"), [(0, 5), (1, 5), (60, 60), (86400, 300)])
async def test_the_upstream_ttl_is_honoured_within_min_ttl_and_max_ttl(ttl: int,
                                                                       kept: int) -> None:
    res, _, clock = resolver(FakeLookup({(ELB, "A"): Answer(("192.0.2.10",), ttl)}))
    due = await res.step()
    assert due == pytest.approx(clock.now + 0.8 * kept)
    assert res.status()[0]["expires_in_seconds"] == pytest.approx(kept)


async def test_a_refresh_before_expiry_picks_up_new_addresses() -> None:
    lookup = FakeLookup({(ELB, "A"): Answer(("192.0.2.10",), 60)})
    res, reg, clock = resolver(lookup)
    due = await res.step()
    assert due is not None
    lookup.answers[(ELB, "A")] = Answer(("192.0.2.20",), 60)
    clock.now = due - 1
    await res.step()
    assert reg.resolved[ELB] == ("192.0.2.10",)  # not due yet: nothing asked
    clock.now = due
    await res.step()
    assert reg.resolved[ELB] == ("192.0.2.20",)
    assert lookup.asked.count((ELB, "A")) == 2


@pytest.mark.parametrize("failure", [FeddnsError("timed out"), FeddnsError("NXDOMAIN"), None],
                         ids=["timeout", "nxdomain", "no records"])
async def test_a_failing_refresh_keeps_the_last_good_addresses_for_max_stale_then_drops_them(
        failure: FeddnsError | None) -> None:
    lookup = FakeLookup({(ELB, "A"): Answer(("192.0.2.10",), 60)})
    res, reg, clock = resolver(lookup, max_stale=120.0)
    await res.step()
    expires = clock.now + 60
    lookup.answers = {} if failure is None else {(ELB, "A"): failure, (ELB, "AAAA"): failure}
    attempts = 0
    while clock.now < expires + 119:
        due = await res.step()
        assert due is not None
        attempts += 1
        assert attempts < 1000
        clock.now = min(due, expires + 119)
        assert reg.resolved[ELB] == ("192.0.2.10",), "kept while within max_stale"
    state = res.status()[0]
    assert state["stale"] and state["failing_for_seconds"] > 0 and state["failures"] > 1
    assert state["error"] == (str(failure) if failure else "no usable A or AAAA record")
    clock.now = expires + 120
    await res.step()
    assert ELB not in reg.resolved
    # It comes back with the next good answer.
    lookup.answers = {(ELB, "A"): Answer(("192.0.2.30",), 60)}
    clock.now = (await res.step() or clock.now)
    await res.step()
    assert reg.resolved[ELB] == ("192.0.2.30",)
    assert res.status()[0]["error"] is None


async def test_one_family_failing_keeps_that_familys_last_good_addresses() -> None:
    lookup = FakeLookup({(ELB, "A"): Answer(("192.0.2.10",), 60),
                         (ELB, "AAAA"): Answer(("2001:db8::10",), 60)})
    res, reg, clock = resolver(lookup)
    await res.step()
    lookup.answers = {(ELB, "A"): Answer(("192.0.2.20",), 60),
                      (ELB, "AAAA"): FeddnsError("no server answered (SERVFAIL or refused)")}
    clock.now += 60
    await res.step()
    assert reg.resolved[ELB] == ("192.0.2.20", "2001:db8::10")
    state = res.status()[0]
    assert state["error"] == "AAAA: no server answered (SERVFAIL or refused)"
    assert state["failing_for_seconds"] is None  # the name resolves: not a failure episode


async def test_addresses_no_service_can_have_are_refused() -> None:
    lookup = FakeLookup({(ELB, "A"): Answer(("169.254.169.254", "127.0.0.1", "192.0.2.10"), 60),
                         (ELB, "AAAA"): Answer(("::1", "fe80::1"), 60)})
    res, reg, _ = resolver(lookup)
    await res.step()
    assert reg.resolved[ELB] == ("192.0.2.10",)
    assert res.status()[0]["refused"] == ["127.0.0.1", "169.254.169.254", "::1", "fe80::1"]


async def test_a_hostname_no_longer_used_is_forgotten() -> None:
    res, reg, _ = resolver(FakeLookup({(ELB, "A"): Answer(("192.0.2.10",), 60)}))
    await res.step()
    reg.put_service("east", KEY, checkout(hostnames=()), now=5.0)
    assert await res.step() is None
    assert reg.resolved == {} and res.status() == []


# --- answers --------------------------------------------------------------------------------


def fed_with(data: dict[str, list[Service]], **overrides: object) -> Federation:
    return federation(data, settings=settings_for(list(data), **overrides))


def test_a_hostname_only_load_balancer_answers_nothing_until_resolved_then_its_addresses(
        ) -> None:
    fed = fed_with({"east": [checkout()]})
    # Not its cluster IP: other clusters seldom reach it (issue #13).
    check(fed.table, Case(NAME, "A", authority=NEG))
    fed.registry.set_resolved(ELB, ("192.0.2.10", "192.0.2.11", "2001:db8::10"))
    fed.sync()
    serial_soa = (NEG[0].replace(" 2000 ", " 2001 "),)
    check(fed.table, Case(NAME, "A", answer=(f"{NAME} 5 IN A 192.0.2.10",
                                             f"{NAME} 5 IN A 192.0.2.11")))
    # The load balancer's own IPv6 address answers though the service has no IPv6
    # endpoint: the cloud load balancer translates families.
    check(fed.table, Case(NAME, "AAAA", answer=(f"{NAME} 5 IN AAAA 2001:db8::10",)))
    fed.registry.set_resolved(ELB, ())
    fed.sync()
    check(fed.table, Case(NAME, "A", authority=(serial_soa[0].replace(" 2001 ", " 2002 "),)))


def test_clusters_mixing_ingress_ips_and_hostnames_answer_both_as_a_records() -> None:
    fed = fed_with({"east": [checkout(ips=("203.0.113.20",), hostnames=())],
                    "west": [checkout(cluster_ip="10.96.3.20")]})
    fed.registry.set_resolved(ELB, ("198.51.100.20",))
    fed.sync()
    check(fed.table, Case(NAME, "A", answer=(f"{NAME} 5 IN A 203.0.113.20",
                                             f"{NAME} 5 IN A 198.51.100.20")))


def test_an_origin_answering_cluster_ips_ignores_the_hostnames() -> None:
    fed = fed_with({"east": [checkout()]},
                   origins=[{"name": "clusterset.local.", "service_address": "cluster-ip"}])
    fed.registry.set_resolved(ELB, ("192.0.2.10",))
    fed.sync()
    check(fed.table, Case(NAME, "A", answer=(f"{NAME} 5 IN A 10.96.1.20",)))


def test_a_load_balancer_with_nothing_ready_is_not_answered_by_its_hostname_either() -> None:
    svc = checkout()
    fed = fed_with({"east": [Service(svc.namespace, svc.name, svc.type,
                                     cluster_ips=svc.cluster_ips,
                                     load_balancer_hostnames=(ELB,), ports=svc.ports,
                                     endpoints=(Endpoint("10.1.1.21", ready=False,
                                                         serving=False),))]})
    fed.registry.set_resolved(ELB, ("192.0.2.10",))
    fed.sync()
    check(fed.table, Case(NAME, "A", authority=(NEG[0].replace(" 2000 ", " 2001 "),)))
