"""Per-cluster Ed25519 signatures on the bus (issue #17), without a broker.

A message for cluster X is accepted only when signed by one of X's keys: a
holder of Y's private key cannot speak for X. Key files, the public-keys
directory, ``feddns keygen`` and the config checks are here too; the real-broker
scenarios (a wrong signer at every peer, a key roll, the HMAC migration) are in
``tests/integration/test_bus_security.py``.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import settings as settings_h
from hypothesis import strategies as st
from pydantic import ValidationError

from feddns.checking import load_checked
from feddns.cli import main
from feddns.config import BUS_ALLOWED_CIDRS, BUS_DENIED_CIDRS, BusConfig, Settings
from feddns.errors import ConfigError
from feddns.model.registry import ClusterState, Registry
from feddns.model.services import Endpoint, Port, Service
from feddns.sources.mqtt.addresses import AddressPolicy
from feddns.sources.mqtt.codec import Codec, Reason, Rejected, ServiceMessage
from feddns.sources.mqtt.keys import KeyRing
from feddns.sources.mqtt.merging import Merger
from feddns.sources.mqtt.sealing import BusKeys
from feddns.sources.mqtt.signatures import (
    PublicKeys,
    SigningKey,
    cluster_of_file,
    key_id_of,
    public_pem,
    write_key_pair,
)
from feddns.sources.mqtt.topics import Topics

TOPICS = Topics("feddns", "fed")
WALL = 1_800_000_000.0
NOW = 1000.0
SECRET = b"a-shared-federation-secret-0123"
EAST, WEST = SigningKey.generate("east"), SigningKey.generate("west")
EAST_B = SigningKey.generate("east-b")


def codec(keys: BusKeys) -> Codec:
    return Codec(TOPICS, keys, AddressPolicy(BUS_ALLOWED_CIDRS, BUS_DENIED_CIDRS),
                 max_payload_size=256 * 1024)


def receiver(**extra: Any) -> Codec:
    """An instance that accepts east and west by their public keys (and nothing else)."""
    return codec(BusKeys(public=PublicKeys({"east": [EAST.public], "west": [WEST.public]}),
                         **extra))


def signer(*keys: SigningKey, hmac: KeyRing | None = None) -> Codec:
    return codec(BusKeys(private={k.cluster: k for k in keys}, hmac=hmac))


def web(ip: str = "10.1.0.1") -> Service:
    return Service("shop", "web", cluster_ips=("10.96.0.10",), ports=(Port("http", 80),),
                   endpoints=(Endpoint(ip, zone="z1"),))


def reason_of(c: Codec, topic: str, payload: bytes) -> Reason:
    with pytest.raises(Rejected) as info:
        c.decode(topic, payload)
    return info.value.reason


# --- the seal ----------------------------------------------------------------------------


def test_a_message_signed_with_its_clusters_key_is_accepted_and_says_who_signed_it() -> None:
    topic, payload = signer(EAST).service("east", web(), instance="east-1", gen=3, ts=WALL)
    assert payload.startswith(b"fd2 ")
    msg = receiver().decode(topic, payload)
    assert isinstance(msg, ServiceMessage) and msg.service == web()
    assert (msg.header.scheme, msg.header.key_id) == ("ed25519", EAST.key_id)
    assert msg.header.signers == frozenset({"east"})


def test_another_clusters_valid_signature_on_a_message_for_east_is_a_wrong_signer() -> None:
    # West's instance (or whoever stole west's key) publishes "east's" web service.
    west_as_east = codec(BusKeys(private={"east": WEST}))  # east's topic, west's key
    topic, payload = west_as_east.service("east", web("10.6.6.6"), instance="west-1",
                                          gen=2**62, ts=WALL)
    assert reason_of(receiver(), topic, payload) is Reason.WRONG_SIGNER


def test_a_byte_changed_after_signing_or_a_moved_message_is_a_bad_signature() -> None:
    topic, payload = signer(EAST).service("east", web(), instance="east-1", gen=3, ts=WALL)
    assert reason_of(receiver(), topic, payload.replace(b"10.1.0.1", b"10.6.6.6")) is (
        Reason.BAD_SIGNATURE)
    moved = TOPICS.service("east", ("shop", "api"))
    assert reason_of(receiver(), moved, payload) is Reason.BAD_SIGNATURE


def test_a_bad_signature_is_found_before_the_body_is_parsed_or_inflated() -> None:
    topic = TOPICS.service("east", ("shop", "web"))
    tag = base64.urlsafe_b64encode(EAST.sign(b"something else")).rstrip(b"=")
    garbage = b"fd2 z %s:%s\n%s" % (EAST.key_id.encode(), tag, b"\x00not zlib, not json")
    assert reason_of(receiver(), topic, garbage) is Reason.BAD_SIGNATURE


def test_a_key_no_ring_holds_is_an_unknown_key_and_hmac_is_refused_once_it_is_off() -> None:
    stranger = SigningKey.generate("east")
    topic, payload = signer(stranger).service("east", web(), instance="e", gen=1, ts=WALL)
    assert reason_of(receiver(), topic, payload) is Reason.UNKNOWN_KEY
    hmac_only = codec(BusKeys(hmac=KeyRing({"k1": SECRET}, signing_id="k1")))
    topic, payload = hmac_only.service("east", web(), instance="e", gen=1, ts=WALL)
    assert reason_of(receiver(), topic, payload) is Reason.UNKNOWN_KEY


def test_during_a_migration_a_receiver_with_both_accepts_hmac_and_signatures() -> None:
    ring = KeyRing({"k1": SECRET}, signing_id="k1")
    both = receiver(hmac=ring)
    for sender in (codec(BusKeys(hmac=ring)), signer(EAST, hmac=ring)):
        topic, payload = sender.service("east", web(), instance="e", gen=1, ts=WALL)
        assert isinstance(both.decode(topic, payload), ServiceMessage)
    # An instance with a private key signs with it, even with HMAC keys configured.
    assert signer(EAST, hmac=ring).service("east", web(), instance="e", gen=1,
                                           ts=WALL)[1].startswith(b"fd2 ")


def test_a_receiver_that_knows_only_hmac_rejects_a_signed_message_cleanly() -> None:
    old = codec(BusKeys(hmac=KeyRing({"k1": SECRET}, signing_id="k1")))
    topic, payload = signer(EAST).service("east", web(), instance="e", gen=1, ts=WALL)
    assert reason_of(old, topic, payload) is Reason.UNKNOWN_KEY
    # Releases before fd2 split the first line into four fields starting with fd1.
    first = payload.split(b"\n", 1)[0].split(b" ")
    assert first[0] != b"fd1" and len(first) != 4


def test_a_last_will_speaks_only_for_the_clusters_whose_own_keys_signed_it() -> None:
    registry = Registry.for_clusters(["east", "east-b", "west"])
    merger = Merger(registry, receiver(), own_clusters=(), instance="me",
                    peer_timeout=90.0, replay_window=300.0, retained_age=330.0)
    merger.codec.keys.public.add("east-b", EAST_B.public)
    east_instance, west_instance = signer(EAST, EAST_B), signer(WEST)
    for cluster, sender, instance, session in (("east", east_instance, "east-1", 7),
                                               ("east-b", east_instance, "east-1", 7),
                                               ("west", west_instance, "west-1", 9)):
        heartbeat = sender.status(cluster, online=True, session=session,
                                  state=ClusterState.FRESH, clusters=(cluster,),
                                  instance=instance, gen=10, ts=WALL)
        merger.receive(*heartbeat, retained=False, now=NOW, wall_now=WALL)
    assert all(merger.peers[c].online for c in ("east", "east-b", "west"))
    # East's will also names west (and west's session 9): only east's key signed it.
    forged = signer(EAST).status("east", online=False, session=9, state=ClusterState.STALE,
                                 clusters=("east", "west"), instance="east-1", gen=9, ts=WALL)
    merger.receive(*forged, retained=False, now=NOW, wall_now=WALL)
    assert merger.peers["west"].online is True
    assert merger.rejected[Reason.WRONG_SIGNER] == 1
    # The real will of east's instance is signed by both of its clusters' keys.
    will = signer(EAST, EAST_B).status("east", online=False, session=7,
                                       state=ClusterState.STALE, clusters=("east", "east-b"),
                                       instance="east-1", gen=7, ts=WALL)
    merger.receive(*will, retained=False, now=NOW, wall_now=WALL)
    assert merger.peers["east"].online is False and merger.peers["east-b"].online is False
    assert merger.peers["west"].online is True


# --- key files, the directory, keygen ----------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "keys"
    assert main(["keygen", "east", "--out-dir", str(out)]) == 0
    private, public = out / "east.key", out / "east.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    printed = capsys.readouterr().out
    key = serialization.load_pem_public_key(public.read_bytes())
    assert f"key id {key_id_of(key)}" in printed  # type: ignore[arg-type]
    before = private.read_bytes()
    assert main(["keygen", "east", "--out-dir", str(out)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert private.read_bytes() == before
    assert main(["keygen", "east", "--out-dir", str(out), "--label", "2027-06"]) == 0
    assert (out / "east_2027-06.pub").exists()
    assert main(["keygen", "East_1", "--out-dir", str(out)]) == 2
    assert "is not a cluster id" in capsys.readouterr().err


def test_keygen_leaves_no_half_pair_when_the_public_file_exists(tmp_path: Path) -> None:
    (tmp_path / "east.pub").write_text("someone else's\n")
    with pytest.raises(Exception, match="refusing to overwrite"):
        write_key_pair(tmp_path, "east")
    assert not (tmp_path / "east.key").exists()


@pytest.mark.parametrize(("name", "cluster"), [
    ("east.pub", "east"), ("west.prod.pub", "west.prod"), ("west.prod_2027-06.pub", "west.prod"),
    ("east_k2.pub", "east"), ("East.pub", None), ("a.b.c.pub", None), ("east.key", None),
    ("east_.pub", None), ("east_a_b.pub", None),
])
def test_a_public_key_files_name_gives_its_cluster(name: str, cluster: str | None) -> None:
    assert cluster_of_file(name) == cluster


def write_pub(path: Path, key: SigningKey) -> Path:
    path.write_bytes(public_pem(key.public))
    return path


def configmap_dir(folder: Path, files: dict[str, bytes]) -> Path:
    """A directory laid out as the kubelet mounts a ConfigMap (symlinks into ..data)."""
    data = folder / "..2027_06_01_00_00_00.000000001"
    data.mkdir(parents=True)
    for name, content in files.items():
        (data / name).write_bytes(content)
    (folder / "..data").symlink_to(data.name)
    for name in files:
        (folder / name).symlink_to(f"..data/{name}")
    return folder


def bus(tmp: Path, **extra: Any) -> BusConfig:
    return BusConfig.model_validate({"broker": "localhost", **extra}, context={"base_dir": tmp})


def test_keys_load_from_files_and_a_configmap_directory(tmp_path: Path) -> None:
    private, _, _ = write_key_pair(tmp_path / "secret", "east")
    directory = configmap_dir(tmp_path / "public", {
        "west.pub": public_pem(WEST.public),
        "west_next.pub": public_pem(EAST_B.public),
        "README": b"public keys of the federation\n",
    })
    keys = BusKeys.from_config(bus(tmp_path, private_keys=[{"cluster": "east",
                                                            "file": str(private)}],
                                   public_keys_dir=str(directory)))
    assert sorted(keys.public.clusters) == ["east", "west"]
    assert set(keys.public.ids("west")) == {WEST.key_id, EAST_B.key_id}  # two while rolling
    assert "PRIVATE" not in repr(keys) and keys.private["east"].private_pem() not in repr(
        keys).encode()


def test_every_unusable_key_file_is_reported_at_once_with_what_was_expected(
        tmp_path: Path) -> None:
    other_kind = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pub").write_bytes(other_kind.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "garbage.pub").write_text("not a key\n")
    private, _, _ = write_key_pair(tmp_path, "east")
    directory = tmp_path / "dir"
    directory.mkdir()
    write_pub(directory / "Bad_Name.pub", WEST)
    (directory / "east.pub").write_bytes(private.read_bytes())  # a private key, misplaced
    settings = bus(tmp_path, private_keys=[{"cluster": "east", "file": "missing.key"}],
                   public_keys=[{"cluster": "west", "file": "ec.pub"},
                                {"cluster": "west", "file": "garbage.pub"}],
                   public_keys_dir="dir")
    with pytest.raises(ConfigError) as info:
        BusKeys.from_config(settings)
    problems = "\n".join(info.value.problems)
    assert "bus.private_keys[0] (east):" in problems and "missing.key does not exist" in problems
    assert "bus.public_keys[0] (west):" in problems and "another kind of key" in problems
    assert "bus.public_keys[1] (west):" in problems and "not a PEM public key" in problems
    assert "Bad_Name.pub: the name does not give a cluster" in problems
    assert "holds a private key" in problems
    assert len(info.value.problems) == 5


def test_one_key_given_for_two_clusters_is_refused(tmp_path: Path) -> None:
    # The botched distribution the issue warns about: east's key filed as west's too.
    write_pub(tmp_path / "east.pub", EAST)
    write_pub(tmp_path / "west.pub", EAST)
    with pytest.raises(ConfigError) as info:
        BusKeys.from_config(bus(tmp_path, public_keys_dir="."))
    assert f"one key (id {EAST.key_id}) is given for clusters east, west" in str(info.value)


def test_an_own_private_key_missing_from_its_clusters_listed_keys_is_refused(
        tmp_path: Path) -> None:
    private, _, _ = write_key_pair(tmp_path, "east", label="new")
    write_pub(tmp_path / "east.pub", EAST)  # only the old key is listed
    settings = bus(tmp_path, private_keys=[{"cluster": "east", "file": str(private)}],
                   public_keys=[{"cluster": "east", "file": "east.pub"}])
    with pytest.raises(ConfigError, match="add the new public key everywhere first"):
        BusKeys.from_config(settings)


# --- the config ------------------------------------------------------------------------


def settings(**bus_section: Any) -> dict[str, Any]:
    return {"clusters": [
        {"name": "east", "region": "r1", "zones": ["z1"], "source": {"type": "static",
                                                                    "file": "data.yaml"}},
        {"name": "east-b", "region": "r1", "zones": ["z1"], "source": {"type": "static",
                                                                      "file": "data.yaml"}},
        {"name": "west", "region": "r2", "zones": ["z1"], "source": {"type": "bus"}}],
        "bus": {"broker": "localhost", **bus_section}}


@pytest.mark.parametrize(("section", "expected"), [
    ({}, "no keys: give 'private_keys'"),
    ({"public_keys_dir": "keys"}, "nothing to sign with: this instance publishes east, east-b"),
    ({"private_keys": [{"cluster": "east", "file": "e.key"}], "public_keys_dir": "keys"},
     "private_keys has no key for east-b"),
    ({"private_keys": [{"cluster": "east", "file": "e.key"}, {"cluster": "east-b", "file": "b"},
                       {"cluster": "west", "file": "w.key"}], "public_keys_dir": "keys"},
     "private_keys[2].cluster 'west' has source type 'bus'"),
    ({"private_keys": [{"cluster": "east", "file": "e.key"}, {"cluster": "east", "file": "b"}]},
     "two private keys for cluster 'east'"),
])
def test_the_config_says_which_signing_keys_are_missing_or_misplaced(
        section: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings.model_validate(settings(**section))
    assert expected in str(info.value)


def test_check_config_accepts_a_signed_federation_and_names_each_bad_key_file(
        tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text(
        "clusters: {east: {services: []}, east-b: {services: []}}\n")
    for cluster in ("east", "east-b"):
        write_key_pair(tmp_path / "secret", cluster)
    public = tmp_path / "public"
    public.mkdir()
    write_pub(public / "west.pub", WEST)
    data = settings(private_keys=[{"cluster": "east", "file": "secret/east.key"},
                                  {"cluster": "east-b", "file": "secret/east-b.key"}],
                    public_keys_dir="public")
    path = tmp_path / "feddns.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_checked(path).bus is not None
    (public / "west.pub").write_text("-----BEGIN PUBLIC KEY-----\nbroken\n")
    os.chmod(public / "west.pub", 0o644)
    with pytest.raises(ConfigError) as info:
        load_checked(path)
    assert info.value.problems == [f"bus.public_keys_dir (west): {public / 'west.pub'} is not"
                                   " a PEM public key (expected '-----BEGIN PUBLIC KEY-----',"
                                   " as written by `feddns keygen`)"]


class CountingKeys(BusKeys):
    """Keys that remember every topic whose seal they were asked to check."""

    verified: list[str] = []

    def open(self, topic: str, cluster: str, payload: bytes) -> Any:
        self.verified.append(topic)
        return super().open(topic, cluster, payload)


def test_an_instances_own_echo_is_recognised_by_its_bytes_and_never_verified() -> None:
    east = codec(CountingKeys(private={"east": EAST}))
    verified = CountingKeys.verified = []
    merger = Merger(Registry.for_clusters(["east", "west"]), east, own_clusters=("east",),
                    instance="east-1", peer_timeout=90.0, replay_window=300.0,
                    retained_age=330.0)
    topic, payload = east.service("east", web(), instance="east-1", gen=1, ts=WALL)
    merger.receive(topic, payload, retained=False, now=NOW, wall_now=WALL)
    assert (merger.counts["own"], verified) == (1, [])
    # Anything else on that topic (a replica's message, a forgery) is verified as ever.
    replica = signer(EAST).service("east", web("10.1.0.2"), instance="east-2", gen=2, ts=WALL)
    merger.receive(*replica, retained=False, now=NOW, wall_now=WALL)
    assert verified == [topic] and merger.counts["own"] == 1


@settings_h(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([b"fd2 ", b"fd2 j ", b"fd2 z a:", b"fd1 "]))
def test_any_bytes_after_a_seal_header_are_rejected_never_raised(tail: bytes,
                                                                  head: bytes) -> None:
    topic = TOPICS.service("east", ("shop", "web"))
    payload = head + tail
    try:
        receiver().decode(topic, payload)
    except Rejected:
        return
    pytest.fail(f"accepted {payload!r}")
