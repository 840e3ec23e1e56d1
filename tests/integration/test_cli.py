"""The real ``feddns`` command, run as a subprocess the way an operator runs it.

Covers the version and help output, ``check-config`` on good and bad files
(each problem printed with its key path), ``serve`` refusing an invalid
config before listening, serving the demo and stopping cleanly on SIGTERM and
SIGINT, and a clear failure when the port is taken. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "config" / "demo.yaml"
TIMEOUT = 15.0

BAD_CONFIG = """\
clusters:
  - {name: east, region: us-east, zones: [z1], source: {file: demo-services.yaml}}
  - {name: West, zones: [z1], source: {file: demo-services.yaml}}
dns:
  listen: [localhost:53]
"""


def feddns(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "feddns", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)



def ask(port: int, name: str = "web.shop.svc.clusterset.local.") -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=0.5)


@contextlib.contextmanager
def serving(*args: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``feddns serve`` on a free port, answering; killed at the end if still running."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "feddns", "serve", *args, "--listen", f"127.0.0.1:{port}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert proc.poll() is None, f"feddns exited early: {proc.communicate()}"
            with contextlib.suppress(OSError, dns.exception.Timeout):
                if ask(port).answer:
                    break
            assert time.monotonic() < deadline, "feddns did not answer within the timeout"
            time.sleep(0.05)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT)


# --- version, help, check-config ----------------------------------------------------------


def test_version_prints_the_package_version() -> None:
    from feddns import __version__

    run = feddns("--version")
    assert run.returncode == 0
    assert run.stdout.strip() == f"feddns {__version__}"


def test_help_lists_the_commands() -> None:
    run = feddns("--help")
    assert run.returncode == 0
    assert "serve" in run.stdout
    assert "check-config" in run.stdout
    assert "clusterset.local" in run.stdout


def test_no_command_prints_help_and_fails() -> None:
    run = feddns()
    assert run.returncode == 2
    assert "usage: feddns" in run.stdout


def test_check_config_accepts_the_demo() -> None:
    run = feddns("check-config", str(DEMO))
    assert run.returncode == 0, run.stderr
    assert "OK (3 cluster(s), origins clusterset.local.)" in run.stdout


def test_check_config_prints_each_problem_with_its_key_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG)
    run = feddns("check-config", str(path))
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    lines = [line.strip() for line in run.stderr.splitlines()]
    # Schema problems and file problems together (the data file is missing too).
    assert f"{path}: 4 problem(s)" in lines
    assert f"clusters[0].source.file: {tmp_path}/demo-services.yaml: cannot read file: No such" \
        " file or directory" in lines
    assert any(line.startswith("clusters[1].name: 'West' is not a cluster id") for line in lines)
    assert "clusters[1].region: field required" in lines
    assert any(line.startswith("dns.listen[0]: 'localhost:53' is not HOST:PORT") for line in lines)
    assert not any(line.startswith("(top level)") for line in lines)


def test_check_config_reports_a_broken_data_file_with_its_key_path(tmp_path: Path) -> None:
    (tmp_path / "services.yaml").write_text(
        "clusters:\n  east:\n    services:\n      - {namespace: shop, name: web}\n")
    conf = tmp_path / "feddns.yaml"
    conf.write_text("clusters:\n  - {name: east, region: r, zones: [z], "
                    "source: {file: services.yaml}}\n")
    run = feddns("check-config", str(conf))
    assert run.returncode == 2
    assert "clusters.east.services[0].cluster_ips: a ClusterIP service needs cluster_ips" in (
        run.stderr)


def test_check_config_reports_a_yaml_syntax_error_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("dns:\n  listen: [127.0.0.1:53\n")
    run = feddns("check-config", str(path))
    assert run.returncode == 2
    assert "line 3, column 1: invalid YAML" in run.stderr


# --- files a config names: checked by check-config, serve and reload alike (issue #12) ------

KUBE_CONFIG = """\
clusters:
  - {name: east, region: us-east, zones: [z1], source: {file: data.yaml}}
  - {name: west, region: us-west, zones: [z1],
     source: {type: kubernetes, kubeconfig: KUBECONFIG, context: west}}
"""

GOOD_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: west, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: west, user: {tokenFile: west.token}}]
contexts: [{name: west, context: {cluster: west, user: west}}]
current-context: west
"""

KUBECONFIG_CASES = [
    pytest.param(None, "kubeconfig: {k} does not exist", id="missing"),
    pytest.param("<dir>", "kubeconfig: {k} is not a file", id="a directory"),
    pytest.param("clusters: [a\n", "kubeconfig: {k}: line 2, column 1: invalid YAML", id="yaml"),
    pytest.param(GOOD_KUBECONFIG.replace("name: west, context", "name: other, context"),
                 "kubeconfig: {k}: context 'west' not found (it has: other)", id="context"),
    pytest.param(GOOD_KUBECONFIG.replace("west.token", "gone.token"),
                 "kubeconfig: {k}: user 'west'.tokenFile: {d}/gone.token does not exist",
                 id="token file"),
]


def kube_setup(tmp_path: Path, kubeconfig: str | None) -> tuple[Path, Path]:
    (tmp_path / "data.yaml").write_text("clusters: {east: {services: []}}\n")
    (tmp_path / "west.token").write_text("token\n")
    kube = tmp_path / "kubeconfig"
    if kubeconfig == "<dir>":
        kube.mkdir()
    elif kubeconfig is not None:
        kube.write_text(kubeconfig)
    conf = tmp_path / "feddns.yaml"
    conf.write_text(KUBE_CONFIG.replace("KUBECONFIG", str(kube)))
    return conf, kube


@pytest.mark.parametrize(("kubeconfig", "expected"), KUBECONFIG_CASES)
def test_check_config_and_serve_reject_an_unusable_kubeconfig_naming_the_file(
        tmp_path: Path, kubeconfig: str | None, expected: str) -> None:
    conf, kube = kube_setup(tmp_path, kubeconfig)
    line = "clusters[1].source." + expected.format(k=kube, d=tmp_path)
    checked = feddns("check-config", str(conf))
    assert checked.returncode == 2, checked.stdout
    assert any(x.strip().startswith(line) for x in checked.stderr.splitlines()), checked.stderr
    served = feddns("serve", "-c", str(conf), "--listen", f"127.0.0.1:{free_port()}")
    assert served.returncode == 2
    assert "refusing to start" in served.stderr and line in served.stderr, served.stderr


def test_a_good_kubeconfig_passes_and_schema_only_skips_the_files(tmp_path: Path) -> None:
    conf, _ = kube_setup(tmp_path, GOOD_KUBECONFIG)
    assert feddns("check-config", str(conf)).returncode == 0
    (tmp_path / "missing").mkdir()
    conf, _ = kube_setup(tmp_path / "missing", None)
    run = feddns("check-config", "--schema-only", str(conf))
    assert run.returncode == 0 and "files not checked" in run.stdout, run.stderr


def test_schema_problems_and_file_problems_are_reported_together(tmp_path: Path) -> None:
    conf, kube = kube_setup(tmp_path, None)
    conf.write_text(conf.read_text() + "dns: {listen: [localhost:53]}\n")
    run = feddns("check-config", str(conf))
    lines = [x.strip() for x in run.stderr.splitlines()]
    assert f"{conf}: 2 problem(s)" in lines, run.stderr
    assert any(x.startswith("dns.listen[0]: 'localhost:53' is not HOST:PORT") for x in lines)
    assert f"clusters[1].source.kubeconfig: {kube} does not exist" in lines


# --- serve ---------------------------------------------------------------------------------


def test_serve_refuses_an_invalid_config_without_listening(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG)
    port = free_port()
    run = feddns("serve", "-c", str(path), "--listen", f"127.0.0.1:{port}")
    assert run.returncode == 2
    assert "refusing to start: the config is invalid" in run.stderr
    assert "clusters[1].region: field required" in run.stderr
    assert "serving" not in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_answers_the_demo_and_exits_cleanly_on_a_signal(sig: signal.Signals) -> None:
    with serving("-c", str(DEMO)) as (proc, port):
        reply = ask(port)
        assert reply.rcode() == dns.rcode.NOERROR
        assert sorted(rd.to_text() for rd in reply.answer[0]) == [
            "10.96.1.10", "10.96.2.10", "10.96.3.10"]
        assert ask(port, "nope.shop.svc.clusterset.local.").rcode() == dns.rcode.NXDOMAIN
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err
        assert "shutting down" in err
        assert "Traceback" not in err


def test_serve_uses_the_demo_config_by_default() -> None:
    with serving() as (proc, port):
        assert ask(port).rcode() == dns.rcode.NOERROR
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0


def test_serve_on_a_port_in_use_fails_with_a_clear_message() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        tcp.bind(("127.0.0.1", port))
        tcp.listen()
        run = feddns("serve", "-c", str(DEMO), "--listen", f"127.0.0.1:{port}")
    assert run.returncode == 1
    assert "cannot listen" in run.stderr
    assert "in use" in run.stderr
    assert "Traceback" not in run.stderr


def test_serve_rejects_a_malformed_listen_argument() -> None:
    run = feddns("serve", "--listen", "localhost:53")
    assert run.returncode == 2
    assert "is not HOST:PORT" in run.stderr
