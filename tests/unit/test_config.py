"""Settings validation: defaults, strictness, and problems reported with their key paths.

A botched config must be caught before anything starts, every problem named
by where it is (``clusters[1].region: field required``) so the operator can
fix it without reading code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from feddns.config import (
    Settings,
    format_location,
    load_settings,
    parse_host_port,
    problems_from_validation,
)
from feddns.errors import ConfigError


def cluster(name: str = "east", **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "region": "us-east", "zones": ["us-east-1a"],
                           "source": {"type": "static", "file": "/srv/services.yaml"}}
    out.update(kw)
    return out


def problems(data: Any) -> list[str]:
    """The problem lines for ``data`` (fails the test when it validates)."""
    with pytest.raises(ValidationError) as info:
        Settings.model_validate(data)
    return problems_from_validation(info.value)


def write(tmp_path: Path, text: str, name: str = "feddns.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- defaults -----------------------------------------------------------------------------


def test_an_empty_config_gets_the_documented_defaults() -> None:
    s = Settings()
    assert s.federation == "federation"
    assert [(o.name, o.service_address) for o in s.origins] == [
        ("clusterset.local.", "load-balancer")]
    assert s.dns.listen == ["0.0.0.0:53"]
    assert s.dns.udp_payload_size == 1232
    assert (s.dns.record_ttl, s.dns.version_ttl, s.dns.max_records) == (5, 28800, 16)
    assert (s.dns.tcp_idle_timeout, s.dns.tcp_io_timeout) == (10.0, 2.0)
    assert (s.soa.ttl, s.soa.minimum, s.soa.mname, s.soa.rname) == (30, 5, None, None)
    assert (s.nameservers, s.clusters) == ([], [])


def test_an_empty_file_is_the_default_config(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")) == Settings()


def test_domain_names_are_lowercased_and_made_absolute() -> None:
    s = Settings.model_validate({"origins": [{"name": "ClusterSet.Local"}],
                                 "soa": {"rname": "Admin.Example.org"}})
    assert s.origins[0].name == "clusterset.local."
    assert s.soa.rname == "admin.example.org."


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.federation = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.dns.max_records = 3  # type: ignore[misc]


def test_a_static_poll_interval_defaults_to_two_seconds() -> None:
    s = Settings.model_validate({"clusters": [cluster()]})
    assert s.clusters[0].source.poll_interval == 2.0
    assert s.clusters[0].source.type == "static"


# --- problems and their key paths ------------------------------------------------------------

PROBLEMS = [
    # unknown keys are errors, not ignored typos
    ({"dns": {"listne": ["127.0.0.1:53"]}}, "dns.listne: unknown key"),
    ({"clusters": [cluster(regoin="x")]}, "clusters[0].regoin: unknown key"),
    ({"origin": []}, "origin: unknown key"),
    # missing fields
    ({"clusters": [cluster(), {k: v for k, v in cluster("west").items() if k != "region"}]},
     "clusters[1].region: field required"),
    ({"clusters": [{k: v for k, v in cluster().items() if k != "source"}]},
     "clusters[0].source: field required"),
    ({"clusters": [cluster(source={"type": "static"})]}, "clusters[0].source.file: field required"),
    # cluster ids: one RFC 1123 label, or two joined by a dot
    ({"clusters": [cluster("a.b.c")]}, "clusters[0].name: 'a.b.c' is not a cluster id"),
    ({"clusters": [cluster("East")]}, "clusters[0].name: 'East' is not a cluster id"),
    ({"clusters": [cluster("-east")]}, "clusters[0].name: '-east' is not a cluster id"),
    ({"clusters": [cluster("east.")]}, "clusters[0].name: 'east.' is not a cluster id"),
    ({"clusters": [cluster("e" * 64)]}, "clusters[0].name:"),
    ({"clusters": [cluster(region="US_East")]}, "clusters[0].region: 'US_East' is not an RFC"),
    ({"clusters": [cluster(zones=[])]}, "clusters[0].zones: list should have at least 1 item"),
    ({"clusters": [cluster("east"), cluster("west"), cluster("east")]},
     "clusters: cluster name 'east' is used twice (clusters[0] and clusters[2])"),
    # origins
    ({"origins": [{"name": "clusterset.local"}, {"name": "east.clusterset.local"}]},
     "origins: 'clusterset.local.' and 'east.clusterset.local.' overlap"),
    ({"origins": [{"name": "clusterset.local"}, {"name": "ClusterSet.Local."}]},
     "origins: 'clusterset.local.' and 'clusterset.local.' overlap"),
    ({"origins": []}, "origins: list should have at least 1 item"),
    ({"origins": [{"name": "."}]}, "origins[0].name: the root cannot be served"),
    ({"origins": [{"name": "a..b"}]}, "origins[0].name: 'a..b' is not a valid domain name"),
    ({"origins": [{"name": "x" * 64 + ".local"}]}, "origins[0].name:"),
    ({"origins": [{"name": "clusterset.local", "service_address": "lb"}]},
     "origins[0].service_address: input should be 'load-balancer' or 'cluster-ip'"),
    # HOST:PORT
    ({"dns": {"listen": ["localhost:53"]}}, "dns.listen[0]: 'localhost:53' is not HOST:PORT"),
    ({"dns": {"listen": ["127.0.0.1"]}}, "dns.listen[0]: '127.0.0.1' is not HOST:PORT"),
    ({"dns": {"listen": ["::1:53"]}}, "dns.listen[0]: '::1:53' is not HOST:PORT"),
    ({"dns": {"listen": ["127.0.0.1:53", "127.0.0.1:99999"]}},
     "dns.listen[1]: '127.0.0.1:99999': port must be 0-65535"),
    ({"dns": {"listen": ["300.0.0.1:53"]}}, "dns.listen[0]: '300.0.0.1:53': '300.0.0.1' is not"),
    ({"dns": {"listen": []}}, "dns.listen: list should have at least 1 item"),
    # ranges
    ({"dns": {"udp_payload_size": 511}}, "dns.udp_payload_size: input should be greater than"),
    ({"dns": {"max_records": 0}}, "dns.max_records: input should be greater than"),
    ({"soa": {"minimum": -1}}, "soa.minimum: input should be greater than"),
    ({"nameservers": [{"name": "ns1.example.org", "addresses": ["not-an-ip"]}]},
     "nameservers[0].addresses[0]:"),
    ({"clusters": [cluster(source={"type": "kube", "file": "x"})]},
     "clusters[0].source.type: must be one of: static, kubernetes, bus"),
]


@pytest.mark.parametrize(("data", "expected"), PROBLEMS, ids=[p[1] for p in PROBLEMS])
def test_each_problem_is_reported_with_its_key_path(data: Any, expected: str) -> None:
    found = problems(data)
    assert any(line.startswith(expected) for line in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems({
        "dns": {"listen": ["nope"], "bogus": 1},
        "clusters": [cluster(), {"name": "West", "zones": ["z"], "source": {"file": "x"}}],
    })
    assert [p.split(":")[0] for p in found] == [
        "dns.listen[0]", "dns.bogus", "clusters[1].name", "clusters[1].region"]


def test_two_clusters_with_a_dotted_id_are_accepted() -> None:
    s = Settings.model_validate({"clusters": [cluster("east-1.prod"), cluster("west")]})
    assert [c.name for c in s.clusters] == ["east-1.prod", "west"]


def test_an_ipv6_listen_address_is_accepted_in_brackets() -> None:
    s = Settings.model_validate({"dns": {"listen": ["[::1]:5353", "127.0.0.1:0"]}})
    assert [parse_host_port(a) for a in s.dns.listen] == [("::1", 5353), ("127.0.0.1", 0)]


def test_disjoint_origins_sharing_a_suffix_string_do_not_overlap() -> None:
    s = Settings.model_validate({"origins": [{"name": "b.local"}, {"name": "ab.local"}]})
    assert [o.name for o in s.origins] == ["b.local.", "ab.local."]


def test_an_error_location_renders_like_a_key_path() -> None:
    assert format_location(("clusters", 1, "region")) == "clusters[1].region"
    assert format_location(("dns", "listen", 0, "function-after[_check_host_port()]")) == (
        "dns.listen[0]")
    assert format_location(("clusters", "East", "[key]")) == "clusters.East"
    assert format_location(()) == "(top level)"


# --- files -----------------------------------------------------------------------------------


def test_a_yaml_syntax_error_names_its_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "dns:\n  listen: [127.0.0.1:53\nclusters: []\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.source == str(path)
    [problem] = info.value.problems
    assert problem.startswith("line 3, column ")
    assert "invalid YAML" in problem


def test_a_top_level_that_is_not_a_mapping_is_one_problem(tmp_path: Path) -> None:
    for text in ("- a\n- b\n", "just text\n", "42\n"):
        with pytest.raises(ConfigError) as info:
            load_settings(write(tmp_path, text))
        assert info.value.problems == ["(top level): expected a mapping of settings"]


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "absent.yaml")
    assert info.value.problems[0].startswith("cannot read file:")


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"federation: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.problems[0].startswith("not UTF-8 text")


def test_load_settings_reports_every_problem_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "clusters:\n  - {name: a, region: r, zones: [z], source: {file: s}}\n"
                           "  - {name: b, zones: [z], source: {file: s}}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.problems == ["clusters[1].region: field required"]
    rendered = info.value.render()
    assert rendered.splitlines() == [
        f"{path}: 1 problem(s)", "  clusters[1].region: field required"]


def test_relative_static_files_resolve_against_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "etc" / "feddns"
    conf.mkdir(parents=True)
    path = write(conf, "clusters:\n"
                       "  - {name: a, region: r, zones: [z], source: {file: data/s.yaml}}\n"
                       "  - {name: b, region: r, zones: [z], source: {file: /abs/s.yaml}}\n")
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    s = load_settings(Path("etc/feddns/feddns.yaml"))
    assert s.clusters[0].source.file == (conf / "data" / "s.yaml").resolve()
    assert s.clusters[1].source.file == Path("/abs/s.yaml")
    assert load_settings(path) == s


def test_the_demo_config_is_valid() -> None:
    demo = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"
    s = load_settings(demo)
    assert [c.name for c in s.clusters] == ["east-a", "east-b", "west.prod"]
    assert s.clusters[0].source.file == demo.parent / "demo-services.yaml"


def test_a_bus_sourced_cluster_needs_the_bus_section() -> None:
    bad = {"clusters": [{"name": "west", "region": "r", "zones": ["z"],
                         "source": {"type": "bus"}}]}
    with pytest.raises(ValidationError) as err:
        Settings.model_validate(bad)
    assert "bus" in str(err.value)


def test_locality_local_cluster_must_be_a_configured_cluster() -> None:
    bad = {"clusters": [], "locality": {"local_cluster": "east"}}
    with pytest.raises(ValidationError) as err:
        Settings.model_validate(bad)
    assert "local_cluster 'east' is not one of the configured clusters" in str(err.value)
