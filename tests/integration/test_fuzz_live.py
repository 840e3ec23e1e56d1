"""A live server fed the fuzz corpus and random bytes over real UDP keeps answering.

The unit tests (``tests/unit/test_fuzz_handler.py``) drive the handler with the
same packets without sockets; this runs them through the real transport, in
bursts, and checks that a good query after each burst is still answered and that
nothing but ICMP was counted as a transport error.
"""

from __future__ import annotations

import random
import socket
import time

import dns.message

from tests.unit.test_fuzz_handler import HEADER, SEEDS


def test_a_live_server_fed_the_corpus_and_random_bytes_over_udp_still_answers(demo_server):
    rng = random.Random(7)
    packets = [d for _, d, _ in SEEDS]
    packets += [rng.randbytes(rng.randint(0, 300)) for _ in range(300)]
    good = HEADER.pack(0x4242, 0, 1, 0, 0, 0) + b"\x0aclusterset\x05local\x00\x00\x06\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.connect(("127.0.0.1", demo_server.port))
        for i in range(0, len(packets), 50):  # in bursts, so no reply is lost to the buffer
            for p in packets[i : i + 50]:
                s.send(p)
            s.send(good)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                reply = s.recv(65535)
                if reply[:2] == b"\x42\x42" and reply[2] & 0x80:
                    break
            else:
                raise AssertionError("the good query after a burst was not answered")
            assert dns.message.from_wire(reply).answer  # the SOA
    errors = demo_server.call(lambda: dict(demo_server.app.server.stats.errors))
    assert not {k: v for k, v in errors.items() if k != "udp_icmp"}
