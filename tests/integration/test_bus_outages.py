"""Outages as they really happen, end to end (issue #12): whole feddns processes on the bus.

Each test runs real feddns apps (``tests.support.ServerThread``) against real
mosquitto brokers started by the test, and asks them over UDP on loopback. Instance A
sources the demo federation (``config/demo-services.yaml``, copied so a test can edit
it) and publishes it; instance B knows every cluster only through the bus. Waits are
bounded polls of a condition, never sleeps standing in for synchronisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import dns.rcode
import pytest
import yaml

from feddns.config import load_settings
from tests.mosquitto import MOSQUITTO, Mosquitto, bridged_brokers
from tests.support import REPO, ServerThread, ask, http_get, make_query, wait_until

DEMO_CLUSTERS = ("east-a", "east-b", "west.prod")
CHECKOUT = "checkout.shop.svc.clusterset.local."
WEB = "web.shop.svc.clusterset.local."
KEY = "an-outage-test-federation-secret-0123"

FAST_BUS: dict[str, Any] = {
    "heartbeat_interval": 0.3, "peer_timeout": 1.0, "republish_interval": 30.0,
    "backoff_max": 0.3, "keepalive": 5, "connect_timeout": 2.0,
}
"""Short intervals, so freshness and reconnection follow within a second or two."""


@pytest.fixture(autouse=True)
def _needs_mosquitto() -> None:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (Debian package mosquitto)")


def write_config(tmp: Path, name: str, *, publisher: bool, bus: dict[str, Any]) -> Path:
    """A config for instance ``name``: the demo clusters, static (publisher) or from the bus."""
    data = tmp / "demo-services.yaml"
    if not data.exists():
        shutil.copy(REPO / "config" / "demo-services.yaml", data)
    key = tmp / "bus-key"
    key.write_text(KEY)
    source = ({"type": "static", "file": str(data), "poll_interval": 0.05} if publisher
              else {"type": "bus"})
    config = {
        "federation": "demo",
        "dns": {"listen": ["127.0.0.1:0"]},
        "observe": {"listen": "127.0.0.1:0"},
        "selection": {"hold_down": 0, "readmit_after": 0},
        "clusters": [{"name": c, "region": "r1", "zones": ["z1"], "source": source}
                     for c in DEMO_CLUSTERS],
        "bus": {"topic_prefix": f"t{tmp.name[-12:].replace('_', '-')}",
                "keys": [{"id": "k1", "secret_file": str(key)}], **FAST_BUS, **bus},
    }
    path = tmp / f"feddns-{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def debug(server: ServerThread) -> dict[str, Any]:
    code, text = http_get(server, "/debug")
    assert code == 200
    view: dict[str, Any] = json.loads(text)
    return view


def answer(server: ServerThread, name: str) -> list[str] | str:
    """The sorted A addresses, or the rcode's name when not NOERROR."""
    try:
        reply = ask(server.port, make_query(name), timeout=1.0)
    except Exception as exc:  # a timeout is an answer too, for the assertions
        return type(exc).__name__
    if reply.rcode() != dns.rcode.NOERROR:
        return dns.rcode.to_text(reply.rcode())
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)



def run_pair(tmp: Path, bus_a: dict[str, Any],
             bus_b: dict[str, Any]) -> tuple[ServerThread, ServerThread]:
    a = ServerThread(load_settings(write_config(tmp, "a", publisher=True, bus=bus_a)))
    b = ServerThread(load_settings(write_config(tmp, "b", publisher=False, bus=bus_b)))
    a.start(wait_loaded=False)
    try:
        b.start(wait_loaded=False)
    except BaseException:
        a.stop()
        raise
    return a, b


# --- A. a bus that degrades per service, not per cluster ---------------------------------


def test_the_demo_published_on_the_bus_is_served_whole_by_a_peer_with_the_default_policy(
        tmp_path: Path, broker: Mosquitto) -> None:
    # The demo's checkout has public (documentation-range) load-balancer addresses.
    where = {"broker": "127.0.0.1", "port": broker.port}
    a, b = run_pair(tmp_path, where, where)
    try:
        wait_until(lambda: http_get(b, "/readyz")[0] == 200, timeout=15)
        assert answer(b, CHECKOUT) == ["198.51.100.20", "203.0.113.20"]
        assert answer(b, WEB) == ["10.96.1.10", "10.96.2.10", "10.96.3.10"]
        view = debug(b)
        assert view["bus"]["rejected"] == {}
        assert {c["name"]: c["state"] for c in view["clusters"]} == dict.fromkeys(
            DEMO_CLUSTERS, "fresh")
        assert debug(a)["bus"]["rejected"] == {}  # its own echoes are not "rejected"
    finally:
        b.stop()
        a.stop()


def test_one_rejected_service_leaves_its_cluster_complete_and_the_peer_ready(
        tmp_path: Path, broker: Mosquitto) -> None:
    # B's policy leaves out 203.0.113.0/24: east-a's checkout, and only it, is refused.
    where = {"broker": "127.0.0.1", "port": broker.port}
    narrowed = {**where, "allowed_cidrs": ["10.0.0.0/8", "198.51.100.0/24", "fd00::/8"]}
    a, b = run_pair(tmp_path, where, narrowed)
    try:
        wait_until(lambda: http_get(b, "/readyz")[0] == 200, timeout=15)
        assert http_get(b, "/readyz") == (200, "ready\n")
        assert answer(b, CHECKOUT) == ["198.51.100.20"]  # west.prod's; east-a's refused
        assert answer(b, WEB) == ["10.96.1.10", "10.96.2.10", "10.96.3.10"]
        assert answer(b, "nope.shop.svc.clusterset.local.") == "NXDOMAIN"
        view = debug(b)
        assert {c["name"]: (c["state"], c["services"]) for c in view["clusters"]} == {
            "east-a": ("fresh", 6), "east-b": ("fresh", 2), "west.prod": ("fresh", 4)}
        bus = view["bus"]
        assert set(bus["rejected"]) == {"address"}
        assert bus["peers"]["east-a"]["complete"] is True
        assert bus["peers"]["east-a"]["rejected_services"] == {"shop/checkout": "address"}
        assert bus["peers"]["west.prod"]["rejected_services"] == {}
        # Gap repair does not ask for a topic whose message came and was refused: over
        # more than two repair intervals (2 s each) no request is made.
        assert b.app is not None and b.app.bus is not None
        bus_b = b.app.bus
        assert b.call(lambda: bus_b.merger.gaps(bus_b.topics)) == []
        asked = bus["gap_requests"]
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            assert debug(b)["bus"]["gap_requests"] == asked
            time.sleep(0.25)
    finally:
        b.stop()
        a.stop()


# --- B. more than one broker ----------------------------------------------------------

Message = tuple[str, bytes]


async def read_for(client: aiomqtt.Client, seconds: float) -> list[Message]:
    """Every message ``client`` receives within ``seconds`` (a bounded window)."""
    got: list[Message] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                got.append((message.topic.value, message.payload))
    return got


async def retained(port: int, topic: str, expected: list[Message], *,
                   within: float = 10.0) -> list[Message]:
    """What a new subscriber to ``topic`` gets, asked again until it is ``expected``."""
    deadline = time.monotonic() + within
    while True:
        async with aiomqtt.Client("127.0.0.1", port) as client:
            await client.subscribe(topic, qos=1)
            got = sorted(await read_for(client, 0.3))
        if got == expected or time.monotonic() > deadline:
            return got


async def until_bridged(first: Mosquitto, second: Mosquitto, *, within: float = 10.0) -> None:
    """Wait until a message published on ``second`` reaches ``first``: the bridge is up."""
    deadline = time.monotonic() + within
    async with aiomqtt.Client("127.0.0.1", first.port) as sub, \
            aiomqtt.Client("127.0.0.1", second.port) as pub:
        await sub.subscribe("feddns/probe", qos=1)
        while True:
            await pub.publish("feddns/probe", b"?", qos=1)
            if await read_for(sub, 0.2):
                return
            assert time.monotonic() < deadline, "the bridge did not connect"


async def test_two_bridged_brokers_share_retained_messages_both_ways_and_loop_nothing(
        tmp_path: Path) -> None:
    both = [("feddns/x", b"on the first"), ("feddns/y", b"on the second")]
    with bridged_brokers(tmp_path, pattern="feddns/#") as (first, second):
        await until_bridged(first, second)
        async with aiomqtt.Client("127.0.0.1", first.port) as one, \
                aiomqtt.Client("127.0.0.1", second.port) as two:
            await one.subscribe("feddns/+", qos=1)
            await two.subscribe("feddns/+", qos=1)
            await one.publish("feddns/x", b"on the first", qos=1, retain=True)
            await two.publish("feddns/y", b"on the second", qos=1, retain=True)
            # Each subscriber gets each message once; a loop would keep sending copies.
            seen = await asyncio.gather(read_for(one, 1.0), read_for(two, 1.0))
        assert [sorted(m for m in got if m[0] != "feddns/probe") for got in seen] == [both, both]
        # Retained on both: a new subscriber to either gets both.
        assert await retained(first.port, "feddns/+", both) == both
        assert await retained(second.port, "feddns/+", both) == both
        # A broker restarted without persistence gets them back over the bridge.
        first.restart(kill=True)
        assert await retained(first.port, "feddns/+", both, within=20.0) == both


def brokers_of(*brokers: Mosquitto) -> dict[str, Any]:
    """The ``bus`` keys naming ``brokers``, in this order."""
    return {"brokers": [{"host": "127.0.0.1", "port": m.port} for m in brokers]}


def label(broker: Mosquitto) -> str:
    return f"127.0.0.1:{broker.port}"


def set_web_cluster_ip(tmp: Path, cluster_ip: str) -> None:
    """Change east-a's ``web`` in instance A's static data (A then publishes the change)."""
    data = tmp / "demo-services.yaml"
    doc = yaml.safe_load(data.read_text())
    for svc in doc["clusters"]["east-a"]["services"]:
        if (svc["namespace"], svc["name"]) == ("shop", "web"):
            svc["cluster_ips"] = [cluster_ip]
    staged = data.with_suffix(".new")
    staged.write_text(yaml.safe_dump(doc))
    staged.replace(data)  # atomically: the source never reads half a file


def until(predicate: Callable[[], bool], *, invariant: Callable[[], None],
          timeout: float = 15.0) -> None:
    """Poll ``predicate`` until true, checking ``invariant`` at every turn (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        invariant()
        if predicate():
            return
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        time.sleep(0.02)


def test_with_two_bridged_brokers_losing_either_one_loses_nothing(tmp_path: Path) -> None:
    with bridged_brokers(tmp_path / "brokers") as (first, second):
        where = brokers_of(first, second)
        a, b = run_pair(tmp_path, where, where)
        try:
            before = ["10.96.1.10", "10.96.2.10", "10.96.3.10"]
            wait_until(lambda: answer(b, WEB) == before, timeout=15)
            assert debug(a)["bus"]["broker"] == debug(b)["bus"]["broker"] == label(first)
            assert debug(b)["bus"]["brokers"] == [label(first), label(second)]
            counts = {c["name"]: c["services"] for c in debug(b)["clusters"]}
            assert counts == {"east-a": 7, "east-b": 2, "west.prod": 4}

            def nothing_lost() -> None:
                web = answer(b, WEB)
                assert isinstance(web, list) and web, f"B answered {web}"
                assert {c["name"]: c["services"] for c in debug(b)["clusters"]} == counts

            # The broker both use dies: both go on through the other, at once.
            first.stop(kill=True)
            set_web_cluster_ip(tmp_path, "10.96.1.11")
            until(lambda: answer(b, WEB) == ["10.96.1.11", "10.96.2.10", "10.96.3.10"],
                  invariant=nothing_lost)
            assert debug(a)["bus"]["broker"] == debug(b)["bus"]["broker"] == label(second)
            # The first comes back (empty: no persistence), the second dies.
            first.start()
            second.stop(kill=True)
            set_web_cluster_ip(tmp_path, "10.96.1.12")
            until(lambda: answer(b, WEB) == ["10.96.1.12", "10.96.2.10", "10.96.3.10"],
                  invariant=nothing_lost)
            assert debug(a)["bus"]["broker"] == debug(b)["bus"]["broker"] == label(first)
            assert http_get(b, "/readyz")[0] == 200
        finally:
            b.stop()
            a.stop()
