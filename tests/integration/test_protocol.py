"""DNS protocol conformance of the real server, over real UDP and TCP sockets.

Covers every RFC 8906 §8 case (the table in shared/reference/dns-protocol.md
§2), the EDNS rules of RFC 6891, truncation, 0x20 case echo, RFC 8482 ANY,
scope (REFUSED/NOTIMP), negative answers (RFC 2308) and the malformed-packet
checklist (§14). dnspython builds and reads most messages; raw bytes are used
where dnspython cannot express the input or would hide the exact octets.

"No reply" is checked without waiting for a timeout: the bad packet and then a
good query are sent from one socket, and the server answers datagrams in
order, so any reply to the bad packet would arrive before the good answer.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from tests.support import ORIGIN, ServerThread, ask, records, serve, write_federation

SOA_TEXT_PREFIX = "clusterset.local. 30 IN SOA ns.clusterset.local. hostmaster.clusterset.local. "
NEGATIVE_TTL = 5  # min(SOA TTL 30, SOA MINIMUM 5) in the demo (RFC 2308 §5)
Z_FLAG = 0x0040  # the header's reserved Z bit (dnspython has no name for it)
HEADER = struct.Struct("!HHHHHH")


# --- helpers --------------------------------------------------------------------------------


def build_query(
    qname: str | dns.name.Name,
    qtype: str | int = "A",
    *,
    edns: int | None = None,
    payload: int = 1232,
    want_dnssec: bool = False,
    rd: bool = False,
    options: list[dns.edns.Option] | None = None,
) -> dns.message.Message:
    """A query with EDNS only when asked (``edns``, DO or options), RD as given.

    tests.support.make_query always adds an OPT (dnspython enables EDNS whenever a
    payload is passed), so queries without EDNS are built here.
    """
    use_edns: int | bool = edns if edns is not None else bool(want_dnssec or options)
    q = dns.message.make_query(qname, qtype, use_edns=use_edns, payload=payload,
                               want_dnssec=want_dnssec, options=options)
    if not rd:
        q.flags &= ~dns.flags.RD
    return q


def header_of(raw: bytes) -> tuple[int, int, int, int, int, int]:
    """(id, flags, qdcount, ancount, nscount, arcount) of a raw message."""
    return HEADER.unpack_from(raw)


def udp_exchange(port: int, packets: list[bytes], good: bytes, *,
                 timeout: float = 3.0) -> list[bytes]:
    """Send ``packets`` then ``good`` from one socket; return the replies that came first.

    The server handles the datagrams of one socket in order, so a reply to any
    of ``packets`` arrives before the reply to ``good``; an empty list therefore
    proves that none of them was answered.
    """
    good_id = good[:2]
    before: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        for p in packets:
            s.send(p)
        s.send(good)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = s.recv(65535)
            if reply[:2] == good_id and reply[2] & 0x80:
                return before
            before.append(reply)
    raise AssertionError("the good query sent after the bad packets was not answered")


def raw_exchange(port: int, payload: bytes, *, tcp: bool = False, timeout: float = 3.0) -> bytes:
    """Send one raw message and return the raw reply (fails when there is none)."""
    if tcp:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(payload)) + payload)
            return read_tcp_message(s)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(payload, ("127.0.0.1", port))
        return s.recv(65535)


def read_exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed mid-message")
        buf += chunk
    return buf


def read_tcp_message(s: socket.socket) -> bytes:
    (length,) = struct.unpack("!H", read_exactly(s, 2))
    return read_exactly(s, length)


def question_bytes(raw: bytes) -> bytes:
    """The raw question section (one question, uncompressed name) of a message."""
    end = 12
    while raw[end]:
        end += raw[end] + 1
    return raw[12 : end + 5]


def soa_query(**kwargs: Any) -> dns.message.Message:
    return build_query(ORIGIN, "SOA", **kwargs)


def assert_soa_answer(reply: dns.message.Message) -> None:
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    lines = records(reply)
    assert len(lines) == 1 and lines[0].startswith(SOA_TEXT_PREFIX), lines


def assert_negative(reply: dns.message.Message, rcode: dns.rcode.Rcode) -> None:
    """NXDOMAIN or NODATA: AA=1, no answer, the SOA alone in authority at the negative TTL."""
    assert reply.rcode() == rcode
    assert reply.flags & dns.flags.AA
    assert reply.answer == []
    auth = records(reply, "authority")
    assert len(auth) == 1, auth
    assert auth[0].startswith(f"clusterset.local. {NEGATIVE_TTL} IN SOA ns.clusterset.local. ")
    assert auth[0].endswith(" 3600 600 86400 5")


def still_answers(port: int) -> None:
    reply = ask(port, soa_query())
    assert_soa_answer(reply)


def lowered(lines: list[str]) -> list[str]:
    return [line.lower() for line in lines]


def mixed_case(name: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in name)


# --- a federation with big answers (for truncation) -----------------------------------------


BIG_ENDPOINTS = 30
MID_ENDPOINTS = 6
HUGE_ENDPOINTS = 90


def headless(name: str, count: int, subnet: int, *, hostnames: bool = False) -> dict[str, Any]:
    return {
        "namespace": "bulk",
        "name": name,
        "type": "Headless",
        "ports": [{"name": "http", "port": 80}],
        "endpoints": [
            {"address": f"10.{subnet}.{i // 200}.{i % 200 + 1}",
             **({"hostname": f"{name}-{i}"} if hostnames else {})}
            for i in range(count)
        ],
    }


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Headless services with answers too big for 512 (big) or 1232 (huge) octets.

    The SRV answer of ``mid`` fits 512 octets only without its additional records.
    """
    tmp: Path = tmp_path_factory.mktemp("big")
    config = write_federation(
        tmp,
        {"east": {"services": [
            headless("big", BIG_ENDPOINTS, 5),
            headless("mid", MID_ENDPOINTS, 6, hostnames=True),
            headless("huge", HUGE_ENDPOINTS, 7),
        ]}},
        extra={"dns": {"listen": ["127.0.0.1:0"], "max_records": 100}},
    )
    with serve(config) as server:
        yield server


BIG = "big.bulk.svc.clusterset.local."
MID = "mid.bulk.svc.clusterset.local."
HUGE = "huge.bulk.svc.clusterset.local."


# --- RFC 8906 §8 ----------------------------------------------------------------------------


def _with_flags(flags: int, **kwargs: Any) -> Callable[[], dns.message.Message]:
    def build() -> dns.message.Message:
        q = soa_query(**kwargs)
        q.flags |= flags
        return q
    return build


def _edns(version: int, *, ednsflags: int = 0, do: bool = False,
          options: list[dns.edns.Option] | None = None) -> Callable[[], dns.message.Message]:
    def build() -> dns.message.Message:
        q = soa_query()
        q.use_edns(version, ednsflags=ednsflags, payload=1232, options=options)
        if do:
            q.want_dnssec(True)
        return q
    return build


def _check_soa_no_opt(reply: dns.message.Message) -> None:
    assert_soa_answer(reply)
    assert not reply.flags & (dns.flags.RD | dns.flags.AD)
    assert reply.opt is None


def _check_unknown_type(reply: dns.message.Message) -> None:
    assert_negative(reply, dns.rcode.NOERROR)
    assert reply.opt is None


def _check_soa_clear(reply: dns.message.Message) -> None:
    assert_soa_answer(reply)
    assert not reply.flags & (dns.flags.AD | dns.flags.CD | Z_FLAG)


def _check_rd_copied(reply: dns.message.Message) -> None:
    assert_soa_answer(reply)
    assert reply.flags & dns.flags.RD
    assert not reply.flags & dns.flags.RA


def _check_edns0(reply: dns.message.Message) -> None:
    assert_soa_answer(reply)
    assert reply.edns == 0


def _check_badvers(*, do: bool = False) -> Callable[[dns.message.Message], None]:
    def check(reply: dns.message.Message) -> None:
        assert reply.rcode() == dns.rcode.BADVERS
        assert reply.edns == 0
        assert reply.answer == [] and reply.authority == []
        assert not reply.flags & dns.flags.AA
        assert reply.options == ()
        assert reply.ednsflags & 0xFFFF == (dns.flags.DO if do else 0)
    return check


def _check_soa_no_options(reply: dns.message.Message) -> None:
    assert_soa_answer(reply)
    assert reply.edns == 0
    assert reply.options == ()


def _check_soa_only_ecs_echoed(reply: dns.message.Message) -> None:
    # The demo trusts ECS from loopback (to show locality), so ECS (RFC 7871) is the one
    # option answered; NSID and EXPIRE are not implemented and not echoed.
    assert_soa_answer(reply)
    assert reply.edns == 0
    assert [o.otype for o in reply.options] == [dns.edns.ECS]


def _check_mbz_clear(reply: dns.message.Message) -> None:
    assert_soa_answer(reply)
    assert reply.ednsflags & 0xFFFF == 0


def _check_do_echoed(reply: dns.message.Message) -> None:
    assert_soa_answer(reply)
    assert reply.ednsflags & 0xFFFF == dns.flags.DO


RFC8906 = [
    pytest.param(soa_query, False, _check_soa_no_opt, id="8.1.1 SOA without EDNS"),
    pytest.param(lambda: build_query(ORIGIN, 1000), False, _check_unknown_type,
                 id="8.1.2 unknown type TYPE1000"),
    pytest.param(_with_flags(dns.flags.CD), False, _check_soa_clear, id="8.1.3.1 CD=1"),
    pytest.param(_with_flags(dns.flags.AD), False, _check_soa_clear, id="8.1.3.2 AD=1"),
    pytest.param(_with_flags(Z_FLAG), False, _check_soa_clear, id="8.1.3.3 Z=1"),
    pytest.param(_with_flags(dns.flags.RD), False, _check_rd_copied, id="8.1.3.4 RD=1"),
    pytest.param(soa_query, True, _check_soa_no_opt, id="8.1.5 SOA over TCP"),
    pytest.param(_edns(0), False, _check_edns0, id="8.2.1 EDNS version 0"),
    pytest.param(_edns(1), False, _check_badvers(), id="8.2.2 EDNS version 1"),
    pytest.param(_edns(0, options=[dns.edns.GenericOption(100, b"")]), False,
                 _check_soa_no_options, id="8.2.3 unknown EDNS option"),
    pytest.param(_edns(0, ednsflags=0x40), False, _check_mbz_clear, id="8.2.4 unknown EDNS flag"),
    pytest.param(_edns(1, ednsflags=0x40), False, _check_badvers(),
                 id="8.2.5 EDNS version 1 with unknown flag"),
    pytest.param(_edns(1, options=[dns.edns.GenericOption(100, b"")]), False, _check_badvers(),
                 id="8.2.6 EDNS version 1 with unknown option"),
    pytest.param(_edns(0, do=True), False, _check_do_echoed, id="8.2.8 DO=1"),
    pytest.param(_edns(1, do=True), False, _check_badvers(do=True),
                 id="8.2.9 EDNS version 1 with DO=1"),
    pytest.param(_edns(0, options=[
        dns.edns.NSIDOption(b""),
        dns.edns.GenericOption(9, b""),  # EXPIRE (RFC 7314)
        dns.edns.ECSOption("192.0.2.0", 24),
    ]), False, _check_soa_only_ecs_echoed, id="8.2.10 NSID, EXPIRE and ECS together"),
]


@pytest.mark.parametrize(("build", "tcp", "check"), RFC8906)
def test_each_rfc8906_section_8_query_gets_the_expected_reply(demo_server, build, tcp, check):
    check(ask(demo_server.port, build(), tcp=tcp))


@pytest.mark.parametrize("opcode", [15, 4, 5], ids=["opcode 15", "NOTIFY", "UPDATE"])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_rfc8906_8_1_4_an_unsupported_opcode_header_only_gets_notimp_with_empty_sections(
        demo_server, opcode, tcp):
    query = HEADER.pack(0xBEEF, opcode << 11, 0, 0, 0, 0)
    raw = raw_exchange(demo_server.port, query, tcp=tcp)
    qid, flags, *counts = header_of(raw)
    assert qid == 0xBEEF
    assert flags == 0x8000 | opcode << 11 | dns.rcode.NOTIMP  # QR, the opcode, AA=0, NOTIMP
    assert counts == [0, 0, 0, 0]
    assert len(raw) == 12  # no OPT either


@pytest.mark.parametrize("opcode", [15, 1, 2, 3, 4, 5, 6], ids=lambda o: f"opcode {o}")
def test_rfc8906_8_1_4_any_opcode_but_query_with_a_question_gets_notimp(demo_server, opcode):
    q = soa_query()
    q.set_opcode(opcode)
    wire_q = q.to_wire()
    raw = raw_exchange(demo_server.port, wire_q)
    _, flags, qd, an, ns, ar = header_of(raw)
    assert raw[:2] == wire_q[:2]
    assert flags & 0x8000
    assert (flags >> 11) & 0xF == opcode
    assert flags & 0xF == dns.rcode.NOTIMP
    assert not flags & dns.flags.AA
    assert (an, ns, ar) == (0, 0, 0)
    assert qd in (0, 1)


def test_rfc8906_8_2_7_a_512_octet_buffer_with_do_gets_tc_and_tcp_gets_every_record(big_server):
    q = build_query(BIG, "A", edns=0, payload=512, want_dnssec=True)
    udp = ask(big_server.port, q)
    assert udp.rcode() == dns.rcode.NOERROR
    assert udp.flags & dns.flags.TC
    assert udp.edns == 0 and udp.ednsflags & dns.flags.DO
    assert udp.answer == []
    tcp = ask(big_server.port, q, tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert len(records(tcp)) == BIG_ENDPOINTS
    assert len(tcp.to_wire()) > 512


# --- EDNS (RFC 6891) ------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [512, 1232, 1400, 4096, 65535])
def test_an_edns_reply_is_version_zero_and_advertises_1232(demo_server, payload):
    reply = ask(demo_server.port, soa_query(edns=0, payload=payload))
    assert reply.edns == 0
    assert reply.payload == 1232


@pytest.mark.parametrize("version", [1, 2, 255])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_an_edns_version_above_zero_gets_badvers_with_an_opt_of_version_zero(
        demo_server, version, tcp):
    q = build_query("web.shop.svc.clusterset.local", "A")
    q.use_edns(version, payload=1232)
    reply = ask(demo_server.port, q, tcp=tcp)
    assert reply.rcode() == dns.rcode.BADVERS == 16
    assert reply.edns == 0
    assert reply.answer == [] and reply.authority == [] and reply.additional == []
    assert not reply.flags & dns.flags.AA


@pytest.mark.parametrize("code", [3, 9, 10, 12, 15, 100, 65001])
def test_edns_options_the_server_does_not_implement_are_not_echoed(demo_server, code):
    # ECS (8) is implemented: tests/unit/test_policy.py covers when it is echoed.
    body = {10: bytes(8)}.get(code, b"\x01\x02")
    q = soa_query(edns=0, options=[dns.edns.GenericOption(code, body)])
    for tcp in (False, True):
        reply = ask(demo_server.port, q, tcp=tcp)
        assert_soa_answer(reply)
        assert reply.options == ()


@pytest.mark.parametrize("mbz", [0x0001, 0x0040, 0x0080, 0x4000, 0x7FFF])
def test_unknown_edns_flag_bits_are_cleared_in_the_reply(demo_server, mbz):
    q = soa_query()
    q.use_edns(0, ednsflags=mbz, payload=1232)
    reply = ask(demo_server.port, q)
    assert_soa_answer(reply)
    assert reply.ednsflags & 0x7FFF == 0


@pytest.mark.parametrize("do", [False, True], ids=["DO=0", "DO=1"])
@pytest.mark.parametrize("name", ["web.shop.svc.clusterset.local.", "nope.clusterset.local.",
                                  "example.com."])
def test_the_do_bit_is_echoed_exactly_as_asked(demo_server, do, name):
    reply = ask(demo_server.port, build_query(name, "A", edns=0, want_dnssec=do))
    assert bool(reply.ednsflags & dns.flags.DO) is do


@pytest.mark.parametrize("qtype", ["A", "SOA", "TXT", "SRV", "ANY"])
def test_a_query_without_edns_gets_a_reply_without_opt(demo_server, qtype):
    reply = ask(demo_server.port, build_query("web.shop.svc.clusterset.local", qtype))
    assert reply.opt is None and reply.edns == -1


@pytest.mark.parametrize("payload", [0, 1, 100, 200])
def test_an_advertised_udp_size_below_512_is_treated_as_512(demo_server, payload):
    q = build_query("db.data.svc.clusterset.local", "SRV", edns=0, payload=payload)
    full = ask(demo_server.port, q, tcp=True)
    size = len(full.to_wire())
    assert payload < size <= 512  # too big for the advertised size, fits 512
    reply = ask(demo_server.port, q)
    assert not reply.flags & dns.flags.TC
    assert records(reply) == records(full)
    assert records(reply, "additional") == records(full, "additional") != []


def test_an_answer_over_512_octets_is_truncated_for_a_client_without_edns(big_server):
    q = build_query(BIG, "A")
    reply = ask(big_server.port, q)
    assert reply.flags & dns.flags.TC
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == [] and reply.opt is None
    assert reply.question[0].name == dns.name.from_text(BIG)
    assert len(records(ask(big_server.port, q, tcp=True))) == BIG_ENDPOINTS


def test_an_answer_that_fits_the_clients_edns_size_is_not_truncated(big_server):
    reply = ask(big_server.port, build_query(BIG, "A", edns=0, payload=1232))
    assert not reply.flags & dns.flags.TC
    assert len(records(reply)) == BIG_ENDPOINTS


def test_udp_answers_are_capped_at_1232_octets_even_when_the_client_offers_more(big_server):
    q = build_query(HUGE, "A", edns=0, payload=4096)
    full = ask(big_server.port, q, tcp=True)
    assert len(records(full)) == HUGE_ENDPOINTS
    assert 1232 < len(full.to_wire()) <= 4096
    reply = ask(big_server.port, q)
    assert reply.flags & dns.flags.TC
    assert reply.answer == []


def test_the_additional_section_is_dropped_before_tc_when_that_is_enough(big_server):
    q = build_query(MID, "SRV")
    full = ask(big_server.port, q, tcp=True)
    assert len(records(full)) == MID_ENDPOINTS
    assert len(records(full, "additional")) == MID_ENDPOINTS
    assert len(full.to_wire()) > 512
    reply = ask(big_server.port, q)
    assert not reply.flags & dns.flags.TC
    assert records(reply) == records(full)
    assert reply.additional == []


def test_with_edns_the_dropped_additional_section_keeps_the_opt_record(big_server):
    q = build_query(MID, "SRV", edns=0, payload=512, want_dnssec=True)
    reply = ask(big_server.port, q)
    assert not reply.flags & dns.flags.TC
    assert len(records(reply)) == MID_ENDPOINTS
    assert reply.additional == []
    assert reply.edns == 0 and reply.ednsflags & dns.flags.DO


# --- header flags ---------------------------------------------------------------------------


@pytest.mark.parametrize("rd", [False, True], ids=["RD=0", "RD=1"])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_rd_is_copied_and_ra_is_never_set(demo_server, rd, tcp):
    for name in ("web.shop.svc.clusterset.local.", "nope.clusterset.local.", "example.com."):
        reply = ask(demo_server.port, build_query(name, "A", rd=rd), tcp=tcp)
        assert bool(reply.flags & dns.flags.RD) is rd
        assert not reply.flags & dns.flags.RA


QUERY_ONLY_FLAGS = dns.flags.TC | dns.flags.AA | dns.flags.AD | dns.flags.RA | Z_FLAG | dns.flags.CD


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize(("name", "expected"), [
    ("web.shop.svc.clusterset.local.", dns.flags.QR | dns.flags.AA),
    ("nope.clusterset.local.", dns.flags.QR | dns.flags.AA),
    ("example.com.", dns.flags.QR),
])
def test_tc_aa_ad_ra_z_and_cd_in_a_query_are_cleared_in_the_reply(demo_server, tcp, name,
                                                                   expected):
    q = build_query(name, "A")
    q.flags |= QUERY_ONLY_FLAGS
    reply = ask(demo_server.port, q, tcp=tcp)
    assert reply.flags & ~0xF == expected  # all header flags (the low 4 bits are the RCODE)


# --- 0x20 case ------------------------------------------------------------------------------


CASE_NAMES = [
    ("web.shop.svc.clusterset.local.", "A"),
    ("_http._tcp.web.shop.svc.clusterset.local.", "SRV"),
    ("db-0.west.prod.db.data.svc.clusterset.local.", "A"),
    ("clusterset.local.", "SOA"),
    ("nope.clusterset.local.", "A"),
    ("web.shop.svc.clusterset.local.", "TXT"),
    ("www.example.com.", "A"),
]


@pytest.mark.parametrize(("name", "qtype"), CASE_NAMES)
@pytest.mark.parametrize("edns", [None, 0], ids=["no-edns", "edns"])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_the_question_is_echoed_byte_for_byte_in_any_0x20_case(demo_server, name, qtype, edns,
                                                               tcp):
    rng = random.Random(f"{name}{qtype}{edns}{tcp}")
    lower = ask(demo_server.port, build_query(name, qtype, edns=edns), tcp=tcp)
    for _ in range(5):
        q = build_query(mixed_case(name, rng), qtype, edns=edns)
        wire_q = q.to_wire()
        raw = raw_exchange(demo_server.port, wire_q, tcp=tcp)
        assert question_bytes(raw) == question_bytes(wire_q)
        reply = dns.message.from_wire(raw)
        assert reply.rcode() == lower.rcode()
        # Names compressed against the question take its case: compare ignoring case.
        for section in ("answer", "authority", "additional"):
            assert lowered(records(reply, section)) == lowered(records(lower, section))


# --- ANY, scope, zone transfers -------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("name", ["web.shop.svc.clusterset.local.", "clusterset.local.",
                                  "dns-version.clusterset.local."])
def test_qtype_any_gets_the_rfc8482_hinfo(demo_server, tcp, name):
    reply = ask(demo_server.port, build_query(name, "ANY"), tcp=tcp)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert len(reply.answer) == 1
    rrset = reply.answer[0]
    assert rrset.rdtype == dns.rdatatype.HINFO and len(rrset) == 1
    assert rrset.name == dns.name.from_text(name)
    assert (rrset[0].cpu, rrset[0].os) == (b"RFC8482", b"")


def test_qtype_any_on_a_missing_name_is_nxdomain(demo_server):
    assert_negative(ask(demo_server.port, build_query("nope.clusterset.local.", "ANY")),
                    dns.rcode.NXDOMAIN)


@pytest.mark.parametrize(("name", "qtype"), [
    (".", "NS"), (".", "SOA"), ("example.com.", "A"), ("local.", "SOA"),
    ("xclusterset.local.", "A"), ("clusterset.local.example.", "A"), ("com.", "ANY"),
])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_name_outside_every_origin_is_refused_without_aa_or_records(demo_server, name, qtype,
                                                                       tcp):
    # Answered, not ignored (CoreDNS forward's health probe waits for an answer).
    reply = ask(demo_server.port, build_query(name, qtype, rd=True), tcp=tcp, timeout=2.0)
    assert reply.rcode() == dns.rcode.REFUSED
    assert not reply.flags & (dns.flags.AA | dns.flags.RA)
    assert (reply.answer, reply.authority, reply.additional) == ([], [], [])


@pytest.mark.parametrize(("name", "qclass"), [
    ("version.bind.", "CH"), ("hostname.bind.", "CH"), ("id.server.", "CH"),
    ("version.server.", "CH"), ("clusterset.local.", "CH"), ("clusterset.local.", "HS"),
    ("web.shop.svc.clusterset.local.", "NONE"), ("web.shop.svc.clusterset.local.", "ANY"),
    ("web.shop.svc.clusterset.local.", 1234),
])
def test_chaos_and_other_classes_are_refused_and_leak_no_version(demo_server, name, qclass):
    q = dns.message.make_query(name, "TXT", rdclass=qclass)
    reply = ask(demo_server.port, q)
    assert reply.rcode() == dns.rcode.REFUSED
    assert not reply.flags & dns.flags.AA
    assert (reply.answer, reply.authority, reply.additional) == ([], [], [])


@pytest.mark.parametrize("qtype", ["AXFR", "IXFR"])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("name", ["clusterset.local.", "shop.svc.clusterset.local."])
def test_zone_transfers_are_refused_with_no_records(demo_server, qtype, tcp, name):
    q = build_query(name, qtype)
    raw = raw_exchange(demo_server.port, q.to_wire(), tcp=tcp)
    _, flags, qd, an, ns, ar = header_of(raw)
    assert flags & 0xF == dns.rcode.REFUSED
    assert (qd, an, ns, ar) == (1, 0, 0, 0)


# --- authoritative data and negative answers -------------------------------------------------


def test_the_apex_has_an_soa_and_an_ns_record(demo_server):
    soa = ask(demo_server.port, soa_query())
    assert_soa_answer(soa)
    ns = ask(demo_server.port, build_query(ORIGIN, "NS"))
    assert ns.flags & dns.flags.AA
    assert records(ns) == ["clusterset.local. 30 IN NS ns.clusterset.local."]


def test_the_dns_version_txt_record_is_1_0_0(demo_server):
    reply = ask(demo_server.port, build_query("dns-version.clusterset.local.", "TXT"))
    assert reply.flags & dns.flags.AA
    assert records(reply) == ['dns-version.clusterset.local. 28800 IN TXT "1.0.0"']


@pytest.mark.parametrize("name", [
    "nope.clusterset.local.", "nope.shop.svc.clusterset.local.",
    "x.web.shop.svc.clusterset.local.", "db-9.east-a.db.data.svc.clusterset.local.",
    "a.b.c.d.e.f.g.clusterset.local.",
])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_missing_name_is_nxdomain_with_the_soa_at_the_negative_ttl(demo_server, name, tcp):
    assert_negative(ask(demo_server.port, build_query(name, "A"), tcp=tcp), dns.rcode.NXDOMAIN)


@pytest.mark.parametrize(("name", "qtype"), [
    ("web.shop.svc.clusterset.local.", "TXT"),
    ("web.shop.svc.clusterset.local.", "AAAA"),
    ("clusterset.local.", "A"),
    ("shop.svc.clusterset.local.", "A"),  # an empty non-terminal (RFC 8020)
    ("svc.clusterset.local.", "A"),
    ("dns-version.clusterset.local.", "A"),
    ("web.shop.svc.clusterset.local.", 1000),
    ("clusterset.local.", 1000),
])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_an_existing_name_without_the_type_is_nodata_with_the_soa(demo_server, name, qtype, tcp):
    assert_negative(ask(demo_server.port, build_query(name, qtype), tcp=tcp), dns.rcode.NOERROR)


@pytest.mark.parametrize("label", [b"\x00", b"\xff", "\u00fc".encode(), "\u2603".encode(),
                                   b"a.b", b"\\", b" ", b"\x00\xff\x80", b"A" * 63])
@pytest.mark.parametrize(("suffix", "rcode"), [
    ("clusterset.local.", dns.rcode.NXDOMAIN),
    ("shop.svc.clusterset.local.", dns.rcode.NXDOMAIN),
    ("example.com.", dns.rcode.REFUSED),
])
def test_a_qname_with_non_ldh_octets_gets_nxdomain_or_refused(demo_server, label, suffix, rcode):
    name = dns.name.Name([label, *dns.name.from_text(suffix).labels])
    for tcp in (False, True):
        reply = ask(demo_server.port, build_query(name, "A"), tcp=tcp)
        assert reply.rcode() == rcode
        assert reply.question[0].name == name
    still_answers(demo_server.port)


def test_a_thousand_random_names_get_nxdomain_and_memoize_nothing(demo_server):
    rng = random.Random(42)
    count = demo_server.call(lambda: len(demo_server.app.table.compiled))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.connect(("127.0.0.1", demo_server.port))
        for i in range(1000):
            label = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-")
                            for _ in range(rng.randint(1, 40)))
            q = build_query(f"r{i}{label}.shop.svc.clusterset.local.", "A")
            s.send(q.to_wire())
            reply = dns.message.from_wire(s.recv(65535))
            assert reply.id == q.id
            assert reply.rcode() == dns.rcode.NXDOMAIN
    assert demo_server.call(lambda: len(demo_server.app.table.compiled)) <= count + 1


# --- malformed and unanswerable packets -----------------------------------------------------


def _good_question() -> bytes:
    return build_query(ORIGIN, "SOA").to_wire()[12:]


def _pkt(*, flags: int = 0, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0,
         body: bytes | None = None) -> bytes:
    return HEADER.pack(0xABCD, flags, qd, an, ns, ar) + (
        _good_question() if body is None else body)


def _opt(*, owner: bytes = b"\x00", rdata: bytes = b"", rdlen: int | None = None) -> bytes:
    return owner + struct.pack("!HHIH", 41, 1232, 0, len(rdata) if rdlen is None else rdlen) + rdata


def _a_rr(owner: bytes) -> bytes:
    return owner + struct.pack("!HHIH", 1, 1, 5, 4) + b"\x0a\x00\x00\x01"


_Q = _good_question()
_AR_AT = 12 + len(_Q)  # offset of the first additional record


def _pointer(target: int) -> bytes:
    return struct.pack("!H", 0xC000 | target)


MALFORMED = {
    "QDCOUNT 0 without OPT": _pkt(qd=0, body=b""),
    "QDCOUNT 0 with an OPT": _pkt(qd=0, ar=1, body=_opt()),
    "QDCOUNT 2": _pkt(qd=2, body=_Q + _Q),
    "QDCOUNT 1 but no question": _pkt(body=b""),
    "name past the end": _pkt(body=b"\x0aclusterset\x05loc"),
    "question type and class missing": _pkt(body=_Q[:-4]),
    "label type 0x40": _pkt(body=b"\x41" + b"a" * 65 + b"\x00\x00\x01\x00\x01"),
    "label type 0x80": _pkt(body=b"\x80" + b"a" * 20 + b"\x00\x00\x01\x00\x01"),
    "name over 255 octets": _pkt(body=b"\x01a" * 128 + b"\x00\x00\x01\x00\x01"),
    "pointer in the question": _pkt(body=b"\xc0\x0c\x00\x06\x00\x01"),
    "pointer to itself": _pkt(ar=1, body=_Q + _a_rr(_pointer(_AR_AT))),
    "pointer loop": _pkt(ar=2, body=_Q + _a_rr(b"\x01a" + _pointer(_AR_AT + 18))
                         + _a_rr(b"\x01b" + _pointer(_AR_AT))),
    "forward pointer": _pkt(ar=1, body=_Q + _a_rr(_pointer(_AR_AT + 5))),
    "pointer past the end": _pkt(ar=1, body=_Q + _a_rr(_pointer(0x3FFF))),
    "pointer into the header": _pkt(ar=1, body=_Q + _a_rr(_pointer(4))),
    "trailing garbage": _pkt(body=_Q + b"garbage"),
    "ARCOUNT 3 with one OPT": _pkt(ar=3, body=_Q + _opt()),
    "two OPT records": _pkt(ar=2, body=_Q + _opt() + _opt()),
    "OPT with a non-root owner": _pkt(ar=1, body=_Q + _opt(owner=b"\x01a\x00")),
    "option length over RDLENGTH": _pkt(ar=1, body=_Q + _opt(
        rdata=struct.pack("!HH", 100, 10) + b"abc")),
    "OPT RDATA past the end": _pkt(ar=1, body=_Q + _opt(rdlen=40)),
    "OPT in the answer section": _pkt(an=1, body=_Q + _opt()),
    # Regressions: the fast path read past the end of these (IndexError, no reply).
    "ARCOUNT 1 with the OPT missing": _pkt(ar=1, body=_Q),
    "ARCOUNT 1 with the OPT cut short": _pkt(ar=1, body=_Q + _opt()[:7]),
}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("packet", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_query_gets_formerr_and_the_server_keeps_answering(demo_server, packet, tcp):
    raw = raw_exchange(demo_server.port, packet, tcp=tcp)
    qid, flags, _, an, ns, _ = header_of(raw)
    assert qid == 0xABCD
    assert flags & 0x8000
    assert flags & 0xF == dns.rcode.FORMERR
    assert not flags & dns.flags.AA
    assert (an, ns) == (0, 0)
    dns.message.from_wire(raw)  # a well-formed reply
    still_answers(demo_server.port)


def test_formerr_copies_rd_and_the_opcode(demo_server):
    raw = raw_exchange(demo_server.port, _pkt(qd=2, flags=0x0100, body=_Q + _Q))
    assert header_of(raw)[1] == 0x8000 | 0x0100 | dns.rcode.FORMERR


def _response_packets() -> dict[str, bytes]:
    q = soa_query()
    resp = dns.message.make_response(q)
    qr = dns.flags.QR
    return {
        "a real response": resp.to_wire(),
        "QR=1 header only": HEADER.pack(0x1111, qr, 0, 0, 0, 0),
        "QR=1 query bytes": _pkt(flags=qr),
        "QR=1 malformed": _pkt(flags=qr, qd=2, body=b"\x01"),
        "QR=1 opcode 15": _pkt(flags=qr | 15 << 11),
        "QR=1 with EDNS": _pkt(flags=qr, ar=1, body=_Q + _opt()),
    }


RESPONSES = _response_packets()


@pytest.mark.parametrize("packet", RESPONSES.values(), ids=RESPONSES.keys())
def test_a_packet_with_qr_set_is_never_answered(demo_server, packet):
    assert udp_exchange(demo_server.port, [packet], soa_query().to_wire()) == []


def test_datagrams_of_zero_to_eleven_octets_are_dropped_silently(demo_server):
    short = [b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00"[:n] for n in range(12)]
    short += [bytes([0xFF] * n) for n in range(1, 12)]
    assert udp_exchange(demo_server.port, short, soa_query().to_wire()) == []
    still_answers(demo_server.port)


def test_the_udp_exchange_helper_does_see_a_reply_to_an_earlier_packet(demo_server):
    # Guards the no-reply tests above: a packet that IS answered shows up in the list.
    answered = _pkt(qd=2, body=_Q + _Q)
    got = udp_exchange(demo_server.port, [answered], soa_query().to_wire())
    assert len(got) == 1 and got[0][:2] == b"\xab\xcd"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_a_server_on_ipv6_loopback_answers_repeated_queries_over_udp_and_tcp() -> None:
    from feddns.config import load_settings
    from tests.support import DEMO_CONFIG

    with ServerThread(load_settings(DEMO_CONFIG), listen="[::1]:0") as server:
        port = server.port
        query = dns.message.make_query("web.shop.svc.clusterset.local.", "A")
        wire = query.to_wire()
        replies = []
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            for qid in range(1, 8):  # the first reaches the handler, the rest the front
                s.sendto(qid.to_bytes(2, "big") + wire[2:], ("::1", port))
                reply = dns.message.from_wire(s.recv(65535))
                assert reply.id == qid and reply.rcode() == dns.rcode.NOERROR
                replies.append(sorted(rd.address for rr in reply.answer for rd in rr))
        assert replies[0] == ["10.96.1.10", "10.96.2.10", "10.96.3.10"]
        assert all(r == replies[0] for r in replies)
        tcp = dns.query.tcp(query, "::1", port=port, timeout=3)
        assert sorted(rd.address for rr in tcp.answer for rd in rr) == replies[0]
        handled = server.call(lambda: server.app.handler.front.by_source)
        assert "::1" in handled  # the repeats were answered from the front
