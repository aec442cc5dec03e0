"""What the stack's cluster gets before jobs run: the bucket, the CRDs, and per namespace what a cluster admin adds."""

from __future__ import annotations

import json
from typing import Callable

from img2img.local.paths import REPO_ROOT
from img2img.local.supervisor import wait_until

BUCKET = "img2img"
S3_USER = "img2img-local"
S3_PASSWORD = "img2img-local-secret"  # loopback-only development credentials, generated into no real system
S3_REGION = "us-east-1"
S3_SECRET = "img2img-s3"  # the Secret runner pods read their S3 credentials from
RUNNER_SERVICE_ACCOUNT = "img2img-runner"
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


def bootstrap_namespace(kubectl: Kubectl, namespace: str) -> None:
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


def gateway_key_secret(kubectl: Kubectl, namespace: str, name: str, key: str) -> None:
    """The namespace of the gateway and the Secret holding its API key (what the chart's values name)."""
    kubectl("create", "namespace", namespace, check=False)  # kept when it exists
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
                "stringData": {"key": key}}
    kubectl("apply", "--server-side", "-f", "-", input=json.dumps(manifest))

