"""Kubernetes JSON is converted at the door, with EndpointSlice nil rules and annotations."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feddns.model.services import ServicePolicy, ServiceType
from feddns.sources.kubernetes.converting import (
    build_service,
    canonical_address,
    policy_from_annotations,
    service_info,
    slice_info,
)
from tests.fakekube import make_endpointslice, make_service


def test_nil_conditions_mean_ready_serving_and_not_terminating() -> None:
    obj = make_endpointslice("ns", "s-1", "s", endpoints=[
        {"addresses": ["10.0.0.1"], "conditions": {}},
        {"addresses": ["10.0.0.2"], "conditions": {"ready": False, "serving": True,
                                                   "terminating": True}},
    ])
    info = slice_info(obj)
    assert info is not None
    first, second = info.endpoints
    assert (first.ready, first.serving, first.terminating) == (True, True, False)
    assert (second.ready, second.serving, second.terminating) == (False, True, True)


def test_fqdn_slices_are_ignored() -> None:
    assert slice_info(make_endpointslice("ns", "s-1", "s", address_type="FQDN",
                                         endpoints=[{"addresses": ["db.example.com"]}])) is None


def test_an_external_name_service_keeps_its_name_canonical_and_has_no_addresses() -> None:
    info = service_info(make_service("ns", "ext", type="ExternalName",
                                     external_name="DB.Example.com."))
    assert info is not None
    assert info.type is ServiceType.EXTERNAL_NAME
    assert info.external_name == "db.example.com"
    assert (info.cluster_ips, info.load_balancer_ips, info.ports) == ((), (), ())
    svc = build_service(info, [])
    assert svc.external_name == "db.example.com" and svc.endpoints == ()


@pytest.mark.parametrize("name", ["", "localhost", "bad_label-.example.com", "a" * 64 + ".com",
                                  "x..example.com"])
def test_an_external_name_service_with_an_unusable_name_is_left_out(name: str) -> None:
    obj = make_service("ns", "ext", type="ExternalName")
    obj["spec"]["externalName"] = name
    assert service_info(obj) is None


def test_load_balancer_ingress_hostnames_are_kept_beside_ingress_ips() -> None:
    only_host = service_info(make_service(
        "ns", "lb", type="LoadBalancer", cluster_ips=["10.96.0.1"],
        lb_hostnames=["A1B2-123.us-east-1.ELB.amazonaws.com", "not a host"]))
    assert only_host is not None
    assert only_host.load_balancer_hostnames == ("a1b2-123.us-east-1.elb.amazonaws.com",)
    assert only_host.load_balancer_ips == ()
    both = make_service("ns", "lb", type="LoadBalancer", lb_ips=["203.0.113.1"])
    both["status"]["loadBalancer"]["ingress"][0]["hostname"] = "lb.example.com"
    info = service_info(both)
    assert info is not None
    # An entry with an IP is answered by its IP: its hostname is only a label for it.
    assert (info.load_balancer_ips, info.load_balancer_hostnames) == (("203.0.113.1",), ())
    cluster_ip = service_info(make_service("ns", "c", lb_hostnames=["lb.example.com"]))
    assert cluster_ip is not None and cluster_ip.load_balancer_hostnames == ()


@pytest.mark.parametrize(("value", "expected"), [
    ("PreferClose", "PreferClose"), ("PreferSameZone", "PreferSameZone"), (None, None),
    (7, None)])
def test_traffic_distribution_is_kept_as_the_service_says_it(value: object,
                                                             expected: str | None) -> None:
    obj = make_service("ns", "s", traffic_distribution=value if isinstance(value, str)
                       else None)
    if value is not None and not isinstance(value, str):
        obj["spec"]["trafficDistribution"] = value  # not a string: ignored
    info = service_info(obj)
    assert info is not None and info.traffic_distribution == expected
    assert build_service(info, []).traffic_distribution == expected


def test_headless_load_balancer_and_cluster_ip_services_are_told_apart() -> None:
    assert service_info(make_service("ns", "h", headless=True)).type is ServiceType.HEADLESS
    lb = service_info(make_service("ns", "lb", type="LoadBalancer", cluster_ips=["10.96.0.1"],
                                   lb_ips=["203.0.113.1"]))
    assert lb is not None and lb.load_balancer_ips == ("203.0.113.1",)
    assert lb.type is ServiceType.LOAD_BALANCER


def test_endpoints_of_all_slices_are_merged_without_duplicates() -> None:
    info = service_info(make_service("ns", "s", cluster_ips=["10.96.0.1"]))
    a = slice_info(make_endpointslice("ns", "s-1", "s", endpoints=[{"addresses": ["10.0.0.1"]}]))
    b = slice_info(make_endpointslice("ns", "s-2", "s", endpoints=[
        {"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]))
    assert info is not None and a is not None and b is not None
    svc = build_service(info, [a, b])
    assert sorted(e.address for e in svc.endpoints) == ["10.0.0.1", "10.0.0.2"]


def test_feddns_annotations_become_the_service_policy() -> None:
    info = service_info(make_service("ns", "s", cluster_ips=["10.96.0.1"], annotations={
        "feddns.io/weights": "east=90, west.prod=10",
        "feddns.io/regions": "us-east,eu-west",
        "feddns.io/none-healthy": "servfail",
    }))
    assert info is not None
    assert info.policy == ServicePolicy((("east", 90.0), ("west.prod", 10.0)),
                                        ("us-east", "eu-west"), "servfail")


def test_shares_answer_mode_and_capacity_annotations_become_the_service_policy() -> None:
    policy = policy_from_annotations({
        "feddns.io/shares": "west.prod=10, east-b=5%",
        "feddns.io/answer-mode": "subset",
        "feddns.io/capacity-aware": "True",
    })
    assert policy == ServicePolicy(shares=(("west.prod", 10.0), ("east-b", 5.0)),
                                   answer_mode="subset", capacity_aware=True)
    assert policy_from_annotations({"feddns.io/capacity-aware": "false"}) == ServicePolicy(
        capacity_aware=False)


def test_kubernetes_topology_aware_routing_asks_for_capacity_aware_answers() -> None:
    auto = {"service.kubernetes.io/topology-mode": "Auto"}
    assert policy_from_annotations(auto) == ServicePolicy(capacity_aware=True)
    # An explicit feddns annotation wins.
    assert policy_from_annotations({**auto, "feddns.io/capacity-aware": "false"}) == \
        ServicePolicy(capacity_aware=False)


@pytest.mark.parametrize("annotations", [
    {"feddns.io/shares": "west=101"}, {"feddns.io/shares": "west=60,east=50"},
    {"feddns.io/shares": "west"}, {"feddns.io/shares": "west=-1"},
    {"feddns.io/answer-mode": "random"}, {"feddns.io/capacity-aware": "maybe"},
])
def test_malformed_policy_annotations_are_ignored(annotations: dict[str, str]) -> None:
    assert policy_from_annotations(annotations) is None


@pytest.mark.parametrize("weights", ["east", "east=-1", "east=x", "=3"])
def test_malformed_weight_annotations_are_ignored(weights: str) -> None:
    assert policy_from_annotations({"feddns.io/weights": weights}) is None


@given(st.one_of(st.ip_addresses().map(str), st.ip_addresses().map(lambda a: a.exploded),
                 st.ip_addresses(v=6).map(lambda a: str(a).upper()),
                 st.text(alphabet="0123456789abcdef:.x%", max_size=45), st.text(max_size=20)))
def test_an_address_is_normalised_exactly_as_ipaddress_does(value: str) -> None:
    try:
        expected: str | None = str(ipaddress.ip_address(value))
    except ValueError:
        expected = None
    assert canonical_address(value) == expected


def test_endpoint_addresses_are_canonical_and_bad_ones_dropped() -> None:
    info = slice_info(make_endpointslice("shop", "web-1", "web", endpoints=[
        {"addresses": ["10.1.0.1", "010.1.0.2", "FD00::0001", "nope", "10.1.0.1"],
         "conditions": {"ready": True}}]))
    assert info is not None
    assert [e.address for e in info.endpoints] == ["10.1.0.1", "fd00::1"]


def test_the_collector_pause_nests_and_restores_the_collector() -> None:
    import gc

    from feddns.sources.kubernetes.watching import collector_paused

    assert gc.isenabled()
    with collector_paused():
        with collector_paused():  # a second watch thread converting at the same time
            assert not gc.isenabled()
        assert not gc.isenabled()  # the first one is still converting
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # off before: left off
    finally:
        gc.enable()
