"""What the stack's cluster gets before jobs run: the bucket, the CRDs, the runner namespace (what the chart installs
there: the runners' ServiceAccount), and the warm pool of the tiny models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from img2img import API_GROUP, API_VERSION
from img2img.api.pool import POOL_KIND
from img2img.local.paths import REPO_ROOT
from img2img.local.supervisor import wait_until

BUCKET = "img2img"
S3_USER = "img2img-local"
S3_PASSWORD = "img2img-local-secret"  # loopback-only development credentials, generated into no real system
S3_REGION = "us-east-1"
RUNNER_SERVICE_ACCOUNT = "img2img-runner"
RUNNER_NAMESPACE = "img2img-system"  # the operator's runner namespace: runner pods and RunnerPools
TINY_POOL = "tiny-sdxl"
# The tiny catalog's SDXL models (img2img_runner.tiny_models): what the seed request runs (base, refiner, VAE, and
# the SDXL canny ControlNet its SD 1.5 ControlNet runs as).
TINY_POOL_MODELS = ["sd_xl_base_1.0", "sd_xl_refiner_1.0", "sdxl_vae.safetensors", "diffusers_xl_canny_mid"]
CRD_DIR = REPO_ROOT / "crds"

Kubectl = Callable[..., object]  # kubectl(*args, input=None, check=True) -> CompletedProcess


def create_bucket(endpoint: str, bucket: str) -> None:
    """The job bucket, unless it exists."""
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_USER, aws_secret_access_key=S3_PASSWORD,
                      region_name=S3_REGION)
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def apply_crds(kubectl: Kubectl) -> None:
    """The repository's CRDs, applied and Established (retried while the API server is still starting up)."""
    wait_until("kube-apiserver accepting the CRDs",
               lambda: kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR)).returncode == 0, 60)
    # Every CRD, with room for a slow start on a loaded 2-core machine (the API server's CRD controller is busy).
    kubectl("wait", "--for=condition=Established", "-f", str(CRD_DIR), "--timeout=180s")


def bootstrap_runner_namespace(kubectl: Kubectl, namespace: str = RUNNER_NAMESPACE) -> None:
    """The runner namespace with what the chart installs there for runners: their ServiceAccount (no API rights)."""
    manifest = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {namespace}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {RUNNER_SERVICE_ACCOUNT}, namespace: {namespace}}}
automountServiceAccountToken: false
"""
    kubectl("apply", "--server-side", "-f", "-", input=manifest)


def pool_manifest(name: str, gpu_class: str, models: list[str], min_ready: int, namespace: str = RUNNER_NAMESPACE,
                  **sizing: int) -> str:
    """A RunnerPool, as `kubectl apply` takes it."""
    spec = {"gpuClass": gpu_class, "models": models, "minReady": min_ready, **sizing}
    return json.dumps({"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": POOL_KIND,
                       "metadata": {"name": name, "namespace": namespace}, "spec": spec})


def wait_pool_ready(kubectl: Kubectl, name: str, ready: int, timeout: float, log: Path | None = None,
                    namespace: str = RUNNER_NAMESPACE) -> None:
    """Until the pool's status counts ``ready`` runners with their models loaded."""
    def counted() -> bool:
        proc = kubectl("get", "runnerpool", name, "-n", namespace, "-o", "jsonpath={.status.readyRunners}",
                       check=False)
        return proc.returncode == 0 and proc.stdout.strip().isdigit() and int(proc.stdout) >= ready

    wait_until(f"{ready} ready runner(s) in pool {name}", counted, timeout, log)


def gateway_key_secret(kubectl: Kubectl, namespace: str, name: str, key: str) -> None:
    """The namespace of the gateway and the Secret holding its API key (what the chart's values name)."""
    kubectl("create", "namespace", namespace, check=False)  # kept when it exists
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
                "stringData": {"key": key}}
    kubectl("apply", "--server-side", "-f", "-", input=json.dumps(manifest))

