"""How each component of the local stack is started: pure builders of command lines and configuration files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from img2img.local.binaries import Binaries
from img2img.local.bootstrap import RUNNER_NAMESPACE, RUNNER_SERVICE_ACCOUNT, S3_PASSWORD, S3_REGION, S3_USER
from img2img.local.certs import ControlPlaneCerts
from img2img.local.paths import REPO_ROOT

NODE_NAME = "local-gpu-0"
RUNNER_IMAGE = "img2img/runner:local"
OPERATOR_IMAGE = "img2img/operator:local"  # the chart's operator image, as `operator.image` names it here
NOOP_IMAGE = "img2img/noop:local"  # a runner without model work (bench/noop-image)
NOOP_BIN = REPO_ROOT / "bench" / "noop-image" / "bin"

# The controllers this stack has no other way to get: owner references cascade, namespaces finish deleting,
# service accounts and their tokens exist, pods of vanished nodes are collected; Job for comparisons; Deployment and
# ReplicaSet for the chart's operator, installed with `helm install` and run by the executor.
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "pod-garbage-collector-controller",
    "job-controller",
    "ttl-after-finished-controller",
)


def loopback(port: int, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{port}"


def s3_env(endpoint: str) -> dict[str, str]:
    """What a boto3 client needs to reach the stack's S3."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": S3_USER, "AWS_SECRET_ACCESS_KEY": S3_PASSWORD,
            "AWS_REGION": S3_REGION}


def etcd_argv(bins: Binaries, ports: dict[str, int], state_dir: Path) -> list[str]:
    client, peer = loopback(ports["etcd"]), loopback(ports["etcd_peer"])
    return [
        str(bins.etcd),
        "--name=local",
        f"--data-dir={state_dir / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=local={peer}",
        "--unsafe-no-fsync=true",  # a throwaway store: durability is not worth the fsync latency here
        "--log-level=warn",
    ]


def apiserver_argv(bins: Binaries, ports: dict[str, int], state_dir: Path, certs: ControlPlaneCerts) -> list[str]:
    port = ports["apiserver"]
    return [
        str(bins.kube_apiserver),
        f"--etcd-servers={loopback(ports['etcd'])}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={state_dir / 'certs'}",
        f"--tls-cert-file={certs.serving.cert}",
        f"--tls-private-key-file={certs.serving.key}",
        f"--client-ca-file={certs.ca.cert}",
        f"--service-account-issuer={loopback(port, 'https')}",
        f"--service-account-key-file={certs.service_account.cert}",
        f"--service-account-signing-key-file={certs.service_account.key}",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--authorization-mode=RBAC",
        "--allow-privileged=true",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager_argv(bins: Binaries, certs: ControlPlaneCerts, kubeconfig: Path) -> list[str]:
    return [
        str(bins.kube_controller_manager),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--controllers={','.join(CONTROLLERS)}",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={certs.service_account.key}",
        f"--root-ca-file={certs.ca.cert}",
        "--leader-elect=false",
        "--secure-port=0",
        "--v=1",
    ]


def minio_argv(bins: Binaries, ports: dict[str, int], state_dir: Path) -> list[str]:
    return [
        str(bins.minio),
        "server",
        str(state_dir / "s3"),
        f"--address=127.0.0.1:{ports['minio']}",
        f"--console-address=127.0.0.1:{ports['minio_console']}",
        "--quiet",
    ]


MINIO_ENV = {"MINIO_ROOT_USER": S3_USER, "MINIO_ROOT_PASSWORD": S3_PASSWORD, "MINIO_BROWSER": "off",
             "MINIO_UPDATE": "off"}


def python_image() -> dict:
    """This Python environment as a container image: its scripts on PATH, and its files (the project, the venvs)
    kept visible in the container even under a volume that covers them (a checkout in /tmp under the runner's /tmp
    emptyDir), as an image's files would be."""
    paths = {str(REPO_ROOT), sys.prefix, *(p for p in sys.path if p and os.path.isdir(p))}
    return {"pathPrepend": [str(Path(sys.executable).parent)], "paths": sorted(paths)}


def noop_image() -> dict:
    """This Python environment with the no-op runner first on PATH."""
    image = python_image()
    return {**image, "pathPrepend": [str(NOOP_BIN), *image["pathPrepend"]]}


def executor_config(state_dir: Path, gpus: int, host_ports: list[int] = ()) -> dict:
    """The executor's configuration: one node with ``gpus`` GPUs, whose images are this Python environment;
    ``host_ports`` (S3) are reached from the pods with a network of their own (the API server's is always)."""
    return {
        "nodeName": NODE_NAME,
        "capacity": {"cpu": "2", "memory": "24Gi", "pods": "110", "nvidia.com/gpu": str(gpus)},
        "labels": {"nvidia.com/gpu.product": "LOCAL-CPU", "img2img.dev/local": "true"},
        "stateDir": str(state_dir / "executor"),
        # The image name picks the local environment a container runs in, as a registry would pick its layers.
        "images": {
            "img2img/runner:*": python_image(),
            "img2img/operator:*": python_image(),
            "img2img/noop:*": noop_image(),
        },
        "hostPorts": list(host_ports),
    }


def executor_argv(kubeconfig: Path, config_file: Path) -> list[str]:
    """The one place the stack starts the executor."""
    return [sys.executable, "-m", "img2img.local.executor", f"--kubeconfig={kubeconfig}", f"--config={config_file}"]


def node_schedulable(node: dict) -> bool:
    """A Node object that is Ready and no longer tainted not-ready."""
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))
    not_ready_taint = any(t["key"] == "node.kubernetes.io/not-ready" for t in node.get("spec", {}).get("taints") or [])
    return ready and not not_ready_taint


def operator_config(*, s3_endpoint: str, bucket: str, catalog: Path | None, health_port: int, metrics_port: int,
                    runners_port: int, gpus: int, overrides: dict) -> dict:
    """The operator's configuration for this stack, with ``overrides`` merged in (see ``deep_merge``)."""
    config = {
        "runner": {
            "image": RUNNER_IMAGE,
            "serviceAccountName": RUNNER_SERVICE_ACCOUNT,
            "catalogPath": str(catalog) if catalog else None,
            # runners are processes sharing this machine's few cores: torch's own thread pool would spin against
            # them (a tiny-model step goes from ~1 s to ~0.05 s with one thread on a loaded 2-core machine)
            "env": {"IMG2IMG_TORCH_THREADS": "1"},
        },
        "runners": {
            "namespace": RUNNER_NAMESPACE,
            "port": runners_port,
            # runners are processes on this machine (the executor plays the kubelet here)
            "operatorUrl": loopback(runners_port),
        },
        "s3": {
            "endpoint": s3_endpoint,
            "region": S3_REGION,
            "bucket": bucket,
            "prefix": "jobs",
        },
        "gpuClasses": {"local": {"resources": {"nvidia.com/gpu": 1}, "maxConcurrent": gpus}},
        "defaultGpuClass": "local",
        # a webhook receiver here is on loopback (plain http): let the operator reach it; its signing key is made in
        # the runner namespace (img2img-system) on the first start, its public key published there for the gateway
        "webhooks": {"namespace": RUNNER_NAMESPACE, "allowPrivateAddresses": True},
        # Tolerant of a loaded machine: a replica here that misses its renewal deadline (an event loop stalled by a
        # busy CI machine) exits, and nothing restarts it. A replica restarted under the same name leads again at
        # once (its identity holds the Lease), so only a second replica waits the whole lease out.
        "leaderElection": {"leaseDurationSeconds": 60, "renewDeadlineSeconds": 45, "retryPeriodSeconds": 2},
        "healthPort": health_port,
        "metricsPort": metrics_port,
    }
    return deep_merge(config, overrides)


def operator_argv(config_file: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "img2img-operator"), f"--config={config_file}"]


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``: dicts merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


# ---- the gateway ----------------------------------------------------------------------------------------------------
GATEWAY_NAMESPACE = "img2img-system"
GATEWAY_KEY_SECRET = "img2img-gateway-key"
GATEWAY_ENDPOINT = "local"  # RunPod's endpoint id of the stack's jobs (the `default` namespace)


def gateway_config(*, s3_endpoint: str, bucket: str, catalog: Path | None, port: int, namespace: str) -> dict:
    """The gateway's configuration for this stack: one endpoint, for ``namespace``, and one key."""
    return {
        "host": "127.0.0.1",
        "port": port,
        "namespace": GATEWAY_NAMESPACE,
        "runnerNamespace": GATEWAY_NAMESPACE,
        "catalogPath": str(catalog) if catalog else None,
        "s3": {"bucket": bucket, "endpoint": s3_endpoint, "region": S3_REGION},
        "allowPrivateAddresses": True,  # everything here is on loopback, a caller's s3Config and webhook too
        "endpoints": {GATEWAY_ENDPOINT: {"namespace": namespace}},
        "keys": [{"secret": GATEWAY_KEY_SECRET, "endpoints": [GATEWAY_ENDPOINT]}],
    }


def gateway_argv(config_file: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "img2img-gateway"), f"--config={config_file}"]

