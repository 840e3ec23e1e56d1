"""Property-based fuzzing of the whole query handler (bytes in, bytes or nothing out).

The handler is built over the demo data without sockets. Properties:

* any bytes: ``Handler.handle`` never raises; it returns nothing (short
  packets, responses) or a reply dnspython parses, with QR=1 and the query's ID;
* structured-but-wrong messages (bad counts, pointer loops, long labels and
  names, truncated RDATA, duplicate OPT, EDNS versions, odd opcodes and
  classes): the same, plus whatever dnspython rejects is answered FORMERR
  (NOTIMP for opcodes other than QUERY), never answered with data;
* for valid queries the fast path returns exactly the bytes of the full path;
* the seed corpus in tests/fuzz/corpus/ replays with its recorded outcome,
  through the handler and against a live server over UDP.
"""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from feddns import wire
from feddns.config import Settings, StaticSourceConfig, load_settings
from feddns.model.registry import Registry
from feddns.model.services import ClusterSnapshot
from feddns.sources.static import load_static, parse_static
from feddns.table.compiler import sync_table
from feddns.table.table import AnswerTable
from tests.support import DEMO_CONFIG
from tests.unit.dnscase import (
    handle,
    make_handler,
    make_table,
)

CORPUS = Path(__file__).resolve().parent.parent / "fuzz" / "corpus"
HEADER = struct.Struct("!HHHHHH")
OPCODES = [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 15]
QTYPES = [wire.A, wire.AAAA, wire.SRV, wire.TXT, wire.SOA, wire.NS, wire.ANY, 1000]
QCLASSES = [1, 1, 1, 3, 4, 254, 255, 0, 65535]
RCODES = {"noerror": 0, "formerr": 1, "servfail": 2, "nxdomain": 3, "notimp": 4,
          "refused": 5, "badvers": 16}
# FEDDNS_FUZZ_EXAMPLES=50000 runs a deep search locally; the default keeps the suite fast.
FUZZ = settings(max_examples=int(os.environ.get("FEDDNS_FUZZ_EXAMPLES", "500")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def build_table(settings_: Settings, snapshots: dict[str, ClusterSnapshot]) -> AnswerTable:
    """An answer table loaded with ``snapshots``, wired as feddns.app.App wires it."""
    registry = Registry.for_clusters(c.name for c in settings_.clusters)
    table = make_table(settings_, serial=2024010100)
    for snapshot in snapshots.values():
        registry.replace(snapshot, now=0.0)
    sync_table(table, registry, wall_now=0.0)
    assert table.loaded
    return table


def demo_table() -> AnswerTable:
    settings_ = load_settings(DEMO_CONFIG)
    snapshots: dict[str, ClusterSnapshot] = {}
    for path in {c.source.file for c in settings_.clusters
                 if isinstance(c.source, StaticSourceConfig)}:
        snapshots.update(load_static(path))
    return build_table(settings_, snapshots)


def big_table() -> AnswerTable:
    """Headless services whose answers overflow 512 (with and without additional records)."""
    settings_ = Settings.model_validate({
        "dns": {"max_records": 100},
        "clusters": [{"name": "east", "region": "r", "zones": ["z"],
                      "source": {"type": "static", "file": "unused.yaml"}}],
    })
    services = [
        {"namespace": "bulk", "name": name, "type": "Headless",
         "ports": [{"name": "http", "port": 80}],
         "endpoints": [{"address": f"10.{subnet}.0.{i + 1}", "hostname": f"{name}-{i}"}
                       for i in range(count)]}
        for name, count, subnet in (("big", 30, 5), ("mid", 6, 6), ("huge", 90, 7))
    ]
    return build_table(settings_, parse_static({"clusters": {"east": {"services": services}}},
                                               "inline"))


TABLE = demo_table()
BIG_TABLE = big_table()
NOW = 1000.0
"""The handlers' clock, frozen: ``_explain`` answers say how many seconds ago a cluster
synced, and tests that ask twice (the listener, then the full path) must not see that
number move between the two when a second ticks over."""
HANDLER = make_handler(TABLE, clock=lambda: NOW)
# Handlers advertising other sizes over the same tables (and the same shared answers).
HANDLERS = [make_handler(table, udp_payload_size=size, clock=lambda: NOW)
            for table in (TABLE, BIG_TABLE) for size in (1232, 4096, 512)]
DEMO_NAMES = sorted(set(TABLE.names) | set(TABLE.ents) | set(TABLE.static)
                    | set(BIG_TABLE.names))

# Names whose answers are big or have additional records (TC and lean answers).
KEY_NAMES = [wire.name_to_wire(n) for n in (
    "big.bulk.svc.clusterset.local", "mid.bulk.svc.clusterset.local",
    "huge.bulk.svc.clusterset.local", "_http._tcp.mid.bulk.svc.clusterset.local",
    "db.data.svc.clusterset.local", "web.shop.svc.clusterset.local", "clusterset.local")]


def labels_of(name: bytes) -> list[bytes]:
    out, pos = [], 0
    while name[pos]:
        out.append(name[pos + 1 : pos + 1 + name[pos]])
        pos += name[pos] + 1
    return out


def encode_labels(labels: list[bytes]) -> bytes:
    return b"".join(bytes([len(lb)]) + lb for lb in labels) + b"\x00"


def check_reply(query: bytes, reply: bytes | None, *, tcp: bool) -> dns.message.Message | None:
    """The invariants every reply keeps, whatever the query; returns the parsed reply."""
    if len(query) < 12 or query[2] & 0x80:
        assert reply is None
        return None
    assert reply is not None
    # Parsed as a QUERY message whatever its opcode (the opcode is compared below): dnspython
    # reads opcode UPDATE with RFC 2136 rules, which an echoed non-SOA question breaks.
    msg = dns.message.from_wire(reply[:2] + bytes([reply[2] & 0x87]) + reply[3:])
    assert reply[:2] == query[:2]
    assert msg.flags & dns.flags.QR
    assert (reply[2] >> 3) & 0xF == (query[2] >> 3) & 0xF  # opcode copied
    assert reply[2] & 1 == query[2] & 1  # RD copied
    assert not reply[3] & 0xF0  # RA, Z, AD, CD clear
    if msg.opt is not None:
        assert msg.edns == 0
        assert msg.ednsflags & 0x7FFF == 0
        assert msg.options == ()
        assert msg.payload == HANDLER.udp_payload_size
    if query[10:12] == b"\x00\x00":
        assert msg.opt is None  # no OPT in the query, none in the reply
    if not tcp:
        assert len(reply) <= (512 if msg.opt is None else HANDLER.udp_payload_size)
    if msg.rcode() in (dns.rcode.FORMERR, dns.rcode.NOTIMP, dns.rcode.REFUSED,
                       dns.rcode.BADVERS):
        assert msg.answer == [] and msg.authority == []
        assert not msg.flags & dns.flags.AA
    return msg


def reply_question(reply: bytes | None) -> bytes:
    """The raw question section of a reply (empty when QDCOUNT is 0)."""
    assert reply is not None
    if reply[4:6] == b"\x00\x00":
        return b""
    end = 12
    while reply[end]:
        end += reply[end] + 1
    return reply[12 : end + 5]


def dnspython_rejects(data: bytes) -> bool:
    try:
        dns.message.from_wire(data)
    except (dns.exception.DNSException, ValueError):
        return True
    return False


# --- (a) arbitrary bytes ------------------------------------------------------------------


def header_like() -> st.SearchStrategy[bytes]:
    """Random bytes that start like a query (QR=0, QDCOUNT=1) more often than chance."""
    return st.builds(
        lambda qid, flags, counts, rest: struct.pack("!HH", qid, flags & 0x7FFF) + counts + rest,
        st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
        st.sampled_from([b"\x00\x01\x00\x00\x00\x00\x00\x00", b"\x00\x01\x00\x00\x00\x00\x00\x01",
                         b"\x00\x00\x00\x00\x00\x00\x00\x00", b"\x00\x02\x00\x00\x00\x00\x00\x01"]),
        st.binary(max_size=300),
    )


@FUZZ
@given(data=st.one_of(st.binary(max_size=600), header_like()), tcp=st.booleans())
@example(data=b"", tcp=False)
@example(data=bytes.fromhex("123400000001000000000001") + b"\x00\x00\x06\x00\x01", tcp=False)
def test_arbitrary_bytes_never_raise_and_get_nothing_or_a_well_formed_reply(data, tcp):
    for handler in HANDLERS:
        reply = handle(handler, data, tcp)
        assert reply == handler.handle_full(data, tcp=tcp)
    check_reply(data, handle(HANDLER, data, tcp), tcp=tcp)


# --- (b) structured but wrong messages -------------------------------------------------------


ptr = st.integers(0, 0x3FFF).map(lambda t: struct.pack("!H", 0xC000 | t))
plain_label = st.binary(min_size=1, max_size=12).map(lambda b: bytes([len(b)]) + b)
long_label = st.integers(64, 0xBF).flatmap(
    lambda n: st.just(bytes([n]) + b"x" * min(n & 0x3F or 63, 63)))


@st.composite
def bad_names(draw: st.DrawFn) -> bytes:
    """A wire name that is right, or wrong in one of the classic ways."""
    kind = draw(st.sampled_from(["ok", "ok", *["demo"] * 8, "long-label",
                                 "long-name", "pointer", "labels-then-pointer", "cut",
                                 "empty"]))
    if kind == "demo":
        return draw(st.sampled_from(DEMO_NAMES))
    if kind == "long-label":
        return draw(plain_label) + draw(long_label) + b"\x00"
    if kind == "long-name":
        return b"\x01a" * draw(st.integers(127, 140)) + b"\x00"
    if kind == "pointer":
        return draw(ptr)
    if kind == "labels-then-pointer":
        return b"".join(draw(st.lists(plain_label, max_size=3))) + draw(ptr)
    labels = b"".join(draw(st.lists(plain_label, max_size=5)))
    if kind == "cut":
        return labels
    if kind == "empty":
        return b""
    return labels + b"\x00"


@st.composite
def opt_records(draw: st.DrawFn) -> bytes:
    owner = draw(st.sampled_from([b"\x00"] * 6 + [b"\x01a\x00", b"\xc0\x0c"]))
    size = draw(st.sampled_from([0, 100, 512, 1232, 4096, 65535]))
    version = draw(st.sampled_from([0, 0, 0, 1, 2, 255]))
    flags = draw(st.sampled_from([0, 0x8000, 0x0040, 0xFFFF]))
    ext = draw(st.sampled_from([0, 0, 1]))
    options = b""
    for code, body, lie in draw(st.lists(st.tuples(
            # Option codes dnspython keeps opaque (it validates e.g. COOKIE and ECS bodies,
            # which a server that implements neither ignores, RFC 6891 §6.1.2).
            st.sampled_from([3, 100, 65001]), st.binary(max_size=8),
            st.sampled_from([0] * 8 + [1, -1, 40])), max_size=3)):
        options += struct.pack("!HH", code, max(0, len(body) + lie)) + body
    rdlen = len(options) + draw(st.sampled_from([0] * 8 + [1, -1, 50]))
    return owner + struct.pack("!HHIH", wire.OPT, size, ext << 24 | version << 16 | flags,
                               max(0, rdlen)) + options


@st.composite
def other_records(draw: st.DrawFn) -> bytes:
    owner = draw(st.one_of(bad_names(), st.sampled_from([b"\x00", b"\xc0\x0c"])))
    rdata = draw(st.binary(max_size=10))
    rdlen = len(rdata) + draw(st.sampled_from([0] * 6 + [3, -1]))
    # A private-use type: dnspython keeps its RDATA opaque, as the server does.
    return owner + struct.pack("!HHIH", 65280, 1, 5, max(0, rdlen)) + rdata


@st.composite
def wrong_messages(draw: st.DrawFn) -> bytes:
    def rarely() -> bool:
        return draw(st.integers(0, 7)) == 7

    qr = int(rarely())
    opcode = 0 if draw(st.booleans()) else draw(st.sampled_from(OPCODES))
    low = draw(st.sampled_from([0, 0, 0x01, 0x06, 0xFF]))  # AA, TC, RD, byte 4 bits
    flags = qr << 15 | opcode << 11 | draw(st.sampled_from([0, 0x0100, 0x0700])) | low
    qdcount = draw(st.integers(0, 2)) if rarely() else 1
    questions = [(draw(bad_names()), draw(st.sampled_from([*QTYPES, 0, 41, 252])),
                  draw(st.sampled_from(QCLASSES))) for _ in range(qdcount)]
    answers = [draw(other_records())] if rarely() else []
    additional = draw(st.lists(st.one_of(opt_records(), other_records()), max_size=2))
    counts = [len(questions), len(answers), 0, len(additional)]
    if rarely():
        counts = [draw(st.integers(0, 3)) if draw(st.booleans()) else c for c in counts]
    body = b"".join(n + struct.pack("!HH", t, c) for n, t, c in questions)
    body += b"".join(answers) + b"".join(additional)
    data = HEADER.pack(draw(st.integers(0, 0xFFFF)), flags, *counts) + body
    if rarely():
        data += draw(st.binary(min_size=1, max_size=4))  # trailing garbage
    if rarely():
        data = data[: draw(st.integers(0, len(data)))]  # cut anywhere
    return data


@FUZZ
@given(data=wrong_messages(), tcp=st.booleans())
def test_structured_malformed_messages_get_formerr_or_notimp_and_never_data(data, tcp):
    for handler in HANDLERS:
        assert handle(handler, data, tcp) == handler.handle_full(data, tcp=tcp)
    msg = check_reply(data, handle(HANDLER, data, tcp), tcp=tcp)
    if msg is None:
        return
    opcode = (data[2] >> 3) & 0xF
    if opcode != 0:
        assert msg.rcode() == dns.rcode.NOTIMP
    elif dnspython_rejects(data):
        assert msg.rcode() == dns.rcode.FORMERR
    try:
        parsed = wire.parse_query(data)
    except wire.FormError:
        assert msg.rcode() in (dns.rcode.FORMERR, dns.rcode.NOTIMP)
        return
    # A query the strict parser accepts echoes its question byte for byte.
    assert reply_question(handle(HANDLER, data, tcp)) == parsed.question
    if opcode == 0:
        # What the strict parser accepts, dnspython reads as the same question name.
        assert dns.message.from_wire(data).question[0].name.to_wire().lower() \
            == parsed.qname_lower
        if parsed.edns is not None and parsed.edns.version > 0:
            assert msg.rcode() == dns.rcode.BADVERS


# --- (c) fast path == full path -------------------------------------------------------------


random_label = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=15)
    .map(str.encode),
    st.binary(min_size=1, max_size=10),
)


@st.composite
def valid_queries(draw: st.DrawFn) -> bytes:
    choice = draw(st.sampled_from(["key", "key", "demo", "demo", "below-demo", "random",
                                   "outside"]))
    if choice == "key":
        labels = labels_of(draw(st.sampled_from(KEY_NAMES)))
    elif choice == "demo":
        labels = labels_of(draw(st.sampled_from(DEMO_NAMES)))
    elif choice == "below-demo":
        labels = draw(st.lists(random_label, min_size=1, max_size=3)) + labels_of(
            draw(st.sampled_from(DEMO_NAMES)))
    elif choice == "random":
        labels = [*draw(st.lists(random_label, max_size=4)), b"clusterset", b"local"]
    else:
        labels = draw(st.lists(random_label, max_size=4))
    rng = draw(st.randoms(use_true_random=False))
    labels = [bytes(c ^ 0x20 if 0x61 <= (c | 0x20) <= 0x7A and rng.random() < 0.5 else c
                    for c in lb) for lb in labels]
    qname = encode_labels(labels)
    if len(qname) > 255:
        qname = b"\x00"
    qtype = draw(st.sampled_from(QTYPES))
    rd = draw(st.booleans())
    edns = draw(st.sampled_from([None, "plain"]))
    arcount = 0 if edns is None else 1
    data = HEADER.pack(draw(st.integers(0, 0xFFFF)), 0x0100 if rd else 0, 1, 0, 0, arcount)
    data += qname + struct.pack("!HH", qtype, wire.CLASS_IN)
    if edns is not None:
        size = draw(st.sampled_from([0, 100, 512, 600, 1232, 1400, 4096, 65535]))
        do = draw(st.booleans())
        data += b"\x00" + struct.pack("!HHIH", wire.OPT, size, wire.EDNS_DO if do else 0, 0)
    return data


@FUZZ
@given(data=valid_queries(), tcp=st.booleans())
def test_the_fast_path_returns_exactly_the_bytes_of_the_full_path(data, tcp):
    for handler in HANDLERS:
        fast = handle(handler, data, tcp)
        assert fast == handler.handle_full(data, tcp=tcp)
    msg = check_reply(data, handle(HANDLER, data, tcp), tcp=tcp)
    assert msg is not None and msg.rcode() != dns.rcode.FORMERR


def plain_query(qid: int, qname: bytes, qtype: int, *, rd: bool,
                edns: tuple[int, bool] | None) -> bytes:
    data = HEADER.pack(qid, 0x0100 if rd else 0, 1, 0, 0, 0 if edns is None else 1)
    data += qname + struct.pack("!HH", qtype, wire.CLASS_IN)
    if edns is not None:
        size, do = edns
        data += b"\x00" + struct.pack("!HHIH", wire.OPT, size, wire.EDNS_DO if do else 0, 0)
    return data


def test_the_fast_path_equals_the_full_path_for_every_key_name_type_and_edns_variant():
    rng = random.Random(3)
    outcomes: set[str] = set()
    variants = [None] + [(size, do) for size in (0, 512, 1232, 4096) for do in (False, True)]
    for qname in KEY_NAMES:
        for qtype in QTYPES:
            for edns in variants:
                for rd in (False, True):
                    mixed = bytes(c ^ 0x20 if 0x61 <= c <= 0x7A and rng.random() < 0.5 else c
                                  for c in qname)
                    data = plain_query(rng.randrange(0x10000), mixed, qtype, rd=rd, edns=edns)
                    for handler in HANDLERS:
                        for tcp in (False, True):
                            fast = handle(handler, data, tcp)
                            assert fast == handler.handle_full(data, tcp=tcp)
                            assert fast is not None
                            flags, ar = struct.unpack_from("!H", fast, 2)[0], fast[11]
                            if flags & wire.FLAG_TC:
                                outcomes.add("truncated")
                            elif not tcp and handle(handler, data, True) != fast:
                                outcomes.add("additional dropped")
                            elif ar > (edns is not None):
                                outcomes.add("with additional")
    # The cases above reach every response shape the fast path must agree on.
    assert outcomes == {"truncated", "additional dropped", "with additional"}


def test_a_second_handler_with_another_udp_size_advertises_its_own_size_on_shared_answers():
    # REFUSED is one shared CompiledAnswer; the fast path's memo on it must not carry
    # the first handler's OPT size into the second handler's replies.
    query = HEADER.pack(7, 0, 1, 0, 0, 1) + b"\x07example\x03com\x00\x00\x01\x00\x01" \
        + b"\x00" + struct.pack("!HHIH", wire.OPT, 4096, 0, 0)
    for handler in (make_handler(TABLE, udp_payload_size=1232),
                    make_handler(TABLE, udp_payload_size=4000)):
        msg = dns.message.from_wire(handle(handler, query, False))  # type: ignore[arg-type]
        assert msg.rcode() == dns.rcode.REFUSED
        assert msg.payload == handler.udp_payload_size


@pytest.mark.parametrize("extra", [b"", b"\x00\x00\x29", b"\x00\x00\x29\x04\xd0\x00\x00",
                                   b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00"],
                         ids=["nothing", "3 octets", "7 octets", "10 octets"])
def test_a_query_announcing_an_opt_that_is_missing_or_cut_short_gets_formerr_not_an_exception(
        extra):
    query = HEADER.pack(9, 0, 1, 0, 0, 1) + b"\x0aclusterset\x05local\x00\x00\x06\x00\x01" + extra
    for tcp in (False, True):
        reply = handle(HANDLER, query, tcp)
        assert reply is not None
        assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR


# --- the seed corpus ------------------------------------------------------------------------


def load_corpus() -> list[tuple[str, bytes, str]]:
    rows = []
    for path in sorted(CORPUS.glob("*.txt")):
        for line in path.read_text().splitlines():
            text, _, note = line.partition("#")
            if not text.strip():
                continue
            expected, hexdata = text.split()
            rows.append((expected, b"" if hexdata == "-" else bytes.fromhex(hexdata),
                         note.strip()))
    return rows


SEEDS = load_corpus()


def test_the_seed_corpus_is_there_and_covers_every_outcome():
    assert len(SEEDS) >= 40
    assert {e for e, _, _ in SEEDS} == {"drop", *RCODES} - {"servfail"}


@pytest.mark.parametrize(("expected", "data"), [(e, d) for e, d, _ in SEEDS],
                         ids=[n for _, _, n in SEEDS])
def test_each_seed_packet_gets_its_recorded_outcome_over_udp_and_tcp(expected, data):
    for tcp in (False, True):
        reply = handle(HANDLER, data, tcp)
        assert reply == HANDLER.handle_full(data, tcp=tcp)
        msg = check_reply(data, reply, tcp=tcp)
        if expected == "drop":
            assert msg is None
        else:
            assert msg is not None and msg.rcode() == RCODES[expected]
