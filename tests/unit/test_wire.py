"""Unit tests of the strict query parser, the name helpers and the compressing encoder.

dnspython is the independent oracle: every malformed packet here is one that
dnspython also rejects, and every encoded message must decode with dnspython.
"""

from __future__ import annotations

import struct

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feddns import wire
from feddns.wire import FormError, Name, Record, ShortMessage


def header(*, qid: int = 0x1234, flags: int = 0, qd: int = 1, an: int = 0, ns: int = 0,
           ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


QNAME = wire.name_to_wire("web.shop.svc.clusterset.local")
QUESTION = QNAME + struct.pack("!HH", wire.A, wire.CLASS_IN)


def opt(*, size: int = 1232, version: int = 0, do: bool = False, rdata: bytes = b"",
        owner: bytes = b"\x00", rdlen: int | None = None) -> bytes:
    ttl = (version << 16) | (wire.EDNS_DO if do else 0)
    return owner + struct.pack("!HHIH", wire.OPT, size, ttl,
                               len(rdata) if rdlen is None else rdlen) + rdata


def a_record(owner: bytes) -> bytes:
    return owner + struct.pack("!HHIH", wire.A, wire.CLASS_IN, 5, 4) + bytes([10, 0, 0, 1])


def query_with_additional(*owners: bytes) -> bytes:
    """A query whose additional section holds one A record per owner (wire names as given)."""
    return header(ar=len(owners)) + QUESTION + b"".join(a_record(o) for o in owners)


def dnspython_rejects(data: bytes) -> bool:
    try:
        dns.message.from_wire(data)
    except dns.exception.DNSException:
        return True
    return False


# --- the parser accepts good queries -------------------------------------------------------


def test_a_plain_query_parses_into_its_fields_and_raw_question():
    q = wire.parse_query(header(flags=0x0100) + QUESTION)
    assert (q.qid, q.flags, q.opcode) == (0x1234, 0x0100, 0)
    assert q.question == QUESTION
    assert q.qname == QNAME
    assert (q.qtype, q.qclass) == (wire.A, wire.CLASS_IN)
    assert q.edns is None


def test_the_question_keeps_its_case_and_the_lookup_name_is_lowercased():
    mixed = wire.name_to_wire("WeB.ShOp.svc.ClusterSet.LOCAL")
    q = wire.parse_query(header() + mixed + b"\x00\x01\x00\x01")
    assert q.qname == mixed
    assert q.qname_lower == QNAME


def test_an_edns_query_parses_size_version_do_and_options():
    options = struct.pack("!HH", 100, 3) + b"abc" + struct.pack("!HH", 10, 0)
    q = wire.parse_query(header(ar=1) + QUESTION + opt(size=4096, do=True, rdata=options))
    assert q.edns is not None
    assert (q.edns.udp_size, q.edns.version, q.edns.do) == (4096, 0, True)
    assert q.edns.options == [(100, b"abc"), (10, b"")]


def test_the_edns_version_is_read_from_the_opt_ttl():
    q = wire.parse_query(header(ar=1) + QUESTION + opt(version=1))
    assert q.edns is not None and q.edns.version == 1


def test_strictly_backward_pointers_are_accepted_in_additional_section_owners():
    # Offset 12 is the question name; 16 is "shop.svc...", a suffix of it.
    first = b"\x01x\xc0\x0c"  # x.web.shop.svc.clusterset.local
    q = wire.parse_query(query_with_additional(first, b"\xc0\x10"))
    assert q.qname == QNAME


def test_a_chain_of_pointers_each_before_the_previous_one_is_accepted():
    # Record 1 owner (at offset `r1`) = "a" + pointer to the question.
    # Record 2 owner = pointer to record 1's owner, which then points further back.
    r1 = 12 + len(QUESTION)
    rec1 = b"\x01a\xc0\x0c"
    rec2 = struct.pack("!H", 0xC000 | r1)
    data = query_with_additional(rec1, rec2)
    wire.parse_query(data)
    assert not dnspython_rejects(data)


@pytest.mark.parametrize("size", [0, 100, 511, 512, 65535])
def test_any_advertised_udp_size_is_parsed_as_sent(size):
    q = wire.parse_query(header(ar=1) + QUESTION + opt(size=size))
    assert q.edns is not None and q.edns.udp_size == size


def test_a_name_of_exactly_255_octets_is_accepted():
    labels = b"\x3f" + b"a" * 63
    name = labels * 3 + b"\x3d" + b"b" * 61 + b"\x00"
    assert len(name) == 255
    q = wire.parse_query(header() + name + b"\x00\x01\x00\x01")
    assert q.qname == name


def test_a_label_of_exactly_63_octets_is_accepted():
    name = b"\x3f" + b"a" * 63 + b"\x00"
    assert wire.parse_query(header() + name + b"\x00\x01\x00\x01").qname == name


# --- the parser rejects malformed queries ---------------------------------------------------


def pointer_loop() -> bytes:
    r1 = 12 + len(QUESTION)
    r2 = r1 + 4 + 14  # after record 1 (owner 4 octets + fixed 10 + rdata 4)
    return query_with_additional(b"\x01a" + struct.pack("!H", 0xC000 | r2),
                                 b"\x01b" + struct.pack("!H", 0xC000 | r1))


MALFORMED = {
    "QDCOUNT 0": header(qd=0),
    "QDCOUNT 2": header(qd=2) + QUESTION + QUESTION,
    "name past the end": header() + QNAME[:8],
    "question type missing": header() + QNAME + b"\x00",
    "label type 0x40": header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
    "label type 0x80": header() + b"\x80a\x00\x00\x01\x00\x01",
    "label of 64 octets": header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
    "name of 256 octets": header() + b"\x3f" + b"a" * 63 + (b"\x3f" + b"a" * 63) * 2
    + b"\x3e" + b"b" * 62 + b"\x00\x00\x01\x00\x01",
    "name of 128 one-octet labels": header() + b"\x01a" * 128 + b"\x00\x00\x01\x00\x01",
    "pointer in the question": header() + b"\xc0\x0c\x00\x01\x00\x01",
    "pointer to itself": query_with_additional(
        struct.pack("!H", 0xC000 | (12 + len(QUESTION)))),
    "pointer loop": pointer_loop(),
    "forward pointer": query_with_additional(
        struct.pack("!H", 0xC000 | (12 + len(QUESTION) + 3))),
    "pointer past the end": query_with_additional(b"\xc0\xff"),
    "pointer into the header": query_with_additional(b"\xc0\x02"),
    "truncated pointer": header(ar=1) + QUESTION + b"\xc0",
    "trailing garbage": header() + QUESTION + b"\x00\x01junk",
    "one trailing zero byte": header() + QUESTION + b"\x00",
    "ARCOUNT 3 with one OPT": header(ar=3) + QUESTION + opt(),
    "two OPT records": header(ar=2) + QUESTION + opt() + opt(),
    "OPT owner not the root": header(ar=1) + QUESTION + opt(owner=b"\x01a\x00"),
    "OPT in the answer section": header(an=1) + QUESTION + opt(),
    "OPT in the authority section": header(ns=1) + QUESTION + opt(),
    "option longer than RDLENGTH": header(ar=1) + QUESTION
    + opt(rdata=struct.pack("!HH", 100, 8) + b"abcd"),
    "truncated option header": header(ar=1) + QUESTION + opt(rdata=b"\x00\x64\x00"),
    "RDLENGTH past the end": header(ar=1) + QUESTION + opt(rdlen=10),
    "record header past the end": header(ar=1) + QUESTION + b"\x00\x00\x29\x04",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_query_raises_form_error_with_its_id_and_flags(data):
    with pytest.raises(FormError) as info:
        wire.parse_query(data)
    assert info.value.qid == 0x1234
    assert info.value.flags == struct.unpack_from("!H", data, 2)[0]


# dnspython accepts OPT outside the additional section, any QDCOUNT and pointers into the
# header (it reads header octets as labels); the others it rejects as we do.
_DNSPYTHON_ACCEPTS = {"QDCOUNT 0", "QDCOUNT 2", "OPT in the answer section",
                      "pointer into the header",
                      "OPT in the authority section", "two OPT records", "OPT owner not the root",
                      "pointer in the question", "truncated option header",
                      "option longer than RDLENGTH"}


@pytest.mark.parametrize(
    "data",
    [v for k, v in MALFORMED.items() if k not in _DNSPYTHON_ACCEPTS],
    ids=[k for k in MALFORMED if k not in _DNSPYTHON_ACCEPTS],
)
def test_dnspython_agrees_that_each_structurally_broken_query_is_malformed(data):
    assert dnspython_rejects(data)


@pytest.mark.parametrize("n", range(12))
def test_fewer_than_twelve_octets_raise_short_message(n):
    with pytest.raises(ShortMessage):
        wire.parse_query(b"\x12" * n)


def test_a_long_chain_of_backward_pointers_is_bounded_by_the_name_length_limit():
    # 200 records, each "a" + pointer to the previous owner: the 128th exceeds 255 octets.
    data = bytearray(header(ar=200) + QUESTION)
    prev = 12
    for _ in range(200):
        here = len(data)
        data += b"\x01a" + struct.pack("!H", 0xC000 | prev) + struct.pack(
            "!HHIH", wire.A, wire.CLASS_IN, 5, 4) + b"\x0a\x00\x00\x01"
        prev = here
    with pytest.raises(FormError, match="255"):
        wire.parse_query(bytes(data))


def test_a_form_error_is_a_wire_error_and_a_short_message_too():
    assert issubclass(FormError, wire.WireError)
    assert issubclass(ShortMessage, wire.WireError)


# --- names -------------------------------------------------------------------------------------


def test_name_to_wire_keeps_case_and_accepts_relative_and_absolute_names():
    assert wire.name_to_wire("Web.Local") == b"\x03Web\x05Local\x00"
    assert wire.name_to_wire("Web.Local.") == b"\x03Web\x05Local\x00"
    assert wire.name_to_wire(".") == b"\x00"
    assert wire.name_to_wire("") == b"\x00"


@pytest.mark.parametrize("bad", ["a..b", "a" * 64 + ".local", ".".join(["abcdefg"] * 32),
                                 "caf\u00e9.local"])
def test_name_to_wire_rejects_empty_or_long_labels_long_names_and_non_ascii(bad):
    with pytest.raises(ValueError):
        wire.name_to_wire(bad)


def test_name_to_wire_matches_dnspython_for_a_mixed_case_name():
    text = "_Http._TCP.web.shop.svc.clusterset.local."
    assert wire.name_to_wire(text) == dns.name.from_text(text).to_wire()


def test_wire_to_text_escapes_dots_backslashes_and_non_printable_octets():
    raw = b"\x04a.b\\\x02\x00\xff\x05local\x00"
    assert wire.wire_to_text(raw) == "a\\046b\\092.\\000\\255.local."
    assert wire.wire_to_text(b"\x00") == "."


labels = st.lists(st.binary(min_size=1, max_size=20), min_size=0, max_size=6)


@settings(max_examples=300, deadline=None)
@given(labels)
def test_wire_to_text_reads_back_through_dnspython_to_the_same_wire_name(parts):
    wire_name = b"".join(bytes([len(p)]) + p for p in parts) + b"\x00"
    text = wire.wire_to_text(wire_name)
    assert dns.name.from_text(text).to_wire() == wire_name


def test_parent_names_lists_the_names_strictly_between_a_name_and_its_origin():
    origin = wire.name_to_wire("clusterset.local")
    name = wire.name_to_wire("a.b.c.clusterset.local")
    assert wire.parent_names(name, origin) == [
        wire.name_to_wire("b.c.clusterset.local"),
        wire.name_to_wire("c.clusterset.local"),
    ]
    assert wire.parent_names(origin, origin) == []


def test_is_subdomain_respects_label_boundaries():
    origin = wire.name_to_wire("clusterset.local")
    assert wire.is_subdomain(origin, origin)
    assert wire.is_subdomain(wire.name_to_wire("x.clusterset.local"), origin)
    assert not wire.is_subdomain(wire.name_to_wire("xclusterset.local"), origin)
    assert not wire.is_subdomain(wire.name_to_wire("local"), origin)
    assert not wire.is_subdomain(b"\x00", origin)


# --- encoding ---------------------------------------------------------------------------------


def encode_message(qname_text: str, qtype: int, records: list[Record], *,
                   known: bytes | None = None) -> bytes:
    qname = wire.name_to_wire(qname_text)
    comp = wire.Compressor(qname, known=known)
    for rec in records:
        comp.record(rec)
    body = comp.take()
    return (header(flags=wire.FLAG_QR | wire.FLAG_AA, an=len(records))
            + qname + struct.pack("!HH", qtype, wire.CLASS_IN) + body)


def test_compressor_output_decodes_with_dnspython_to_the_records_written():
    origin = wire.name_to_wire("clusterset.local")
    svc = wire.name_to_wire("db.data.svc.clusterset.local")
    target = wire.name_to_wire("db-0.east-a.db.data.svc.clusterset.local")
    recs = [
        Record(svc, wire.SRV, 5, (wire.srv_rdata(0, 100, 5432, target),)),
        Record(target, wire.A, 5, (wire.a_rdata("10.1.2.10"),)),
        Record(target, wire.AAAA, 5, (wire.a_rdata("fd00::1"),)),
        Record(svc, wire.TXT, 5, (wire.txt_rdata("hello", ""),)),
        Record(origin, wire.SOA, 30, wire.soa_rdata(
            wire.name_to_wire("ns.clusterset.local"),
            wire.name_to_wire("hostmaster.clusterset.local"), 7, 3600, 600, 86400, 5)),
        Record(origin, wire.NS, 30, (Name(wire.name_to_wire("ns.clusterset.local")),)),
    ]
    data = encode_message("db.data.svc.clusterset.local", wire.SRV, recs)
    msg = dns.message.from_wire(data)
    lines = sorted(rr.to_text() for rr in msg.answer)
    assert lines == sorted([
        "db.data.svc.clusterset.local. 5 IN SRV 0 100 5432 "
        "db-0.east-a.db.data.svc.clusterset.local.",
        "db-0.east-a.db.data.svc.clusterset.local. 5 IN A 10.1.2.10",
        "db-0.east-a.db.data.svc.clusterset.local. 5 IN AAAA fd00::1",
        'db.data.svc.clusterset.local. 5 IN TXT "hello" ""',
        "clusterset.local. 30 IN SOA ns.clusterset.local. hostmaster.clusterset.local. "
        "7 3600 600 86400 5",
        "clusterset.local. 30 IN NS ns.clusterset.local.",
    ])


def test_compressor_points_owners_back_at_the_question_and_never_compresses_srv_targets():
    svc = wire.name_to_wire("web.shop.svc.clusterset.local")
    recs = [Record(svc, wire.SRV, 5, (wire.srv_rdata(0, 100, 80, svc),))]
    data = encode_message("web.shop.svc.clusterset.local", wire.SRV, recs)
    answer = data[12 + len(svc) + 4:]
    assert answer[:2] == b"\xc0\x0c"
    assert answer.endswith(svc)  # RFC 2782: the target is written in full


def test_compressor_with_known_suffix_only_points_into_that_suffix():
    origin = wire.name_to_wire("clusterset.local")
    qname = wire.name_to_wire("nope.clusterset.local")
    soa = Record(origin, wire.SOA, 5, wire.soa_rdata(
        wire.name_to_wire("ns.clusterset.local"),
        wire.name_to_wire("hostmaster.clusterset.local"), 1, 2, 3, 4, 5))
    data = encode_message("nope.clusterset.local", wire.SOA, [soa], known=origin)
    answer = data[12 + len(qname) + 4:]
    assert answer[:2] == struct.pack("!H", 0xC000 | (12 + len(qname) - len(origin)))
    # The same bytes decode under any other question name of equal length in the origin.
    other = wire.name_to_wire("abcd.clusterset.local")
    msg = dns.message.from_wire(data[:12] + other + data[12 + len(other):])
    assert msg.answer[0].name == dns.name.from_text("clusterset.local.")


ldh = st.text(alphabet="abc012-", min_size=1, max_size=10)


@settings(max_examples=300, deadline=None)
@given(
    qlabels=st.lists(ldh, min_size=1, max_size=4),
    owners=st.lists(st.lists(ldh, min_size=0, max_size=4), min_size=1, max_size=12),
)
def test_compressed_random_names_decode_with_dnspython_to_the_names_written(qlabels, owners):
    qname_text = ".".join(qlabels) + ".clusterset.local."
    names = [".".join([*o, "clusterset", "local"]) + "." for o in owners]
    recs = [Record(wire.name_to_wire(n), wire.NS, 5, (Name(wire.name_to_wire(n)),))
            for n in names]
    data = encode_message(qname_text, wire.NS, recs)
    msg = dns.message.from_wire(data)
    got = [(rrset.name.to_text(), rd.target.to_text()) for rrset in msg.answer for rd in rrset]
    assert sorted(got) == sorted({(n, n) for n in names})
    assert sum(len(rrset) for rrset in msg.answer) == len(set(names))


def test_opt_record_is_version_zero_with_mbz_clear_and_do_as_asked():
    rec = wire.opt_record(udp_size=1232, do=True, ext_rcode=1)
    owner, rtype, size, ttl, rdlen = rec[0], *struct.unpack("!HHIH", rec[1:])
    assert (owner, rtype, size, rdlen) == (0, wire.OPT, 1232, 0)
    assert ttl == (1 << 24) | wire.EDNS_DO
    assert struct.unpack("!I", wire.opt_record(udp_size=512, do=False)[5:9])[0] == 0


def test_ede_option_is_code_fifteen_with_info_code_and_text():
    assert wire.ede_option(3, "stale") == b"\x00\x0f\x00\x07\x00\x03stale"


def test_txt_rdata_truncates_each_string_to_255_octets():
    rd = wire.txt_rdata("x" * 300, "")
    assert rd == b"\xff" + b"x" * 255 + b"\x00"
