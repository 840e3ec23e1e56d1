"""Real clusters' data through the Kubernetes source: the official client, fake API servers.

Issue #13: a hostname-only load balancer (EKS) answers what its hostname resolves
to, resolved by feddns against a real DNS server on loopback (dnsmasq), refreshed
when it moves and kept (and shown in ``/debug``) when the server stops answering;
ExternalName services answer a CNAME; ``trafficDistribution`` reaches the plan.
Nothing leaves the machine; every wait is a bounded poll.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.rcode
import pytest
import yaml

from feddns.config import load_settings
from tests.fakekube import FakeFederation, make_endpointslice, make_service
from tests.localdns import LocalDns, local_dns
from tests.support import ServerThread, ask, http_get, make_query, records, wait_until

pytest_plugins = ["tests.fakekube.fixtures"]

ELB = "a1b2c3-1234567890.us-east-1.elb.amazonaws.com"
CHECKOUT = "checkout.shop.svc.clusterset.local."


def answer(port: int, name: str, qtype: str = "A") -> list[str] | str:
    """The rdata answered (sorted), or the rcode text when not NOERROR."""
    reply = ask(port, make_query(name, qtype))
    if reply.rcode() != dns.rcode.NOERROR:
        return dns.rcode.to_text(reply.rcode())
    return sorted(line.split(None, 4)[4] for line in records(reply))


def config_for(tmp: Path, fed: FakeFederation, **extra: Any) -> Path:
    kubeconfig = fed.write_kubeconfig(tmp / "kubeconfig")
    cfg: dict[str, Any] = {
        "dns": {"listen": ["127.0.0.1:0"]},
        "observe": {"listen": "127.0.0.1:0"},
        "selection": {"hold_down": 3600, "readmit_after": 0},
        "clusters": [
            {"name": c.name, "region": f"r{i}", "zones": [f"z{i}"],
             "networks": [{"cidr": f"10.{i}.0.0/16"}],
             "source": {"type": "kubernetes", "kubeconfig": str(kubeconfig),
                        "context": c.name, "read_timeout": 1.0, "backoff_max": 0.5}}
            for i, c in enumerate(fed, start=1)
        ],
        **extra,
    }
    path = tmp / "feddns.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def checkout(fed: FakeFederation, cluster: str, *, lb_ips: list[str] | None = None,
             lb_hostnames: list[str] | None = None, cluster_ip: str) -> None:
    fed[cluster].apply_service(make_service(
        "shop", "checkout", type="LoadBalancer", cluster_ips=[cluster_ip],
        lb_ips=lb_ips, lb_hostnames=lb_hostnames, ports=[{"name": "https", "port": 443}]))
    fed[cluster].apply_endpointslice(make_endpointslice(
        "shop", "checkout-1", "checkout", endpoints=[{"addresses": [cluster_ip.replace(
            "10.96", "10.200")]}], ports=[{"name": "https", "port": 8443}]))


@pytest.fixture
def elb_dns(tmp_path: Path) -> Iterator[LocalDns]:
    folder = tmp_path / "dns"
    folder.mkdir()
    with local_dns(folder, {ELB: ["192.0.2.10", "192.0.2.11", "2001:db8::10"]},
                   ttl=1) as server:
        yield server


@pytest.fixture
def federation(fake_federation_factory: Callable[..., FakeFederation]) -> FakeFederation:
    fed = fake_federation_factory(("east", "west.prod"))
    checkout(fed, "east", lb_hostnames=[ELB], cluster_ip="10.96.1.20")
    checkout(fed, "west.prod", lb_ips=["198.51.100.20"], cluster_ip="10.96.3.20")
    return fed


@pytest.fixture
def feddns(tmp_path: Path, federation: FakeFederation,
           elb_dns: LocalDns) -> Iterator[ServerThread]:
    config = config_for(tmp_path, federation, hostnames={
        "nameservers": [f"127.0.0.1:{elb_dns.port}"], "min_ttl": 1, "max_stale": 3600})
    with ServerThread(load_settings(config)) as server:
        yield server


def hostnames_debug(server: ServerThread) -> list[dict[str, Any]]:
    status, body = http_get(server, "/debug")
    assert status == 200
    return json.loads(body)["hostnames"]  # type: ignore[no-any-return]


def test_a_hostname_only_load_balancer_answers_the_addresses_its_hostname_resolves_to(
        feddns: ServerThread) -> None:
    wait_until(lambda: answer(feddns.port, CHECKOUT) == ["192.0.2.10", "192.0.2.11",
                                                          "198.51.100.20"], timeout=15)
    # The load balancer's own IPv6 address too (the service has no IPv6 endpoint: the
    # cloud load balancer translates); never the cluster IP 10.96.1.20.
    assert answer(feddns.port, CHECKOUT, "AAAA") == ["2001:db8::10"]
    (state,) = hostnames_debug(feddns)
    assert state["hostname"] == ELB and state["error"] is None
    assert state["addresses"] == ["192.0.2.10", "192.0.2.11", "2001:db8::10"]


def test_a_moved_hostname_is_followed_and_a_dead_resolver_keeps_the_last_good_addresses(
        feddns: ServerThread, elb_dns: LocalDns) -> None:
    wait_until(lambda: "192.0.2.10" in answer(feddns.port, CHECKOUT), timeout=15)
    elb_dns.move({ELB: ["192.0.2.50"]})
    # TTL 1 s, refreshed before it runs out: the move shows within a few seconds.
    wait_until(lambda: answer(feddns.port, CHECKOUT) == ["192.0.2.50", "198.51.100.20"],
               timeout=15)
    elb_dns.stop()
    wait_until(lambda: (hostnames_debug(feddns)[0]["error"] or "") != "", timeout=15)
    state = hostnames_debug(feddns)[0]
    assert state["addresses"] == ["192.0.2.50"] and state["failures"] >= 1
    assert answer(feddns.port, CHECKOUT) == ["192.0.2.50", "198.51.100.20"]


def test_external_name_services_answer_a_cname_to_the_nearest_clusters_name(
        feddns: ServerThread, federation: FakeFederation) -> None:
    federation["east"].apply_service(make_service(
        "shop", "billing", type="ExternalName", external_name="billing.east.example.com"))
    federation["west.prod"].apply_service(make_service(
        "shop", "billing", type="ExternalName", external_name="Billing.West.example.com."))
    name = "billing.shop.svc.clusterset.local."
    wait_until(lambda: answer(feddns.port, name) == ["billing.east.example.com."], timeout=15)
    # A west client (ECS is not trusted here: ask from the server's view through
    # _explain, which lists both targets). The two clusters' watches are independent:
    # west's service may arrive after east's answer is served (seen with both cores busy).

    def explained() -> str:
        return " ".join(records(ask(feddns.port, make_query("_explain." + name, "TXT"))))

    wait_until(lambda: "CNAME billing.west.example.com." in explained(), timeout=15)
    lines = explained()
    assert "CNAME billing.east.example.com." in lines
    assert "CNAME billing.west.example.com." in lines
    assert answer(feddns.port, name) == ["billing.east.example.com."], "east stays nearest"


def test_traffic_distribution_reaches_the_services_view(feddns: ServerThread,
                                                        federation: FakeFederation) -> None:
    federation["east"].apply_service(make_service(
        "shop", "cart", cluster_ips=["10.96.1.40"], ports=[{"name": "http", "port": 80}],
        traffic_distribution="PreferClose"))

    def view() -> dict[str, Any] | None:
        status, body = http_get(feddns, "/debug?service=shop/cart")
        return json.loads(body) if status == 200 else None

    wait_until(lambda: view() is not None, timeout=15)
    got = view()
    assert got is not None
    assert got["clusters"][0]["traffic_distribution"] == "PreferClose"


def cart(fed: FakeFederation, cluster: str, name: str, *, ready: int, cluster_ip: str,
         traffic: str | None) -> None:
    fed[cluster].apply_service(make_service("shop", name, cluster_ips=[cluster_ip],
                                            ports=[{"name": "http", "port": 80}],
                                            traffic_distribution=traffic))
    fed[cluster].apply_endpointslice(make_endpointslice(
        "shop", f"{name}-1", name, ports=[{"name": "http", "port": 8080}],
        endpoints=[{"addresses": [f"{cluster_ip.rsplit('.', 1)[0]}.{100 + n}"]}
                   for n in range(ready)]))


def leads(port: int, name: str) -> dict[str, float]:
    """The share of answers each address leads, over every query ID low byte."""
    counts: dict[str, int] = {}
    for qid in range(256):
        q = make_query(name, "A")
        q.id = qid * 257
        first = ask(port, q).answer[0][0].to_text()
        counts[first] = counts.get(first, 0) + 1
    return {a: n / 256 for a, n in counts.items()}


def test_capacity_aware_answers_spill_by_measured_demand_unless_the_service_prefers_close(
        tmp_path: Path, fake_federation_factory: Callable[..., FakeFederation]) -> None:
    fed = fake_federation_factory(("east", "west.prod"))
    for name, traffic in (("cart", None), ("cart-close", "PreferClose")):
        ips = {"east": f"10.96.1.{len(name)}", "west.prod": f"10.96.2.{len(name)}"}
        cart(fed, "east", name, ready=1, cluster_ip=ips["east"], traffic=traffic)
        cart(fed, "west.prod", name, ready=9, cluster_ip=ips["west.prod"], traffic=traffic)
    config = config_for(tmp_path, fed, selection={
        "hold_down": 3600, "readmit_after": 0, "capacity_aware": True, "demand_window": 0.6})
    raw = yaml.safe_load(config.read_text())
    # This test's queries come from 127.0.0.1: east's clients, all of the demand.
    raw["clusters"][0]["networks"] = [{"cidr": "127.0.0.0/8"}]
    config.write_text(yaml.safe_dump(raw))
    with ServerThread(load_settings(config)) as server:
        name = "cart.shop.svc.clusterset.local."
        wait_until(lambda: answer(server.port, name) == ["10.96.1.4", "10.96.2.4"], timeout=15)
        # feddns measures where its queries come from (all from east) and spills what
        # east's one endpoint of ten cannot hold: it keeps 1/10 x 1.1 of the demand.
        wait_until(lambda: leads(server.port, name).get("10.96.1.4", 1.0) < 0.2, timeout=20)
        share = leads(server.port, name)
        assert abs(share.get("10.96.1.4", 0.0) - 0.11) <= 0.05, share
        close = leads(server.port, "cart-close.shop.svc.clusterset.local.")
        assert close == {"10.96.1.10": 1.0}  # PreferClose: the nearest tier, whatever the load
