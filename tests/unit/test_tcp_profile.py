"""The TCP profile's summary (bench/tcp_profile.py): py-spy's raw lines into shares."""

from __future__ import annotations

from bench.tcp_profile import innermost_feddns, summarise

LOOP = 'process 1:"python -m feddns";run (asyncio/runners.py:118)'
RAW = "\n".join([
    f"{LOOP};data_received (/w/feddns/dns/tcp.py:201);_handle (/w/feddns/dns/handling.py:240) 30",
    f"{LOOP};data_received (/w/feddns/dns/tcp.py:219) 50",
    f"{LOOP} 20",
    "not a sample line",
])


def test_the_innermost_frame_inside_feddns_names_module_function_and_line() -> None:
    stack = ("serve (feddns/cli.py:292);run (asyncio/runners.py:118);"
             "data_received (/w/feddns/dns/tcp.py:201);"
             "encode (/usr/lib/python3/json/encoder.py:10)")
    assert innermost_feddns(stack) == "dns.tcp:data_received:201"
    assert innermost_feddns(stack.replace("/w/feddns", "feddns")) == "dns.tcp:data_received:201"
    # The CLI's frames under the event loop are not where the time goes.
    assert innermost_feddns("serve (feddns/cli.py:292);run (asyncio/runners.py:118)") is None


def test_samples_are_shared_by_innermost_feddns_line_and_module() -> None:
    total, lines, modules = summarise(RAW)
    assert total == 100
    assert lines["dns.handling:_handle:240"] == 30
    assert lines["dns.tcp:data_received:219"] == 50
    assert lines["(event loop: uvloop's C code)"] == 20
    assert modules == {"dns.handling": 30, "dns.tcp": 50, "loop": 20}
