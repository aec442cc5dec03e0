"""The embedded stack: etcd, kube-apiserver, kube-controller-manager, MinIO, the local executor and the operator.

One code path serves `img2img local up|down`, the pytest fixtures, `make demo` and the benchmarks. `up` is idempotent:
components already running and healthy are kept. Every process runs in its own session (so `down` can kill the whole
process group) and logs to `<state>/logs/<component>.log`.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from img2img import API_GROUP, PLURAL
from img2img.local import binaries
from img2img.local.binaries import log
from img2img.local.certs import ControlPlaneCerts, kubeconfig, make_certs
from img2img.local.paths import REPO_ROOT, cache_dir, default_state_dir

BUCKET = "img2img"
S3_USER = "img2img-local"
S3_PASSWORD = "img2img-local-secret"  # loopback-only development credentials, generated into no real system
S3_SECRET = "img2img-s3"  # the Secret runner pods read their S3 credentials from
RUNNER_SERVICE_ACCOUNT = "img2img-runner"
RUNNER_IMAGE = "img2img/runner:local"
NODE_NAME = "local-gpu-0"
CRD_DIR = REPO_ROOT / "crds"

# Stop order: consumers first, storage last.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "minio", "executor", "operator")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait(what: str, check: Callable[[], bool], timeout: float, log_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    tail = ""
    if log_file and log_file.exists():
        tail = "\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f} s{tail}")


def python_image() -> dict:
    """This Python environment as a container image: its scripts on PATH, and its files (the project, the venvs)
    kept visible in the container even under a volume that covers them (a checkout in /tmp under the runner's /tmp
    emptyDir), as an image's files would be."""
    paths = {str(REPO_ROOT), sys.prefix, *(p for p in sys.path if p and os.path.isdir(p))}
    return {"pathPrepend": [str(Path(sys.executable).parent)], "paths": sorted(paths)}


@dataclass
class StackInfo:
    """Everything a client needs to talk to the stack."""

    state_dir: Path
    kubeconfig: Path
    api_server: str
    s3_endpoint: str
    bucket: str
    catalog: Path | None
    kubectl: Path
    helm: Path
    operator_metrics: str | None = None

    def env(self) -> dict[str, str]:
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": S3_USER,
            "AWS_SECRET_ACCESS_KEY": S3_PASSWORD,
            "AWS_REGION": "us-east-1",
            "IMG2IMG_BUCKET": self.bucket,
            "PATH": f"{self.kubectl.parent}:{os.environ.get('PATH', '')}",
        }
        if self.catalog:
            env["IMG2IMG_CATALOG"] = str(self.catalog)
        return env

    def export_lines(self) -> str:
        env = self.env()
        env["PATH"] = f"{self.kubectl.parent}:$PATH"
        lines = []
        for key, value in env.items():
            quoted = f'"{value}"' if key == "PATH" else shlex.quote(value)
            lines.append(f"export {key}={quoted}")
        return "\n".join(lines) + "\n"


@dataclass
class Stack:
    state_dir: Path = field(default_factory=default_state_dir)
    with_operator: bool = True
    with_models: bool = True
    with_executor: bool = True
    gpus: int = 1
    operator_overrides: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        self.logs = self.state_dir / "logs"
        self.state_file = self.state_dir / "state.json"

    # ---- state ------------------------------------------------------------------------------------------------
    def _state(self) -> dict:
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return {"ports": {}, "pids": {}}

    def _save(self, state: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=2))

    def _ports(self, state: dict) -> dict[str, int]:
        ports = state.setdefault("ports", {})
        for name in ("etcd", "etcd_peer", "apiserver", "minio", "minio_console", "operator_health", "operator_metrics"):
            if name not in ports:
                ports[name] = free_port()
        return ports

    def _running(self, state: dict, name: str) -> bool:
        pid = state.get("pids", {}).get(name)
        return bool(pid) and pid_alive(pid)

    def _spawn(self, state: dict, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        if self._running(state, name):
            return
        self.logs.mkdir(parents=True, exist_ok=True)
        log_file = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=self.state_dir,
            start_new_session=True,  # its own process group: `down` kills it and all its children
        )
        state.setdefault("pids", {})[name] = proc.pid
        self._save(state)

    # ---- up ---------------------------------------------------------------------------------------------------
    def up(self) -> StackInfo:
        bins = binaries.ensure_all()
        state = self._state()
        ports = self._ports(state)
        self._save(state)
        certs = make_certs(self.state_dir / "certs")
        api = f"https://127.0.0.1:{ports['apiserver']}"
        admin_kubeconfig = self.state_dir / "kubeconfig"
        admin_kubeconfig.write_text(kubeconfig(api, certs.ca.cert, certs.admin, "admin"))
        kcm_kubeconfig = self.state_dir / "controller-manager.kubeconfig"
        kcm_kubeconfig.write_text(
            kubeconfig(api, certs.ca.cert, certs.controller_manager, "system:kube-controller-manager")
        )

        self._start_etcd(state, bins, ports)
        self._start_apiserver(state, bins, ports, certs)
        self._start_controller_manager(state, bins, ports, certs, kcm_kubeconfig)
        self._start_minio(state, bins, ports)
        info = StackInfo(
            state_dir=self.state_dir,
            kubeconfig=admin_kubeconfig,
            api_server=api,
            s3_endpoint=f"http://127.0.0.1:{ports['minio']}",
            bucket=BUCKET,
            catalog=None,
            kubectl=bins.kubectl,
            helm=bins.helm,
        )
        self._create_bucket(info)
        self._apply_crds(info)
        self._bootstrap_namespace(info, "default")
        if self.with_models:
            info.catalog = build_tiny_models()
        if self.with_executor:
            self._start_executor(state, info)
        if self.with_operator:
            self.start_operator(info)
            info.operator_metrics = f"http://127.0.0.1:{ports['operator_metrics']}/metrics"
        (self.state_dir / "env.sh").write_text(info.export_lines())
        return info

    def _start_etcd(self, state, bins, ports) -> None:
        client = f"http://127.0.0.1:{ports['etcd']}"
        peer = f"http://127.0.0.1:{ports['etcd_peer']}"
        self._spawn(
            state,
            "etcd",
            [
                str(bins.etcd),
                "--name=local",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=local={peer}",
                "--unsafe-no-fsync=true",  # a throwaway store: durability is not worth the fsync latency here
                "--log-level=warn",
            ],
        )
        _wait("etcd", lambda: urllib.request.urlopen(f"{client}/health", timeout=1).status == 200, 60,
              self.logs / "etcd.log")

    def _start_apiserver(self, state, bins, ports, certs: ControlPlaneCerts) -> None:
        port = ports["apiserver"]
        self._spawn(
            state,
            "kube-apiserver",
            [
                str(bins.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.state_dir / 'certs'}",
                f"--tls-cert-file={certs.serving.cert}",
                f"--tls-private-key-file={certs.serving.key}",
                f"--client-ca-file={certs.ca.cert}",
                f"--service-account-issuer=https://127.0.0.1:{port}",
                f"--service-account-key-file={certs.service_account.cert}",
                f"--service-account-signing-key-file={certs.service_account.key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        ctx = ssl.create_default_context(cafile=str(certs.ca.cert))
        ctx.load_cert_chain(str(certs.admin.cert), str(certs.admin.key))
        _wait(
            "kube-apiserver",
            lambda: urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=ctx, timeout=2).status == 200,
            90,
            self.logs / "kube-apiserver.log",
        )

    def _start_controller_manager(self, state, bins, ports, certs: ControlPlaneCerts, kcm_kubeconfig: Path) -> None:
        # The controllers this stack has no other way to get: owner references cascade, namespaces finish deleting,
        # service accounts and their tokens exist, pods of vanished nodes are collected; Job for comparisons.
        controllers = [
            "garbage-collector-controller",
            "namespace-controller",
            "serviceaccount-controller",
            "serviceaccount-token-controller",
            "root-ca-certificate-publisher-controller",
            "pod-garbage-collector-controller",
            "job-controller",
            "ttl-after-finished-controller",
        ]
        self._spawn(
            state,
            "kube-controller-manager",
            [
                str(bins.kube_controller_manager),
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                f"--controllers={','.join(controllers)}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={certs.service_account.key}",
                f"--root-ca-file={certs.ca.cert}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
        )

    def _start_minio(self, state, bins, ports) -> None:
        self._spawn(
            state,
            "minio",
            [
                str(bins.minio),
                "server",
                str(self.state_dir / "s3"),
                f"--address=127.0.0.1:{ports['minio']}",
                f"--console-address=127.0.0.1:{ports['minio_console']}",
                "--quiet",
            ],
            env={
                "MINIO_ROOT_USER": S3_USER,
                "MINIO_ROOT_PASSWORD": S3_PASSWORD,
                "MINIO_BROWSER": "off",
                "MINIO_UPDATE": "off",
            },
        )
        endpoint = f"http://127.0.0.1:{ports['minio']}"
        _wait("minio", lambda: urllib.request.urlopen(f"{endpoint}/minio/health/ready", timeout=1).status == 200, 60,
              self.logs / "minio.log")

    def _create_bucket(self, info: StackInfo) -> None:
        import boto3
        from botocore.exceptions import ClientError

        s3 = boto3.client(
            "s3",
            endpoint_url=info.s3_endpoint,
            aws_access_key_id=S3_USER,
            aws_secret_access_key=S3_PASSWORD,
            region_name="us-east-1",
        )
        try:
            s3.create_bucket(Bucket=info.bucket)
        except ClientError as e:
            if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def kubectl(self, info: StackInfo, *args: str, input: str | None = None, check: bool = True):
        return subprocess.run(
            [str(info.kubectl), f"--kubeconfig={info.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
        )

    def _apply_crds(self, info: StackInfo) -> None:
        if not any(CRD_DIR.glob("*.yaml")):
            log("no CRD in crds/ yet; skipping")
            return
        _wait("kube-apiserver accepting the CRDs",
              lambda: self.kubectl(info, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR)).returncode == 0,
              60)
        self.kubectl(info, "wait", "--for=condition=Established", f"crd/{PLURAL}.{API_GROUP}", "--timeout=60s")

    def _bootstrap_namespace(self, info: StackInfo, namespace: str) -> None:
        bootstrap_namespace(lambda *a, **k: self.kubectl(info, *a, **k), namespace)

    def _start_executor(self, state: dict, info: StackInfo) -> None:
        config = {
            "nodeName": NODE_NAME,
            "capacity": {"cpu": "2", "memory": "24Gi", "pods": "110", "nvidia.com/gpu": str(self.gpus)},
            "labels": {"nvidia.com/gpu.product": "LOCAL-CPU", "img2img.dev/local": "true"},
            "stateDir": str(self.state_dir / "executor"),
            # The image name picks the local environment a container runs in, as a registry would pick its layers.
            "images": {
                "img2img/runner:*": python_image(),
                "img2img/noop:*": python_image(),
            },
        }
        config_file = self.state_dir / "executor.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self._spawn(
            state,
            "executor",
            [sys.executable, "-m", "img2img.local.executor", f"--kubeconfig={info.kubeconfig}", f"--config={config_file}"],
        )
        _wait(f"node {NODE_NAME} Ready and schedulable", lambda: _node_schedulable(self.kubectl(
            info, "get", "node", NODE_NAME, "-o", "json", check=False)), 60, self.logs / "executor.log")

    def operator_config(self, info: StackInfo) -> dict:
        ports = self._state()["ports"]
        config = {
            "runner": {
                "image": RUNNER_IMAGE,
                "serviceAccountName": RUNNER_SERVICE_ACCOUNT,
                "catalogPath": str(info.catalog) if info.catalog else None,
            },
            "s3": {
                "endpoint": info.s3_endpoint,
                "region": "us-east-1",
                "bucket": info.bucket,
                "prefix": "jobs",
                "credentialsSecret": S3_SECRET,
            },
            "gpuClasses": {"local": {"resources": {"nvidia.com/gpu": 1}, "maxConcurrent": self.gpus}},
            "defaultGpuClass": "local",
            "healthPort": ports["operator_health"],
            "metricsPort": ports["operator_metrics"],
        }
        return deep_merge(config, self.operator_overrides)

    def start_operator(self, info: StackInfo, overrides: dict | None = None) -> None:
        state = self._state()
        if overrides is not None:
            self.operator_overrides = overrides
        config_file = self.state_dir / "operator.yaml"
        config_file.write_text(yaml.safe_dump(self.operator_config(info), sort_keys=False))
        env = {
            "KUBECONFIG": str(info.kubeconfig),
            "AWS_ENDPOINT_URL": info.s3_endpoint,
            "AWS_ACCESS_KEY_ID": S3_USER,
            "AWS_SECRET_ACCESS_KEY": S3_PASSWORD,
            "AWS_REGION": "us-east-1",
        }
        operator = Path(sys.executable).parent / "img2img-operator"
        self._spawn(state, "operator", [str(operator), f"--config={config_file}"], env=env)
        port = state["ports"]["operator_health"]
        _wait("operator", lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200,
              60, self.logs / "operator.log")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        """Stop one component and everything it started (its process group)."""
        state = self._state()
        pid = state.get("pids", {}).get(name)
        if pid and pid_alive(pid):
            _signal_group(pid, sig)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_alive(pid):
                _signal_group(pid, signal.SIGKILL)
                while pid_alive(pid):
                    time.sleep(0.05)
        state.get("pids", {}).pop(name, None)
        self._save(state)

    # ---- down -------------------------------------------------------------------------------------------------
    def down(self) -> None:
        for name in reversed(COMPONENTS):
            self.stop(name)
        state = self._state()
        busy = [p for p in state.get("ports", {}).values() if _listening(p)]
        if busy:
            raise RuntimeError(f"ports still listening after down: {busy}")


def _node_schedulable(proc: subprocess.CompletedProcess) -> bool:
    if proc.returncode != 0:
        return False
    node = json.loads(proc.stdout)
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))
    not_ready_taint = any(t["key"] == "node.kubernetes.io/not-ready" for t in node.get("spec", {}).get("taints") or [])
    return ready and not not_ready_taint


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def bootstrap_namespace(kubectl: Callable, namespace: str) -> None:
    """What a cluster admin does once per namespace that runs jobs: the runner ServiceAccount and the S3 Secret."""
    manifest = f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {RUNNER_SERVICE_ACCOUNT}, namespace: {namespace}}}
automountServiceAccountToken: false
---
apiVersion: v1
kind: Secret
metadata: {{name: {S3_SECRET}, namespace: {namespace}}}
stringData: {{AWS_ACCESS_KEY_ID: {S3_USER}, AWS_SECRET_ACCESS_KEY: {S3_PASSWORD}}}
"""
    kubectl("apply", "--server-side", "-f", "-", input=manifest)


def build_tiny_models() -> Path:
    """Tiny random models in diffusers format and their catalog, built once per recipe version into the cache."""
    target = cache_dir() / "models" / "tiny"
    catalog = target / "catalog.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "img2img_runner.tiny_models", str(target)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if proc.returncode != 0 or not catalog.exists():
        raise RuntimeError(f"building the tiny models failed:\n{proc.stderr[-3000:]}")
    return catalog


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="img2img local")
    parser.add_argument("action", choices=["up", "down", "env"])
    parser.add_argument("--state-dir", type=Path, default=default_state_dir())
    parser.add_argument("--no-operator", action="store_true", help="start everything but the operator")
    parser.add_argument("--no-models", action="store_true", help="do not build the tiny models (no torch needed)")
    parser.add_argument("--gpus", type=int, default=1, help="nvidia.com/gpu capacity of the local node")
    args = parser.parse_args(argv)
    stack = Stack(
        state_dir=args.state_dir,
        with_operator=not args.no_operator,
        with_models=not args.no_models,
        gpus=args.gpus,
    )
    if args.action == "down":
        stack.down()
        log("stopped; no process of the stack is left")
        return 0
    if args.action == "env":
        sys.stdout.write((args.state_dir / "env.sh").read_text())
        return 0
    started = time.monotonic()
    info = stack.up()
    log(f"up in {time.monotonic() - started:.1f} s; logs in {stack.logs}")
    sys.stdout.write(info.export_lines())
    return 0


if __name__ == "__main__":
    sys.exit(main())
