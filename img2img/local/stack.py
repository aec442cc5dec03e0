"""The embedded stack: etcd, kube-apiserver, kube-controller-manager, MinIO, the local executor and the operator.

One code path serves `img2img local up|down`, the pytest fixtures, `make demo` and the benchmarks. `up` is idempotent:
components already running and healthy are kept (``supervisor``). How each component is started is in
``components``; what the cluster gets before jobs run (bucket, CRDs, the runner namespace, the warm pool) in
``bootstrap``.
"""

from __future__ import annotations

import json
import os
import shlex
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from img2img.local import binaries
from img2img.local.binaries import Binaries
from img2img.local.bootstrap import (
    BUCKET, TINY_POOL, TINY_POOL_MODELS, apply_crds, bootstrap_runner_namespace, create_bucket, gateway_key_secret,
    pool_manifest, wait_pool_ready,
)
from img2img.local.certs import ControlPlaneCerts, kubeconfig, make_certs
from img2img.local.components import (
    GATEWAY_ENDPOINT, GATEWAY_KEY_SECRET, GATEWAY_NAMESPACE, MINIO_ENV, NODE_NAME, apiserver_argv, controller_manager_argv, etcd_argv, executor_argv, executor_config,
    gateway_argv, gateway_config, loopback, minio_argv, node_schedulable, operator_argv, operator_config, s3_env,
)
from img2img.local.models import build_tiny_models
from img2img.local.paths import default_state_dir
from img2img.local.supervisor import Supervisor, wait_until

# Start order; `down` stops them in reverse: consumers first, storage last.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "minio", "executor", "operator", "gateway")
PORTS = ("etcd", "etcd_peer", "apiserver", "minio", "minio_console", "operator_health", "operator_metrics",
         "operator_runners", "gateway")
POOL_READY_SECONDS = 300  # the first runner starts Python and loads the tiny models


@dataclass
class GatewayAccess:
    """What a RunPod client needs: the base URL (ending in /v2, as RUNPOD_ENDPOINT_BASE_URL), a key, an endpoint."""

    base_url: str
    api_key: str
    endpoint_id: str

    def env(self) -> dict[str, str]:
        return {"RUNPOD_ENDPOINT_BASE_URL": self.base_url, "RUNPOD_API_KEY": self.api_key,
                "RUNPOD_ENDPOINT_ID": self.endpoint_id}


@dataclass
class StackInfo:
    """Everything a client needs to talk to the stack."""

    state_dir: Path
    kubeconfig: Path
    api_server: str
    s3_endpoint: str
    bucket: str
    catalog: Path | None
    kubectl_path: Path  # helm lies next to it; both go first on PATH
    operator_metrics: str | None = None
    gateway: GatewayAccess | None = None

    def env(self) -> dict[str, str]:
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            **s3_env(self.s3_endpoint),
            "IMG2IMG_BUCKET": self.bucket,
            "PATH": f"{self.kubectl_path.parent}:{os.environ.get('PATH', '')}",
        }
        if self.catalog:
            env["IMG2IMG_CATALOG"] = str(self.catalog)
        if self.gateway:
            env.update(self.gateway.env())
        return env

    def export_lines(self) -> str:
        env = self.env()
        env["PATH"] = f"{self.kubectl_path.parent}:$PATH"
        lines = []
        for key, value in env.items():
            quoted = f'"{value}"' if key == "PATH" else shlex.quote(value)
            lines.append(f"export {key}={quoted}")
        return "\n".join(lines) + "\n"

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """kubectl as the stack's admin; output captured as text."""
        return subprocess.run([str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args], input=input,
                              capture_output=True, text=True, check=check)


@dataclass
class Stack(Supervisor):
    state_dir: Path = field(default_factory=default_state_dir)
    with_operator: bool = True
    with_models: bool = True
    with_gateway: bool = True
    gpus: int = 1
    operator_overrides: dict = field(default_factory=dict)

    def up(self) -> StackInfo:
        bins = binaries.ensure_all()
        state = self.read_state()
        ports = self.assign_ports(state, PORTS)
        self.save_state(state)
        certs = make_certs(self.state_dir / "certs")
        api = loopback(ports["apiserver"], "https")
        admin_kubeconfig = self.state_dir / "kubeconfig"
        admin_kubeconfig.write_text(kubeconfig(api, certs.ca.cert, certs.admin, "admin"))
        kcm_kubeconfig = self.state_dir / "controller-manager.kubeconfig"
        kcm_kubeconfig.write_text(
            kubeconfig(api, certs.ca.cert, certs.controller_manager, "system:kube-controller-manager")
        )

        self.spawn(state, "etcd", etcd_argv(bins, ports, self.state_dir))
        self._wait_healthy("etcd", f"{loopback(ports['etcd'])}/health")
        self._start_apiserver(state, bins, ports, certs)
        self.spawn(state, "kube-controller-manager", controller_manager_argv(bins, certs, kcm_kubeconfig))
        self.spawn(state, "minio", minio_argv(bins, ports, self.state_dir), env=MINIO_ENV)
        self._wait_healthy("minio", f"{loopback(ports['minio'])}/minio/health/ready")
        info = StackInfo(
            state_dir=self.state_dir,
            kubeconfig=admin_kubeconfig,
            api_server=api,
            s3_endpoint=loopback(ports["minio"]),
            bucket=BUCKET,
            catalog=None,
            kubectl_path=bins.kubectl,
        )
        create_bucket(info.s3_endpoint, info.bucket)
        apply_crds(info.kubectl)
        bootstrap_runner_namespace(info.kubectl)
        if self.with_models:
            info.catalog = build_tiny_models()
        self._start_executor(state, info)
        if self.with_operator:
            self.start_operator(info)
            info.operator_metrics = f"{loopback(ports['operator_metrics'])}/metrics"
            if self.with_models:
                self.warm_pool(info)
        if self.with_gateway:
            info.gateway = self.start_gateway(info)
        (self.state_dir / "env.sh").write_text(info.export_lines())
        return info

    def _wait_healthy(self, name: str, url: str, context: ssl.SSLContext | None = None, timeout: float = 60) -> None:
        wait_until(name, lambda: urllib.request.urlopen(url, context=context, timeout=2).status == 200, timeout,
                   self.logs / f"{name}.log")

    def _start_apiserver(self, state: dict, bins: Binaries, ports: dict[str, int], certs: ControlPlaneCerts) -> None:
        self.spawn(state, "kube-apiserver", apiserver_argv(bins, ports, self.state_dir, certs))
        ctx = ssl.create_default_context(cafile=str(certs.ca.cert))
        ctx.load_cert_chain(str(certs.admin.cert), str(certs.admin.key))
        self._wait_healthy("kube-apiserver", f"{loopback(ports['apiserver'], 'https')}/readyz", ctx, timeout=90)

    def _start_executor(self, state: dict, info: StackInfo) -> None:
        config_file = self.state_dir / "executor.yaml"
        config = executor_config(self.state_dir, self.gpus, host_ports=[state["ports"]["minio"]])
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.spawn(state, "executor", executor_argv(info.kubeconfig, config_file))

        def schedulable() -> bool:
            proc = info.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
            return proc.returncode == 0 and node_schedulable(json.loads(proc.stdout))

        wait_until(f"node {NODE_NAME} Ready and schedulable", schedulable, 60, self.logs / "executor.log")

    def start_operator(self, info: StackInfo, overrides: dict | None = None, name: str = "operator") -> None:
        """Start an operator replica (kept when running); ``overrides`` replace the previous ones for this and later
        starts. Each replica (``name``: its component, and its identity in the leader election, as a pod's name is)
        has its own health and metrics ports; the runner endpoint's port is shared, as the chart's Service is: only
        the leader listens there. Waits for its /healthz (a standby answers too)."""
        state = self.read_state()
        if overrides is not None:
            self.operator_overrides = overrides
        ports = self.assign_ports(state, (f"{name}_health", f"{name}_metrics"))
        self.save_state(state)
        config = operator_config(s3_endpoint=info.s3_endpoint, bucket=info.bucket, catalog=info.catalog,
                                 health_port=ports[f"{name}_health"], metrics_port=ports[f"{name}_metrics"],
                                 runners_port=ports["operator_runners"], gpus=self.gpus,
                                 overrides=self.operator_overrides)
        config_file = self.state_dir / f"{name}.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        env = {"KUBECONFIG": str(info.kubeconfig), "POD_NAME": name, **s3_env(info.s3_endpoint)}
        self.spawn(state, name, operator_argv(config_file), env=env)
        self._wait_healthy(name, f"{loopback(ports[f'{name}_health'])}/healthz")

    def warm_pool(self, info: StackInfo) -> None:
        """The pool of the tiny SDXL models (what the seed request runs) with one warm runner; waits for it."""
        info.kubectl("apply", "--server-side", "-f", "-",
                     input=pool_manifest(TINY_POOL, "local", TINY_POOL_MODELS, min_ready=1))
        wait_pool_ready(info.kubectl, TINY_POOL, 1, POOL_READY_SECONDS, self.logs / "operator.log")
        binaries.log(f"pool {TINY_POOL}: a warm runner holds {', '.join(TINY_POOL_MODELS)}")

    def start_gateway(self, info: StackInfo, namespace: str = "default") -> GatewayAccess:
        """Start the RunPod-compatible gateway (kept when running) for the jobs of ``namespace``; its key is made
        once and kept in the state folder."""
        import secrets

        state = self.read_state()
        key_file = self.state_dir / "gateway-api-key"
        if not key_file.exists():
            key_file.touch(mode=0o600)
            key_file.write_text(secrets.token_urlsafe(32))
        gateway_key_secret(info.kubectl, GATEWAY_NAMESPACE, GATEWAY_KEY_SECRET, key_file.read_text())
        config_file = self.state_dir / "gateway.yaml"
        config_file.write_text(yaml.safe_dump(gateway_config(s3_endpoint=info.s3_endpoint, bucket=info.bucket,
                                                             catalog=info.catalog, port=state["ports"]["gateway"],
                                                             namespace=namespace),
                                              sort_keys=False))
        env = {"KUBECONFIG": str(info.kubeconfig), **s3_env(info.s3_endpoint)}
        self.spawn(state, "gateway", gateway_argv(config_file), env=env)
        url = loopback(state["ports"]["gateway"])
        self._wait_healthy("gateway", f"{url}/healthz")
        return GatewayAccess(f"{url}/v2", key_file.read_text(), GATEWAY_ENDPOINT)

    def down(self) -> None:
        replicas = tuple(name for name in self.read_state().get("pids", {}) if name not in COMPONENTS)  # operator-b…
        self.stop_all(replicas + tuple(reversed(COMPONENTS)))
