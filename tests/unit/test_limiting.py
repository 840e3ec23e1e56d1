"""Query admission without sockets: the ACL, response rate limiting, and the handler's use of them.

Covers the client prefix a source falls in (IPv4 /24, IPv6 /56, IPv4-mapped
IPv6, other lengths), the ACL's verdicts and its bounded cache, the token
bucket (burst, refill, slip every Nth, slip 1 and 0, prefixes apart and
shared), the bounded bucket table with its eviction order, a reload that
keeps or resets state, and the handler: REFUSED with the question echoed,
the slipped reply (TC=1, question only, OPT kept), drops, counters, TCP
exempt from rate limiting but not from the ACL, and the guard following the
answer table on reload. Time is passed in explicitly: no clock is read.
"""

from __future__ import annotations

from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest

from feddns.config import DnsConfig, Settings
from feddns.dns.handling import Handler
from feddns.dns.limiting import ANSWER, DROP, REFUSE, SLIP, Acl, Limits, Rrl, prefix_key
from feddns.model.services import Endpoint, Port, Service
from tests.unit.dnscase import (
    federation,
    handle,
    make_handler,
    make_table,
    settings_for,
)

WEB = "web.shop.svc.clusterset.local."


def web() -> Service:
    return Service("shop", "web", cluster_ips=("10.96.0.10",), ports=(Port("http", 80),),
                   endpoints=(Endpoint("10.1.0.1", zone="zone-1"),))


def handler_with(**dns_settings: Any) -> Handler:
    fed = federation({"c1": [web()]}, dns=dns_settings)
    return make_handler(fed.table, settings=fed.settings)


def query(qname: str = WEB, qtype: str = "A", *, edns: bool = True, qid: int = 7) -> bytes:
    q = dns.message.make_query(qname, qtype, use_edns=0 if edns else None)
    q.flags &= ~dns.flags.RD
    q.id = qid
    return q.to_wire()


def parse(reply: bytes | None) -> dns.message.Message:
    assert reply is not None
    return dns.message.from_wire(reply)


# --- prefixes ---------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "v4", "v6", "key"), [
    ("192.0.2.77", 24, 56, "192.0.2.0/24"),
    ("192.0.2.77", 16, 56, "192.0.0.0/16"),
    ("192.0.2.77", 32, 56, "192.0.2.77/32"),
    ("2001:db8:aa:bbcc::1", 24, 56, "2001:db8:aa:bb00::/56"),
    ("2001:db8:aa:bbcc::1", 24, 64, "2001:db8:aa:bbcc::/64"),
    ("fe80::1%eth0", 24, 56, "fe80::/56"),
    ("::ffff:192.0.2.77", 24, 56, "192.0.2.0/24"),
    ("not-an-address", 24, 56, "not-an-address"),
])
def test_a_source_address_falls_in_its_client_prefix(host: str, v4: int, v6: int,
                                                      key: str) -> None:
    assert prefix_key(host, v4, v6) == key


# --- the ACL ----------------------------------------------------------------------------


def test_the_acl_allows_only_sources_inside_its_networks() -> None:
    acl = Acl(["10.0.0.0/8", "2001:db8::/32"])
    assert acl.allows("10.200.1.1")
    assert acl.allows("2001:db8::53")
    assert acl.allows("::ffff:10.1.1.1")  # an IPv4 client on a dual-stack socket
    assert not acl.allows("11.0.0.1")
    assert not acl.allows("2001:db9::1")
    assert not acl.allows("garbage")


def test_the_acl_cache_stays_bounded_and_keeps_answering_the_same() -> None:
    acl = Acl(["127.1.0.0/16"], cache_size=8)
    for i in range(100):
        assert acl.allows(f"127.1.0.{i}")
        assert not acl.allows(f"127.2.0.{i}")
        assert len(acl._cache) <= 8


# --- the token bucket -------------------------------------------------------------------


def verdicts(rrl: Rrl, host: str, n: int, now: float = 100.0) -> list[int]:
    return [rrl.check(host, now) for _ in range(n)]


def test_a_prefix_gets_its_burst_then_every_second_limited_response_slips() -> None:
    rrl = Rrl(rate=10, burst=5, slip=2)
    got = verdicts(rrl, "192.0.2.1", 15)
    assert got[:5] == [ANSWER] * 5
    assert got[5:] == [DROP, SLIP] * 5


@pytest.mark.parametrize(("slip", "limited"), [(1, [SLIP] * 6), (0, [DROP] * 6),
                                               (3, [DROP, DROP, SLIP] * 2)])
def test_slip_sets_which_limited_responses_are_sent_truncated(slip: int,
                                                              limited: list[int]) -> None:
    rrl = Rrl(rate=1, burst=1, slip=slip)
    assert verdicts(rrl, "192.0.2.1", 7)[1:] == limited


def test_the_bucket_refills_at_the_rate_and_never_above_the_burst() -> None:
    rrl = Rrl(rate=10, burst=3, slip=2)
    assert verdicts(rrl, "192.0.2.1", 4, now=0.0) == [ANSWER, ANSWER, ANSWER, DROP]
    assert rrl.check("192.0.2.1", 0.1) == ANSWER   # one token after 0.1 s at 10/s
    assert rrl.check("192.0.2.1", 0.1) == SLIP     # the second limited one
    # An hour idle refills to the burst, not to 36,000.
    assert verdicts(rrl, "192.0.2.1", 4, now=3600.0) == [ANSWER, ANSWER, ANSWER, DROP]


def test_addresses_in_one_prefix_share_a_bucket_and_other_prefixes_do_not() -> None:
    rrl = Rrl(rate=1, burst=2, slip=2)
    assert rrl.check("127.1.1.1", 0.0) == ANSWER
    assert rrl.check("127.1.1.200", 0.0) == ANSWER   # same /24
    assert rrl.check("127.1.1.9", 0.0) == DROP
    assert rrl.check("127.2.2.2", 0.0) == ANSWER     # another /24: untouched
    assert rrl.check("2001:db8:0:1::1", 0.0) == ANSWER
    assert rrl.check("2001:db8:0:1::2", 0.0) == ANSWER  # same /56
    assert rrl.check("2001:db8:0:1::3", 0.0) == DROP
    assert rrl.check("2001:db8:0:100::1", 0.0) == ANSWER  # another /56
    assert len(rrl) == 4


def test_a_full_bucket_table_evicts_refilled_buckets_before_active_ones() -> None:
    rrl = Rrl(rate=1, burst=2, slip=2, table_size=4)
    rrl.check("10.0.1.1", 0.0)
    rrl.check("10.0.2.1", 0.0)
    rrl.check("10.0.3.1", 9.0)   # active at 9
    rrl.check("10.0.4.1", 9.0)
    rrl.check("10.0.5.1", 10.0)  # full: the two idle since 0 (refilled after 2 s) go
    assert len(rrl) == 3
    assert rrl.evicted == 2
    assert set(rrl._buckets) == {"10.0.3.0/24", "10.0.4.0/24", "10.0.5.0/24"}


def test_a_table_full_of_active_prefixes_drops_the_oldest_and_stays_bounded() -> None:
    rrl = Rrl(rate=1, burst=100, slip=2, table_size=8)
    for i in range(1000):  # a spoofed flood from ever new prefixes, all at one instant
        rrl.check(f"10.{i // 250}.{i % 250}.1", 5.0)
        assert len(rrl) <= 8
    assert "10.3.249.0/24" in rrl._buckets  # the newest survives
    assert rrl.evicted == 1000 - len(rrl)


# --- limits from the config, and reloads ------------------------------------------------


def dns_config(**values: Any) -> DnsConfig:
    return DnsConfig.model_validate(values)


def test_limits_are_off_by_default_and_keep_the_tcp_defaults() -> None:
    limits = Limits(dns_config())
    assert (limits.acl, limits.rrl, limits.active) == (None, None, False)
    assert (limits.max_tcp_clients, limits.tcp_handshake_timeout) == (1000, 5.0)


def test_burst_defaults_to_the_rate_rounded_up() -> None:
    assert Limits(dns_config(rrl={"responses_per_second": 2.5})).rrl.burst == 3  # type: ignore[union-attr]
    assert Limits(dns_config(rrl={"responses_per_second": 5, "burst": 1})).rrl.burst == 1  # type: ignore[union-attr]


def test_a_reload_keeps_buckets_and_counters_when_rrl_is_unchanged_and_resets_buckets_when_not(
        ) -> None:
    limits = Limits(dns_config(rrl={"responses_per_second": 1, "burst": 1}))
    data = query()
    assert limits.admit(data, "192.0.2.1", False) == ANSWER
    assert limits.admit(data, "192.0.2.1", False) == DROP
    rrl = limits.rrl
    limits.configure(dns_config(rrl={"responses_per_second": 1, "burst": 1},
                                max_tcp_clients=7))
    assert limits.rrl is rrl and limits.max_tcp_clients == 7
    assert limits.admit(data, "192.0.2.1", False) == SLIP  # the same bucket, still empty
    limits.configure(dns_config(rrl={"responses_per_second": 1, "burst": 2}))
    assert limits.rrl is not rrl
    assert limits.admit(data, "192.0.2.1", False) == ANSWER
    assert limits.dropped == 1  # counters only grow
    limits.configure(dns_config())
    assert (limits.rrl, limits.active, limits.dropped) == (None, False, 1)


def test_tcp_is_exempt_from_rate_limiting_but_not_from_the_acl() -> None:
    limits = Limits(dns_config(allow=["10.0.0.0/8"],
                               rrl={"responses_per_second": 1, "burst": 1, "slip": 0}))
    data = query()
    assert [limits.admit(data, "10.0.0.1", True) for _ in range(5)] == [ANSWER] * 5
    assert limits.admit(data, "192.0.2.1", True) == REFUSE
    assert limits.admit(data, "192.0.2.1", False) == REFUSE  # its first UDP response
    assert limits.admit(data, "192.0.2.1", False) == DROP


def test_packets_the_handler_drops_anyway_use_no_tokens() -> None:
    limits = Limits(dns_config(allow=["10.0.0.0/8"],
                               rrl={"responses_per_second": 1, "burst": 1}))
    response = bytearray(query())
    response[2] |= 0x80
    for _ in range(10):
        assert limits.admit(bytes(response), "192.0.2.1", False) == ANSWER
        assert limits.admit(b"\x00\x01", "192.0.2.1", False) == ANSWER
    assert len(limits.rrl) == 0  # type: ignore[arg-type]


# --- the handler ------------------------------------------------------------------------


def test_a_query_from_outside_the_allowed_networks_is_refused_with_its_question(
        ) -> None:
    handler = handler_with(allow=["10.0.0.0/8"])
    data = query()
    allowed = parse(handle(handler, data, False, ("10.9.9.9", 53000)))
    assert [str(rd) for rd in allowed.answer[0]] == ["10.96.0.10"]
    for tcp in (False, True):
        refused = parse(handle(handler, data, tcp, ("192.0.2.1", 53000)))
        assert refused.rcode() == dns.rcode.REFUSED
        assert refused.question == allowed.question
        assert not refused.answer and not refused.authority
        assert not refused.flags & dns.flags.AA
        assert refused.edns == 0  # the OPT is kept
    assert handler.limits.refused == 2


def test_a_malformed_query_from_outside_still_gets_formerr_and_is_not_counted_refused(
        ) -> None:
    handler = handler_with(allow=["10.0.0.0/8"])
    bad = bytearray(query())
    bad[5] = 2  # QDCOUNT 2
    assert parse(handle(handler, bytes(bad), False, ("192.0.2.1", 1))).rcode() == \
        dns.rcode.FORMERR
    assert handler.limits.refused == 0


def test_a_slipped_reply_is_truncated_to_the_question_and_the_opt() -> None:
    handler = handler_with(rrl={"responses_per_second": 1, "burst": 1, "slip": 2})
    addr = ("192.0.2.1", 5300)
    data = query(edns=True, qid=99)
    first = parse(handle(handler, data, False, addr))
    assert first.answer and not first.flags & dns.flags.TC
    assert handle(handler, data, False, addr) is None          # dropped
    slipped = parse(handle(handler, data, False, addr))        # every 2nd slips
    assert slipped.id == 99
    assert slipped.flags & dns.flags.TC
    assert slipped.question == first.question
    assert not slipped.answer and not slipped.authority and not slipped.additional
    assert slipped.edns == 0 and slipped.payload == 1232
    assert (handler.limits.slipped, handler.limits.dropped) == (1, 1)
    # Over TCP the same client is answered in full (the escape hatch).
    assert parse(handle(handler, data, True, addr)).answer


def test_a_slipped_reply_without_edns_carries_no_opt() -> None:
    handler = handler_with(rrl={"responses_per_second": 1, "burst": 1, "slip": 1})
    addr = ("192.0.2.1", 5300)
    data = query(edns=False)
    assert parse(handle(handler, data, False, addr)).answer
    slipped = parse(handle(handler, data, False, addr))
    assert slipped.flags & dns.flags.TC and slipped.edns == -1 and not slipped.answer


def test_a_client_without_an_address_is_never_limited() -> None:
    handler = handler_with(allow=["10.0.0.0/8"],
                           rrl={"responses_per_second": 1, "burst": 1, "slip": 0})
    for _ in range(5):
        assert parse(handle(handler, query(), False, None)).answer


def test_the_limits_are_off_by_default_and_a_reload_reconfigures_them_in_place() -> None:
    fed = federation({"c1": [web()]})
    handler = make_handler(fed.table)
    assert not handler.limits.active  # the only per-query cost while off
    data = query()
    for _ in range(3):
        assert parse(handle(handler, data, False, ("192.0.2.1", 1))).answer
    limited: Settings = settings_for(["c1"], dns={"allow": ["10.0.0.0/8"],
                                                  "max_tcp_clients": 3})
    handler.limits.configure(limited.dns)  # what a reload does, explicitly
    handler.use(make_table(limited), udp_payload_size=1232)
    assert handler.limits.active and handler.limits.max_tcp_clients == 3
    assert parse(handle(handler, data, False, ("192.0.2.1", 1))).rcode() == dns.rcode.REFUSED
    handler.limits.configure(fed.settings.dns)
    handler.use(fed.table, udp_payload_size=1232)
    assert not handler.limits.active
    assert parse(handle(handler, data, False, ("192.0.2.1", 1))).answer
