"""Reverse zones and PTR records, as case tables.

Reverse zones come from ``reverse.zones`` and (``reverse.derive``, off by default)
every cluster's ``networks`` and ``service_cidrs``; in them, every address feddns
answers has a PTR: a service's cluster IPs and load-balancer addresses point at
the service name, a headless endpoint's addresses at its per-endpoint name; an
address owned by several names answers all of them. Outside every reverse zone:
REFUSED, as before. No sockets, no clocks.
"""

from __future__ import annotations

from typing import Any

import pytest

from feddns.config import Settings
from feddns.model.services import Endpoint, Port, Service, ServiceType
from feddns.table.reverse import zone_names
from tests.unit.dnscase import Case, Federation, check, federation

ORIGIN = "clusterset.local."
WEB = f"web.shop.svc.{ORIGIN}"
API = f"api.shop.svc.{ORIGIN}"
DB = f"db.data.svc.{ORIGIN}"


def soa(zone: str, serial: int = 2000) -> str:
    return (f"{zone} 5 IN SOA ns.{ORIGIN} hostmaster.{ORIGIN} {serial} 3600 600 86400 5")


@pytest.mark.parametrize(("networks", "zones"), [
    (["10.96.0.0/12"], [f"{n}.10.in-addr.arpa." for n in range(96, 112)]),
    (["10.1.0.0/16", "10.1.1.0/24"], ["1.10.in-addr.arpa."]),
    (["10.1.2.0/24"], ["2.1.10.in-addr.arpa."]),
    (["10.1.2.128/25"], ["2.1.10.in-addr.arpa."]),
    (["10.64.0.0/10"], ["10.in-addr.arpa."]),
    (["fd00:96::/32"], ["6.9.0.0.0.0.d.f.ip6.arpa."]),
    (["fd00:1:1::/48", "fd00:1::/32"], ["1.0.0.0.0.0.d.f.ip6.arpa."]),
    (["0.0.0.0/0"], []),
])
def test_networks_become_whole_reverse_zones(networks: list[str], zones: list[str]) -> None:
    assert sorted(zone_names(networks)) == sorted(zones)


def cluster(name: str, *, networks: list[str], service_cidrs: list[str]) -> dict[str, Any]:
    return {"name": name, "region": "r1", "zones": ["z1"],
            "source": {"type": "static", "file": "/nonexistent/services.yaml"},
            "networks": [{"cidr": c} for c in networks], "service_cidrs": service_cidrs}


CLUSTERS = [
    cluster("east", networks=["10.1.0.0/16"], service_cidrs=["10.96.1.0/24"]),
    cluster("west.prod", networks=["10.3.0.0/16", "fd00:3::/32"],
            service_cidrs=["10.96.3.0/24", "fd00:96::/32"]),
]


def web(ip: str, *, ready: bool = True) -> Service:
    return Service("shop", "web", cluster_ips=(ip,), ports=(Port("http", 80),),
                   endpoints=(Endpoint("10.1.1.11", ready=ready, serving=ready),))


def db(cluster_net: str) -> Service:
    return Service("data", "db", ServiceType.HEADLESS, ports=(Port("pg", 5432),), endpoints=(
        Endpoint(f"{cluster_net}.2.10", hostname="db-0"),
        Endpoint(f"{cluster_net}.2.11", hostname="db-1", ready=False, serving=False)))


def fed_for(data: dict[str, list[Service]], **overrides: Any) -> Federation:
    settings = Settings.model_validate({"clusters": CLUSTERS, "reverse": {"derive": True},
                                        **overrides})
    return federation({c["name"]: data.get(c["name"], []) for c in CLUSTERS},
                      settings=settings)


@pytest.fixture
def fed() -> Federation:
    return fed_for({
        "east": [web("10.96.1.10"), db("10.1"),
                 Service("shop", "checkout", ServiceType.LOAD_BALANCER,
                         cluster_ips=("10.96.1.20",), load_balancer_ips=("10.3.200.20",),
                         endpoints=(Endpoint("10.1.1.21"),))],
        "west.prod": [web("10.96.3.10"), db("10.3"),
                      Service("shop", "api", cluster_ips=("10.96.3.30", "fd00:96::30"),
                              endpoints=(Endpoint("10.3.1.31"),
                                         Endpoint("fd00:3::31")))],
    })


POD_SOA = soa("1.10.in-addr.arpa.")

CASES = [
    Case("10.1.96.10.in-addr.arpa.", "PTR", answer=(f"10.1.96.10.in-addr.arpa. 5 IN PTR {WEB}",)),
    Case("10.3.96.10.in-addr.arpa.", "PTR", answer=(f"10.3.96.10.in-addr.arpa. 5 IN PTR {WEB}",)),
    Case("30.3.96.10.in-addr.arpa.", "PTR", answer=(f"30.3.96.10.in-addr.arpa. 5 IN PTR {API}",)),
    Case("0.3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa.", "PTR",
         answer=("0.3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa. 5 IN"
                 f" PTR {API}",)),
    # A headless endpoint: its per-endpoint name, with the cluster in it.
    Case("10.2.1.10.in-addr.arpa.", "PTR",
         answer=(f"10.2.1.10.in-addr.arpa. 5 IN PTR db-0.east.{DB}",)),
    Case("10.2.3.10.in-addr.arpa.", "PTR",
         answer=(f"10.2.3.10.in-addr.arpa. 5 IN PTR db-0.west.prod.{DB}",)),
    # A load-balancer address inside a reverse zone (west.prod's network here).
    Case("20.200.3.10.in-addr.arpa.", "PTR",
         answer=(f"20.200.3.10.in-addr.arpa. 5 IN PTR checkout.shop.svc.{ORIGIN}",)),
    # An unready endpoint has no name, so no PTR; a pod IP of a ClusterIP service is not
    # an address feddns answers.
    Case("11.2.1.10.in-addr.arpa.", "PTR", rcode="NXDOMAIN", authority=(POD_SOA,)),
    Case("11.1.1.10.in-addr.arpa.", "PTR", rcode="NXDOMAIN", authority=(POD_SOA,)),
    # Another type on a PTR name: NODATA. The zone apex: SOA and NS.
    Case("10.1.96.10.in-addr.arpa.", "A", authority=(soa("1.96.10.in-addr.arpa."),)),
    Case("1.96.10.in-addr.arpa.", "SOA", answer=(
        soa("1.96.10.in-addr.arpa.").replace(" 5 IN ", " 30 IN "),)),
    Case("1.96.10.in-addr.arpa.", "NS", answer=(f"1.96.10.in-addr.arpa. 30 IN NS ns.{ORIGIN}",)),
    # Outside every reverse zone: REFUSED, as before.
    Case("10.2.96.10.in-addr.arpa.", "PTR", rcode="REFUSED", aa=False),
    Case("8.8.8.8.in-addr.arpa.", "PTR", rcode="REFUSED", aa=False),
    Case("in-addr.arpa.", "SOA", rcode="REFUSED", aa=False),
]


@pytest.mark.parametrize("full", [False, True], ids=["fast-path", "full-path"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_reverse_lookups_answer_each_case(fed: Federation, case: Case, full: bool) -> None:
    check(fed.table, case, full=full)


def test_an_address_owned_by_several_names_answers_all_of_them() -> None:
    # The same cluster IP for two services in two clusters (both use 10.96.0.0/12).
    shared = fed_for({"east": [web("10.96.1.10")],
                      "west.prod": [Service("shop", "cart", cluster_ips=("10.96.1.10",),
                                            endpoints=(Endpoint("10.3.1.1"),))]})
    check(shared.table, Case("10.1.96.10.in-addr.arpa.", "PTR", answer=(
        f"10.1.96.10.in-addr.arpa. 5 IN PTR {WEB}",
        f"10.1.96.10.in-addr.arpa. 5 IN PTR cart.shop.svc.{ORIGIN}")))
    # One of them goes: the other stays.
    shared.load("west.prod", [])
    shared.sync()
    check(shared.table, Case("10.1.96.10.in-addr.arpa.", "PTR", answer=(
        f"10.1.96.10.in-addr.arpa. 5 IN PTR {WEB}",)))
    shared.load("east", [])
    shared.sync()
    check(shared.table, Case("10.1.96.10.in-addr.arpa.", "PTR", rcode="NXDOMAIN",
                             authority=(soa("1.96.10.in-addr.arpa.", 2002),)))


def test_a_service_with_nothing_ready_still_owns_its_cluster_ip() -> None:
    fed = fed_for({"east": [web("10.96.1.10", ready=False)]})
    check(fed.table, Case("10.1.96.10.in-addr.arpa.", "PTR",
                          answer=(f"10.1.96.10.in-addr.arpa. 5 IN PTR {WEB}",)))


def test_every_origin_and_the_pinned_name_when_served_are_pointed_at() -> None:
    fed = fed_for({"east": [web("10.96.1.10")]},
                  origins=[{"name": ORIGIN}, {"name": "example.internal."}],
                  names={"cluster_pinned": True})
    check(fed.table, Case("10.1.96.10.in-addr.arpa.", "PTR", answer=tuple(
        f"10.1.96.10.in-addr.arpa. 5 IN PTR {name}" for name in (
            WEB, f"east.{WEB}", "web.shop.svc.example.internal.",
            "east.web.shop.svc.example.internal."))))


def test_configured_zones_alone_when_derivation_is_off() -> None:
    fed = fed_for({"east": [web("10.96.1.10"), db("10.1")]},
                  reverse={"zones": ["10.96.0.0/12"], "derive": False})
    check(fed.table, Case("10.1.96.10.in-addr.arpa.", "PTR",
                          answer=(f"10.1.96.10.in-addr.arpa. 5 IN PTR {WEB}",)))
    check(fed.table, Case("10.2.1.10.in-addr.arpa.", "PTR", rcode="REFUSED", aa=False))


def test_no_reverse_zone_unless_asked_for() -> None:
    fed = federation({"c1": [web("10.96.1.10")]})
    check(fed.table, Case("10.1.96.10.in-addr.arpa.", "PTR", rcode="REFUSED", aa=False))
    fed = fed_for({"east": [web("10.96.1.10")]}, reverse={"derive": False})
    check(fed.table, Case("10.1.96.10.in-addr.arpa.", "PTR", rcode="REFUSED", aa=False))
