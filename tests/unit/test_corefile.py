"""``feddns corefile``: the CoreDNS server block that forwards the feddns origins to feddns.

Covers the plain cluster-DNS stanza (forward with health checks, cache capped at
the record TTL), the NodeLocal DNSCache variant (bind, force_tcp, its metrics
port), several servers and origins, the address forms accepted, the errors, the
command line (origins and TTL from a config), and that the snippets shipped in
config/coredns/ are exactly what the generator prints.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from feddns.cli import main
from feddns.observe.corefile import render_corefile, server_address, zone_key

REPO = Path(__file__).resolve().parents[2]


def block(text: str) -> list[str]:
    """The stanza without its comment lines, stripped."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def test_the_cluster_dns_stanza_forwards_the_zone_with_health_checks() -> None:
    assert block(render_corefile(["10.96.0.53:53"])) == [
        "clusterset.local:53 {",
        "errors",
        "cache 5",
        "forward . 10.96.0.53:53 {",
        "max_fails 2",
        "health_check 0.5s",
        "}",
        "prometheus :9153",
        "}",
    ]


def test_the_nodelocal_stanza_binds_the_node_local_address_and_forces_tcp() -> None:
    lines = block(render_corefile(["10.96.0.53"], nodelocal=True))
    assert lines[:7] == ["clusterset.local:53 {", "errors", "cache 5", "reload", "loop",
                         "bind 169.254.20.10", "forward . 10.96.0.53:53 {"]
    assert lines[7] == "force_tcp"
    assert "prometheus :9253" in lines
    both = block(render_corefile(["10.96.0.53"], nodelocal=True,
                                 bind=["169.254.20.10", "10.96.0.10"]))
    assert "bind 169.254.20.10 10.96.0.10" in both


def test_the_plain_stanza_neither_binds_nor_forces_tcp() -> None:
    lines = block(render_corefile(["10.96.0.53"]))
    assert not [ln for ln in lines if ln.startswith(("bind", "force_tcp", "loop"))]


def test_several_servers_and_origins_share_one_block() -> None:
    lines = block(render_corefile(["10.0.0.1", "10.0.0.2:5353", "fd00::53"],
                                  ["clusterset.local.", "Example.ORG"], cache_ttl=7))
    assert lines[0] == "clusterset.local:53 example.org:53 {"
    assert "forward . 10.0.0.1:53 10.0.0.2:5353 [fd00::53]:53 {" in lines
    assert "cache 7" in lines


@pytest.mark.parametrize(("given", "expected"), [
    ("10.0.0.53", "10.0.0.53:53"), ("10.0.0.53:5353", "10.0.0.53:5353"),
    ("fd00::53", "[fd00::53]:53"), ("[fd00::53]:5353", "[fd00::53]:5353"),
])
def test_server_addresses_take_port_53_unless_given(given: str, expected: str) -> None:
    assert server_address(given) == expected


@pytest.mark.parametrize(("servers", "origins", "problem"), [
    ([], ["clusterset.local"], "at least one"),
    ([f"10.0.0.{i}" for i in range(16)], ["clusterset.local"], "at most 15"),
    (["10.0.0.1"], ["."], "root"),
    (["dns.example"], ["clusterset.local"], "not HOST:PORT"),
])
def test_bad_arguments_are_refused(servers: list[str], origins: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        render_corefile(servers, origins)


def test_a_zone_key_has_no_trailing_dot_and_port_53() -> None:
    assert zone_key("clusterset.local.") == "clusterset.local:53"


def test_the_command_takes_origins_and_ttl_from_a_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "feddns.yaml"
    config.write_text("origins: [{name: mesh.internal.}, {name: clusterset.local.}]\n"
                      "dns: {record_ttl: 3}\n")
    assert main(["corefile", "-c", str(config), "--server", "10.1.2.3"]) == 0
    lines = block(capsys.readouterr().out)
    assert lines[0] == "mesh.internal:53 clusterset.local:53 {"
    assert "cache 3" in lines


def test_the_command_refuses_a_bad_server_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["corefile", "--server", "not-an-ip"]) == 2
    assert "feddns corefile:" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "args"), [
    ("Corefile.clusterset", "--server 10.96.0.53:53"),
    ("Corefile.nodelocal", "--server 10.96.0.53:53 --nodelocal"),
])
def test_the_shipped_snippets_are_what_the_generator_prints(
        name: str, args: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["corefile", *shlex.split(args)]) == 0
    assert capsys.readouterr().out == (REPO / "config" / "coredns" / name).read_text()
