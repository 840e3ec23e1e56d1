"""The real ``dig`` (bind9-dnsutils) as an independent client of the real server.

dig's own parser and its flags (+tcp, +edns, +ednsopt, +opcode, +bufsize)
check what dnspython-based tests could get wrong the same way on both sides.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ServerThread, dig, serve, write_federation

pytestmark = pytest.mark.skipif(shutil.which("dig") is None,
                                reason="dig is not installed (Debian package bind9-dnsutils)")

WEB = "web.shop.svc.clusterset.local"
BIG = "big.bulk.svc.clusterset.local"
BIG_ENDPOINTS = 30


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A headless service whose A answer (30 records) does not fit 512 octets."""
    tmp: Path = tmp_path_factory.mktemp("dig-big")
    service: dict[str, Any] = {
        "namespace": "bulk", "name": "big", "type": "Headless",
        "ports": [{"name": "http", "port": 80}],
        "endpoints": [{"address": f"10.5.0.{i + 1}"} for i in range(BIG_ENDPOINTS)],
    }
    config = write_federation(tmp, {"east": {"services": [service]}},
                              extra={"dns": {"listen": ["127.0.0.1:0"], "max_records": 100}})
    with serve(config) as server:
        yield server


def header(out: str) -> tuple[str, str, list[str]]:
    """(opcode, status, flags) from dig's ``->>HEADER<<-`` and ``;; flags:`` lines."""
    m = re.search(r"opcode: (\S+), status: (\S+), id: \d+", out)
    f = re.search(r";; flags:([^;]*);", out)
    assert m and f, out
    return m.group(1), m.group(2), f.group(1).split()


def answer_lines(out: str) -> list[str]:
    """The ANSWER SECTION as sorted ``name ttl class type rdata`` lines."""
    section = re.search(r";; ANSWER SECTION:\n(.*?)(?:\n\n|\Z)", out, re.S)
    if section is None:
        return []
    return sorted(" ".join(line.split()) for line in section.group(1).splitlines())


def opt_lines(out: str) -> list[str]:
    section = re.search(r";; OPT PSEUDOSECTION:\n(.*?)(?:\n;; [A-Z]|\n\n|\Z)", out, re.S)
    return section.group(1).splitlines() if section else []


def test_dig_gets_the_same_a_records_over_udp_and_tcp_with_flags_qr_aa(demo_server):
    udp = dig(demo_server.port, "+notcp", "+norec", WEB, "A")
    tcp = dig(demo_server.port, "+tcp", "+norec", WEB, "A")
    expected = [f"{WEB}. 5 IN A 10.96.{i}.10" for i in (1, 2, 3)]
    for out in (udp, tcp):
        assert header(out) == ("QUERY", "NOERROR", ["qr", "aa"])
        assert answer_lines(out) == expected


def test_dig_gets_the_apex_soa(demo_server):
    out = dig(demo_server.port, "+norec", "SOA", "clusterset.local")
    assert header(out) == ("QUERY", "NOERROR", ["qr", "aa"])
    [line] = answer_lines(out)
    assert line.startswith("clusterset.local. 30 IN SOA ns.clusterset.local. "
                           "hostmaster.clusterset.local. ")
    assert line.endswith(" 3600 600 86400 5")


def test_dig_unknown_edns_option_is_not_echoed(demo_server):
    out = dig(demo_server.port, "+nocookie", "+norec", "+noad", "+ednsopt=100", "soa",
              "clusterset.local")
    assert header(out)[1] == "NOERROR"
    lines = opt_lines(out)
    assert len(lines) == 1, lines  # dig prints each returned option on a line of its own
    assert "version: 0" in lines[0] and "udp: 1232" in lines[0]
    assert "OPT=100" not in out


def test_dig_edns_version_1_without_negotiation_gets_badvers(demo_server):
    out = dig(demo_server.port, "+edns=1", "+noednsneg", "+norec", "soa", "clusterset.local")
    _, status, flags = header(out)
    assert status == "BADVERS"
    assert "aa" not in flags
    assert "version: 0" in opt_lines(out)[0]
    assert answer_lines(out) == []


def test_dig_header_only_opcode_15_gets_notimp(demo_server):
    out = dig(demo_server.port, "+header-only", "+opcode=15")
    opcode, status, flags = header(out)
    assert status == "NOTIMP"
    assert opcode in ("RESERVED15", "15")
    assert "aa" not in flags
    assert "QUERY: 0, ANSWER: 0, AUTHORITY: 0, ADDITIONAL: 0" in out


def test_dig_big_answer_is_truncated_at_512_and_complete_over_tcp(big_server):
    udp = dig(big_server.port, "+bufsize=512", "+ignore", "+norec", BIG, "A")
    _, status, flags = header(udp)
    assert status == "NOERROR"
    assert "tc" in flags
    assert answer_lines(udp) == []
    tcp = dig(big_server.port, "+bufsize=512", "+tcp", "+norec", BIG, "A")
    assert "tc" not in header(tcp)[2]
    assert len(answer_lines(tcp)) == BIG_ENDPOINTS
    # Without +ignore dig itself retries over TCP on TC=1 and gets everything.
    retried = dig(big_server.port, "+bufsize=512", "+norec", BIG, "A")
    assert "Truncated, retrying in TCP mode" in retried
    assert len(answer_lines(retried)) == BIG_ENDPOINTS


def test_dig_sees_the_question_case_echoed(demo_server):
    out = dig(demo_server.port, "+norec", "+noedns", "WeB.sHoP.SvC.ClUsTeRsEt.LoCaL", "A")
    assert ";WeB.sHoP.SvC.ClUsTeRsEt.LoCaL.\t" in out
    assert header(out)[1] == "NOERROR"


def test_dig_chaos_version_bind_is_refused(demo_server):
    out = dig(demo_server.port, "+norec", "-c", "CH", "-t", "TXT", "-q", "version.bind")
    assert re.search(r"^;version\.bind\.\s+CH\s+TXT$", out, re.M), out
    assert out.count("Got answer") == 1
    assert header(out)[1] == "REFUSED"
    assert answer_lines(out) == []
