"""What a bus message costs to check: Ed25519 signatures against HMAC, on the same messages.

Issue #17 replaced "any member can sign for any other" (one shared HMAC key)
with per-cluster Ed25519 signatures, whose verification costs more. This
measures it in-process, without a broker, on the messages of the 10,000-service
join (``bench.bus_publish``'s cluster: ClusterIP services ``svc-NNNN`` with
``--endpoints`` endpoints each, the manifest): every message is sealed both
ways, then each receiver checks each message in turn:

* ``verify``: the seal only (``BusKeys.open``): the MAC, or the signature by
  one of the cluster's public keys; what a forged message costs a receiver;
* ``decode``: the whole of ``Codec.decode`` (seal, inflate, schema, model
  objects, the address policy), what an accepted message costs;
* ``sign``: sealing one message (``BusKeys.seal``), the publisher's side.

Times are per message, the median of ``--runs`` passes over all messages;
``bus-verify-us-per-message`` is the Ed25519 figure (the signed federation's
cost), with the HMAC one beside it.

    .venv/bin/python -m bench.bus_verify [--runs 5] [--services 10000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from bench.harness import figure, median
from bench.k8s_common import environment
from feddns.config import BUS_ALLOWED_CIDRS, BUS_DENIED_CIDRS
from feddns.model.services import Endpoint, Port, Service
from feddns.sources.mqtt.addresses import AddressPolicy
from feddns.sources.mqtt.codec import Codec
from feddns.sources.mqtt.keys import KeyRing
from feddns.sources.mqtt.sealing import BusKeys
from feddns.sources.mqtt.signatures import PublicKeys, SigningKey
from feddns.sources.mqtt.topics import Topics

CLUSTER = "east"
TOPICS = Topics("feddns", "bench")
POLICY = AddressPolicy(BUS_ALLOWED_CIDRS, BUS_DENIED_CIDRS)
WALL = 1_800_000_000.0


def services(n: int, endpoints: int) -> list[Service]:
    """The publish benchmark's cluster: ``svc-NNNN`` with ``endpoints`` endpoints each."""
    return [Service("default", f"svc-{i:04d}", cluster_ips=(f"10.96.{i // 250}.{i % 250 + 1}",),
                    ports=(Port("http", 80),),
                    endpoints=tuple(Endpoint(f"10.{101 + e}.{i // 250}.{i % 250 + 1}",
                                             zone=f"zone-{'abc'[e % 3]}", node=f"node-{e}")
                                    for e in range(endpoints)))
            for i in range(n)]


def messages(codec: Codec, cluster: list[Service]) -> list[tuple[str, bytes]]:
    """Every message of the join: one per service, then the manifest."""
    out = [codec.service(CLUSTER, s, instance="east-bench", gen=1, ts=WALL) for s in cluster]
    out.append(codec.snapshot(CLUSTER, [s.key for s in cluster], instance="east-bench", gen=1,
                              ts=WALL))
    return out


def per_message_us(fn: Callable[[str, bytes], object], batch: list[tuple[str, bytes]]) -> float:
    started = time.perf_counter()
    for topic, payload in batch:
        fn(topic, payload)
    return (time.perf_counter() - started) / len(batch) * 1e6


def main() -> None:
    """Run the measurement and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=2, help="per service")
    args = parser.parse_args()
    print(environment(), flush=True)
    key = SigningKey.generate(CLUSTER)
    ring = KeyRing({"k1": b"a-benchmark-federation-secret-0123456789"}, signing_id="k1")
    schemes = {
        "ed25519": (BusKeys(private={CLUSTER: key}),
                    BusKeys(public=PublicKeys({CLUSTER: [key.public],
                                               "west": [SigningKey.generate("west").public]}))),
        "hmac": (BusKeys(hmac=ring), BusKeys(hmac=ring)),
    }
    cluster = services(args.services, args.endpoints)
    prepared = {}
    for name, (sender_keys, receiver_keys) in schemes.items():
        sender = Codec(TOPICS, sender_keys, POLICY, max_payload_size=256 * 1024)
        receiver = Codec(TOPICS, receiver_keys, POLICY, max_payload_size=256 * 1024)
        batch = messages(sender, cluster)
        size = sum(len(p) for _, p in batch) / len(batch)
        print(f"# {name}: {len(batch)} messages, {size:.0f} bytes on average", flush=True)
        prepared[name] = (sender_keys, receiver_keys, receiver, batch)
    results: dict[str, dict[str, list[float]]] = {
        name: {"verify": [], "decode": [], "sign": []} for name in schemes}
    # The schemes take turns within each run, so a machine busy with other work
    # weighs on both alike (the ratio is the robust figure on a shared machine).
    for _ in range(args.runs):
        for name, (sender_keys, receiver_keys, receiver, batch) in prepared.items():
            runs = results[name]

            def open_seal(topic: str, payload: bytes, keys: BusKeys = receiver_keys) -> object:
                return keys.open(topic, CLUSTER, payload)

            def seal(topic: str, body: bytes, keys: BusKeys = sender_keys) -> object:
                return keys.seal(topic, b"j", body, cluster=CLUSTER)

            bodies = [(t, p.split(b"\n", 1)[1]) for t, p in batch]
            runs["verify"].append(per_message_us(open_seal, batch))
            runs["decode"].append(per_message_us(receiver.decode, batch))
            runs["sign"].append(per_message_us(seal, bodies))
    for name, runs in results.items():
        print(f"# {name}: verify runs {', '.join(f'{v:.1f}' for v in runs['verify'])} us;"
              f" decode runs {', '.join(f'{v:.1f}' for v in runs['decode'])} us", flush=True)
    figure("bus-verify-us-per-message", median(results["ed25519"]["verify"]))
    figure("bus-verify-us-per-message-hmac", median(results["hmac"]["verify"]))
    figure("bus-decode-us-per-message-ed25519", median(results["ed25519"]["decode"]))
    figure("bus-decode-us-per-message-hmac", median(results["hmac"]["decode"]))
    figure("bus-sign-us-per-message-ed25519", median(results["ed25519"]["sign"]))
    figure("bus-sign-us-per-message-hmac", median(results["hmac"]["sign"]))
    verify = median(results["ed25519"]["verify"])
    figure("bus-verify-seconds-10k-messages-ed25519", verify * 10_001 / 1e6)
    ratios = [e / h for e, h in zip(results["ed25519"]["decode"], results["hmac"]["decode"],
                                    strict=True)]
    figure("bus-decode-ratio-ed25519-to-hmac", median(ratios))


if __name__ == "__main__":
    main()
