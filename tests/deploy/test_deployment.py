"""The deployment files, linted with the tools their formats have.

Why it exists: the Dockerfile, the compose file and the Kubernetes manifests are
built and applied elsewhere (no Docker engine or cluster here), so they are kept
correct by reading: hadolint for the Dockerfile, the compose-spec and Kubernetes
JSON schemas, the feddns configs they embed, and the properties operators rely
on (a non-root numeric user, probes, RBAC that only lists and watches). These
tests run external linters in subprocesses, so they live apart from the unit tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from feddns.config import Settings

REPO = Path(__file__).resolve().parents[2]


# --- deployment files ---------------------------------------------------------------------


def tool(name: str) -> str:
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return exe


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_the_dockerfile_passes_hadolint() -> None:
    proc = subprocess.run([tool("hadolint"), "--no-color", str(REPO / "docker" / "Dockerfile")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_image_runs_as_a_numeric_non_root_user_on_the_ports_it_exposes() -> None:
    lines = [ln.strip() for ln in (REPO / "docker" / "Dockerfile").read_text().splitlines()]
    final = lines[max(i for i, ln in enumerate(lines) if ln.startswith("FROM ")):]
    user = [ln.split()[1] for ln in final if ln.startswith("USER ")]
    assert user and user[-1].split(":")[0].isdigit() and user[-1].split(":")[0] != "0"
    exposed = {p for ln in final if ln.startswith("EXPOSE ") for p in ln.split()[1:]}
    assert exposed == {"5353/udp", "5353/tcp", "9154/tcp"}
    cmd = json.loads([ln for ln in final if ln.startswith("CMD ")][-1][4:])
    assert cmd[cmd.index("--listen") + 1] == "0.0.0.0:5353"
    assert cmd[cmd.index("--observe-listen") + 1] == "0.0.0.0:9154"
    assert any(ln.startswith("HEALTHCHECK") for ln in final)
    assert "/healthz" in (REPO / "docker" / "Dockerfile").read_text()


def test_the_compose_file_follows_the_compose_spec_and_its_configs_are_valid() -> None:
    compose = REPO / "docker" / "compose.yaml"
    proc = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                           str(compose)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = yaml.safe_load(compose.read_text())
    feddns = {k: v for k, v in data["services"].items() if k.startswith("feddns")}
    assert len(feddns) == 2 and "mosquitto" in data["services"]
    own: dict[str, set[str]] = {}
    peers: dict[str, set[str]] = {}
    for name, svc in feddns.items():
        config = next(v.split(":")[0] for v in svc["volumes"])
        settings = Settings.model_validate(yaml.safe_load((compose.parent / config).read_text()))
        assert settings.bus is not None and settings.bus.broker == "mosquitto", name
        assert settings.dns.listen == ["0.0.0.0:5353"]
        assert settings.observe.listen == "0.0.0.0:9154"
        assert svc["cap_drop"] == ["ALL"]
        own[name] = {c.name for c in settings.clusters if c.source.type == "static"}
        peers[name] = {c.name for c in settings.clusters if c.source.type == "bus"}
    # Each instance hears on the bus exactly the clusters the other one sources.
    assert peers["feddns-east"] == own["feddns-west"] == {"west.prod"}
    assert peers["feddns-west"] == own["feddns-east"] == {"east-a", "east-b"}


def test_the_kubernetes_manifests_validate_against_the_api_schemas() -> None:
    files = sorted((REPO / "config" / "kubernetes").glob("*.yaml"))
    files = [f for f in files if f.name != "kustomization.yaml"]
    proc = subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet",
                           *map(str, files)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = yaml.safe_load((REPO / "config" / "kubernetes" / "kustomization.yaml").read_text())
    assert sorted(listed["resources"]) == sorted(f.name for f in files)


def kube_objects() -> dict[str, dict[str, Any]]:
    objects = {}
    for path in (REPO / "config" / "kubernetes").glob("*.yaml"):
        for doc in yaml_docs(path):
            if "kind" in doc and doc["kind"] != "Kustomization":
                objects[doc["kind"]] = doc
    return objects


def test_the_deployment_probes_readiness_and_liveness_and_runs_unprivileged() -> None:
    objects = kube_objects()
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: (p["containerPort"], p["protocol"]) for p in container["ports"]}
    assert ports == {"dns-udp": (5353, "UDP"), "dns-tcp": (5353, "TCP"),
                     "metrics": (9154, "TCP")}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert pod["serviceAccountName"] == objects["ServiceAccount"]["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    # The config mount is a directory: subPath mounts never see ConfigMap updates.
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert "subPath" not in mounts["config"]
    assert container["args"][-1].startswith(mounts["config"]["mountPath"] + "/")


def test_the_service_publishes_dns_on_53_over_udp_and_tcp_and_the_pdb_covers_the_pods() -> None:
    objects = kube_objects()
    labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = objects["Service"]["spec"]
    ports = {(p["port"], p["protocol"], p["targetPort"]) for p in service["ports"]}
    assert {(53, "UDP", "dns-udp"), (53, "TCP", "dns-tcp")} <= ports
    assert objects["Service"]["spec"]["selector"].items() <= labels.items()
    pdb = objects["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["minAvailable"] < objects["Deployment"]["spec"]["replicas"]


def test_the_cluster_role_only_lists_and_watches() -> None:
    rules = kube_objects()["ClusterRole"]["rules"]
    assert {verb for rule in rules for verb in rule["verbs"]} == {"list", "watch"}
    assert {r for rule in rules for r in rule["resources"]} == {
        "services", "endpointslices", "serviceexports"}


def test_the_configmap_holds_a_valid_feddns_config_matching_the_pod_ports() -> None:
    objects = kube_objects()
    settings = Settings.model_validate(yaml.safe_load(objects["ConfigMap"]["data"]["feddns.yaml"]))
    assert settings.dns.listen == ["0.0.0.0:5353"]
    assert settings.observe.listen == "0.0.0.0:9154"
    assert settings.snapshot.path is not None
    assert {c.source.type for c in settings.clusters} == {"kubernetes"}
