"""ExternalName services: a CNAME to the external name, and nothing else at the name.

The name of an ExternalName service answers every type with a CNAME to the
external name (CoreDNS's kubernetes plugin does the same in one cluster); the
resolver follows it, so no SOA of ours speaks for a target outside our origins.
When clusters disagree on the external name, the nearest cluster's name wins
(then the configured order): one name, one target, never a rotation. The
first cluster in configured order decides whether the service is an
ExternalName one at all (as for headlessness): a CNAME is never mixed with
the addresses other clusters have for the service. The federation is the one
of ``test_policy``.
"""

from __future__ import annotations

import dns.edns
import dns.rcode
import pytest

from feddns.model.registry import ClusterState
from feddns.model.services import Service, ServiceType
from tests.unit.dnscase import Case, check, query, section
from tests.unit.test_policy import (
    CLUSTER_IP,
    EAST_A,
    NEG,
    NORTH,
    ORIGIN,
    OUTSIDE,
    SOUTH,
    WEST_C,
    located,
    txt_lines,
    web,
)

BILLING = f"billing.shop.svc.{ORIGIN}"


def billing(target: str) -> Service:
    return Service("shop", "billing", ServiceType.EXTERNAL_NAME, external_name=target)


CNAME_TYPES = ["A", "AAAA", "SRV", "TXT", "MX", "CNAME", "ANY"]


@pytest.mark.parametrize("full", [False, True], ids=["fast-path", "full-path"])
@pytest.mark.parametrize("qtype", CNAME_TYPES)
def test_every_type_gets_the_cname_and_no_soa_for_a_target_outside_our_origins(
        qtype: str, full: bool) -> None:
    fed = located({"east": [billing("billing.example.com")]})
    check(fed.table, Case(BILLING, qtype, answer=(f"{BILLING} 5 IN CNAME billing.example.com.",)),
          full=full, addr=(EAST_A, 1))


DISAGREEING = {"east": "east.billing.example.com", "west": "west.billing.example.com",
               "north": "us.billing.example.com"}

CHOICES = [
    pytest.param(EAST_A, "east.billing.example.com", id="east's own cluster's name"),
    pytest.param(WEST_C, "west.billing.example.com", id="west's own cluster's name"),
    pytest.param(SOUTH, "east.billing.example.com",
                 id="no name in south: the region's, east first in configured order"),
    pytest.param(NORTH, "us.billing.example.com", id="north's own"),
    pytest.param(OUTSIDE, "east.billing.example.com",
                 id="an unknown client: the first cluster in configured order"),
]


@pytest.mark.parametrize(("client", "target"), CHOICES)
def test_when_clusters_disagree_the_nearest_clusters_name_answers(client: str,
                                                                  target: str) -> None:
    fed = located({c: [billing(t)] for c, t in DISAGREEING.items()})
    check(fed.table, Case(BILLING, "A", answer=(f"{BILLING} 5 IN CNAME {target}.",)),
          addr=(client, 1))


def test_a_stale_clusters_name_answers_only_when_no_fresh_cluster_has_one() -> None:
    fed = located({c: [billing(t)] for c, t in DISAGREEING.items()})
    fed.registry.set_state("east", ClusterState.STALE, now=5.0)
    fed.sync()
    check(fed.table, Case(BILLING, "A",
                          answer=(f"{BILLING} 5 IN CNAME west.billing.example.com.",)),
          addr=(EAST_A, 1))
    for cluster in ("west", "north"):
        fed.registry.set_state(cluster, ClusterState.STALE, now=5.0)
    fed.sync()
    msg = query(fed.table, BILLING, "A", addr=(EAST_A, 1))
    assert section(msg) == [f"{BILLING} 30 IN CNAME east.billing.example.com."]
    assert any(isinstance(o, dns.edns.EDEOption) and o.code == dns.edns.EDECode.STALE_ANSWER
               for o in msg.options)


def test_the_first_configured_cluster_decides_and_the_kinds_are_never_mixed() -> None:
    # east (first) says ExternalName: west's cluster IP never joins the CNAME.
    fed = located({"east": [billing("billing.example.com")],
                   "west": [Service("shop", "billing", cluster_ips=(CLUSTER_IP["west"],))]})
    for client in (EAST_A, WEST_C):
        check(fed.table, Case(BILLING, "A", answer=(f"{BILLING} 5 IN CNAME billing.example.com.",)),
              addr=(client, 1))
    # west (not first) says ExternalName: east's addresses answer, no CNAME anywhere.
    fed = located({"east": [web("east")],
                   "west": [Service("shop", "web", ServiceType.EXTERNAL_NAME,
                                    external_name="web.example.com")]})
    web_name = f"web.shop.svc.{ORIGIN}"
    for client in (EAST_A, WEST_C):
        check(fed.table, Case(web_name, "A", answer=(f"{web_name} 5 IN A {CLUSTER_IP['east']}",)),
              addr=(client, 1))


def test_a_target_inside_our_origins_is_followed_in_the_same_answer() -> None:
    web_name = f"web.shop.svc.{ORIGIN}"
    fed = located({"east": [billing(web_name), web("east")]})
    check(fed.table, Case(BILLING, "A", answer=(
        f"{BILLING} 5 IN CNAME {web_name}", f"{web_name} 5 IN A {CLUSTER_IP['east']}")),
        addr=(EAST_A, 1))
    # Asked for the CNAME itself: only the CNAME.
    check(fed.table, Case(BILLING, "CNAME", answer=(f"{BILLING} 5 IN CNAME {web_name}",)),
          addr=(EAST_A, 1))


def test_no_names_exist_below_an_external_name_service() -> None:
    fed = located({"east": [billing("billing.example.com")]})
    check(fed.table, Case(f"_http._tcp.{BILLING}", "SRV", rcode="NXDOMAIN", authority=NEG),
          addr=(EAST_A, 1))
    check(fed.table, Case(f"east.{BILLING}", "A", rcode="NXDOMAIN", authority=NEG),
          addr=(EAST_A, 1))


def test_a_changed_target_changes_every_type_memoized_before() -> None:
    # Regression: any type gets the CNAME, and answers of types a change does not forget
    # must not be memoized (an MX answer outlived the target's change).
    fed = located({"east": [billing("old.example.com")]})
    for qtype in ("A", "MX"):
        assert section(query(fed.table, BILLING, qtype, addr=(EAST_A, 1))) == [
            f"{BILLING} 5 IN CNAME old.example.com."]
    fed.load("east", [billing("new.example.com")])
    fed.sync()
    for qtype in ("A", "MX"):
        assert section(query(fed.table, BILLING, qtype, addr=(EAST_A, 1))) == [
            f"{BILLING} 5 IN CNAME new.example.com."]


def test_residency_applies_to_the_external_names_too() -> None:
    fed = located({c: [billing(t)] for c, t in DISAGREEING.items()},
                  services=[{"namespace": "shop", "name": "billing", "regions": ["us"]}])
    check(fed.table, Case(BILLING, "A", answer=(f"{BILLING} 5 IN CNAME us.billing.example.com.",)),
          addr=(EAST_A, 1))


def test_the_explain_record_names_each_clusters_target_and_the_choice() -> None:
    data = {c: [billing(t)] for c, t in DISAGREEING.items()}
    data["south"] = [Service("shop", "billing", cluster_ips=(CLUSTER_IP["south"],))]
    fed = located(data)
    lines = txt_lines(fed, f"_explain.{BILLING}", addr=SOUTH)
    by_cluster = {line.split()[0]: line for line in lines[1:]}
    assert "chosen CNAME east.billing.example.com. tier 2" in by_cluster["east"]
    assert ("not chosen: a cluster listed earlier has the same tier CNAME"
            " west.billing.example.com. tier 2") in by_cluster["west"]
    assert "not chosen: farther (other region)" in by_cluster["north"]
    assert "not an ExternalName service there" in by_cluster["south"]
    assert query(fed.table, f"_explain.{BILLING}", "TXT").rcode() == dns.rcode.NOERROR
