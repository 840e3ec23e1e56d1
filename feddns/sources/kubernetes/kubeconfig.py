"""Checking a kubeconfig before it is used: every problem, each naming the file and the key.

Why it exists: botched config is one of the commonest causes of outages, and
the official client's loader reports a broken kubeconfig late (at the first
request), vaguely ("Invalid kube-config file. No configuration found.") and
without the file's path, while the server was already running and retrying
for ever. ``check-config``, ``serve`` and every reload run these checks
first, so a kubeconfig that is missing, is a directory, is not YAML, names a
context that does not exist, or refers to token, certificate or CA files
that are not there stops the start (or the reload) with a line that says
which file and what is wrong. Only YAML is read here: the ``kubernetes``
package (a quarter of a second to import) is not needed to check a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

INCLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where a pod's service-account token and CA certificate are mounted."""


def _named(items: Any, name: str, what: str) -> tuple[dict[str, Any] | None, str | None]:
    """The ``what`` entry (cluster, user, context) called ``name`` in a kubeconfig list."""
    if not isinstance(items, list):
        return None, f"has no '{what}s' list"
    for item in items:
        if isinstance(item, dict) and item.get("name") == name:
            body = item.get(what)
            return (body if isinstance(body, dict) else {}), None
    names = ", ".join(str(i.get("name")) for i in items if isinstance(i, dict)) or "none"
    return None, f"{what} {name!r} not found (it has: {names})"


def _file_problems(entry: dict[str, Any], keys: tuple[str, ...], base: Path,
                   where: str) -> list[str]:
    """Problems with the files an entry names (relative paths: from the kubeconfig's folder)."""
    out = []
    for key in keys:
        value = entry.get(key)
        if not value:
            continue
        path = Path(str(value)).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            state = "is not a file" if path.exists() else "does not exist"
            out.append(f"{where}.{key}: {path} {state}")
    return out


def kubeconfig_problems(path: Path, context: str | None) -> list[str]:
    """Everything wrong with ``path`` as the kubeconfig of one cluster (empty: usable)."""
    if not path.exists():
        return [f"{path} does not exist"]
    if not path.is_file():
        return [f"{path} is not a file"]
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return [f"{path}: cannot read: {exc.strerror or exc}"]
    except UnicodeDecodeError:
        return [f"{path}: not UTF-8 text"]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return [f"{path}: {at}invalid YAML: {getattr(exc, 'problem', None) or exc}"]
    if not isinstance(doc, dict):
        return [f"{path}: not a kubeconfig (expected a mapping with clusters, users and"
                " contexts)"]
    name = context or doc.get("current-context")
    if not name:
        return [f"{path}: no context given and no current-context set"]
    ctx, why = _named(doc.get("contexts"), str(name), "context")
    if ctx is None:
        return [f"{path}: {why}"]
    problems = []
    base = path.parent
    cluster_name = ctx.get("cluster")
    if not cluster_name:
        problems.append(f"{path}: context {name!r} names no cluster")
    else:
        cluster, why = _named(doc.get("clusters"), str(cluster_name), "cluster")
        if cluster is None:
            problems.append(f"{path}: {why}")
        else:
            if not cluster.get("server"):
                problems.append(f"{path}: cluster {cluster_name!r} has no server URL")
            problems += _file_problems(cluster, ("certificate-authority",), base,
                                       f"{path}: cluster {cluster_name!r}")
    user_name = ctx.get("user")
    if user_name:
        user, why = _named(doc.get("users"), str(user_name), "user")
        if user is None:
            problems.append(f"{path}: {why}")
        else:
            problems += _file_problems(user, ("tokenFile", "client-certificate", "client-key"),
                                       base, f"{path}: user {user_name!r}")
    return problems


def in_cluster_problems() -> list[str]:
    """What is missing for ``in_cluster: true`` (a pod's mounted service account)."""
    out = []
    for name in ("token", "ca.crt"):
        path = INCLUSTER_DIR / name
        if not path.is_file():
            out.append(f"{path} does not exist (not running in a pod, or the service"
                       " account token is not mounted: automountServiceAccountToken)")
    return out
