"""The runner pod of one attempt of one job, as a manifest dict. Pure.

Follows docs/architecture.md "Operator → runner": pod ``<job>-<attempt>``, container ``runner``, the job staged in
S3 (``IMG2IMG_JOB_INPUT``), results written to ``IMG2IMG_OUTPUT``, the catalog at ``IMG2IMG_CATALOG``, S3
credentials from a Secret. The pod runs under the "restricted" Pod Security Standard, with no API token.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from typing import Any

from img2img import API_GROUP, API_VERSION, KIND
from img2img.api.termination import TERMINATION_LOG_PATH

from .config import OperatorConfig
from .controls import Controls
from .views import (
    LABEL_ATTEMPT,
    LABEL_GPU_CLASS,
    LABEL_JOB,
    LABEL_JOB_UID,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    RUNNER_CONTAINER,
    JobView,
)

MAX_NAME = 63  # pod names become host names: one DNS label
TMP_MOUNT = "/tmp"

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def runner_pod_name(job_name: str, attempt: int) -> str:
    """``<job>-<attempt>``; a job name too long for that is cut and made unique with a hash of the full name."""
    suffix = f"-{attempt}"
    name = job_name + suffix
    if len(name) <= MAX_NAME:
        return name
    digest = _digest(job_name)
    head = job_name[: MAX_NAME - len(suffix) - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}{suffix}"


def label_value(value: str) -> str:
    """A label value (≤ 63 characters, alphanumeric at both ends); long or odd values are cut and hashed."""
    if len(value) <= 63 and _LABEL_VALUE.match(value):
        return value
    cleaned = re.sub(r"[^-A-Za-z0-9_.]", "-", value)
    head = cleaned[: 63 - 9].strip("-_.")
    return f"{head}-{_digest(value)}" if head else _digest(value)


def job_location(job: JobView, controls: Controls, config: OperatorConfig) -> str:
    """``s3://bucket/prefix/namespace/job/uid/``: where the job is staged and its results land."""
    return config.s3.job_prefix(job.namespace, job.name, job.uid, controls.output_bucket, controls.output_prefix)


def input_uri(job: JobView, controls: Controls, config: OperatorConfig) -> str:
    return job_location(job, controls, config) + "input.json"


def runner_labels(job: JobView, attempt: int, gpu_class: str) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        "app.kubernetes.io/name": "img2img-runner",
        "app.kubernetes.io/component": "runner",
        LABEL_JOB: label_value(job.name),
        LABEL_JOB_UID: job.uid,
        LABEL_ATTEMPT: str(attempt),
        LABEL_GPU_CLASS: label_value(gpu_class),
    }


def _env(job: JobView, attempt: int, controls: Controls, config: OperatorConfig) -> list[dict[str, Any]]:
    runner, s3 = config.runner, config.s3
    ours: list[dict[str, Any]] = [
        {"name": "IMG2IMG_JOB_INPUT", "value": input_uri(job, controls, config)},
        {"name": "IMG2IMG_OUTPUT", "value": job_location(job, controls, config)},
    ]
    if runner.catalog_path:
        ours.append({"name": "IMG2IMG_CATALOG", "value": runner.catalog_path})
    ours += [
        {"name": "IMG2IMG_ALLOWED_S3", "value": json.dumps(s3.allowed_reads(job.namespace))},
        {"name": "IMG2IMG_ALLOWED_HOSTS", "value": json.dumps(list(runner.allowed_hosts))},
        {"name": "IMG2IMG_ATTEMPT", "value": str(attempt)},
    ]
    if runner.model_cache is not None:
        ours.append({"name": "IMG2IMG_MODEL_CACHE", "value": runner.model_cache.mount_path})
    if s3.presign_expiry_seconds:
        ours.append({"name": "IMG2IMG_PRESIGN_EXPIRY", "value": str(s3.presign_expiry_seconds)})
    if s3.endpoint:
        ours.append({"name": "AWS_ENDPOINT_URL", "value": s3.endpoint})
    if s3.region:
        ours.append({"name": "AWS_REGION", "value": s3.region})
    if s3.credentials_secret:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            ours.append({"name": key, "valueFrom": {"secretKeyRef": {"name": s3.credentials_secret, "key": key}}})
    if runner.hub_token_secret is not None:
        ref = runner.hub_token_secret
        ours.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    taken = {e["name"] for e in ours}
    extra = [{"name": k, "value": v} for k, v in sorted(runner.env.items()) if k not in taken]
    return extra + ours


def _resources(gpu_class: str, config: OperatorConfig) -> dict[str, Any]:
    """runner.resources with the GPU class's quantities laid over both requests and limits."""
    base = config.runner.resources
    requests = {k: v for k, v in base.requests.items()}
    limits = {k: v for k, v in base.limits.items()}
    for key, value in config.gpu_classes[gpu_class].resources.items():
        requests[key] = value
        limits[key] = value
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = {k: str(v) for k, v in requests.items()}
    if limits:
        out["limits"] = {k: str(v) for k, v in limits.items()}
    return out


def _volumes(config: OperatorConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    runner = config.runner
    tmp: dict[str, Any] = {}
    if runner.tmp_size_limit:
        tmp["sizeLimit"] = runner.tmp_size_limit
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": tmp}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": TMP_MOUNT}]
    cache = runner.model_cache
    if cache is not None:
        if cache.kind == "persistentVolumeClaim":
            source: dict[str, Any] = {
                "persistentVolumeClaim": {"claimName": cache.persistent_volume_claim, "readOnly": cache.read_only}
            }
        elif cache.kind == "hostPath":
            source = {"hostPath": {"path": cache.host_path, "type": "DirectoryOrCreate"}}
        else:
            source = {"emptyDir": {"sizeLimit": cache.size_limit} if cache.size_limit else {}}
        volumes.append({"name": "model-cache", **source})
        mounts.append({"name": "model-cache", "mountPath": cache.mount_path, "readOnly": cache.read_only})
    if runner.catalog_config_map and runner.catalog_path:
        directory, filename = posixpath.split(runner.catalog_path)
        volumes.append({
            "name": "catalog",
            "configMap": {"name": runner.catalog_config_map, "items": [{"key": runner.catalog_key, "path": filename}]},
        })
        mounts.append({"name": "catalog", "mountPath": directory or "/", "readOnly": True})
    return volumes, mounts


def build_runner_pod(job: JobView, attempt: int, controls: Controls, config: OperatorConfig) -> dict[str, Any]:
    """The manifest of attempt ``attempt`` (from 1) of ``job``; deterministic, so creating it twice is a 409."""
    runner = config.runner
    gpu = config.gpu_classes[controls.gpu_class]
    sc = runner.security_context
    volumes, mounts = _volumes(config)

    pod_security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": sc.run_as_user,
        "runAsGroup": sc.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if sc.fs_group is not None:
        pod_security["fsGroup"] = sc.fs_group

    container: dict[str, Any] = {
        "name": RUNNER_CONTAINER,
        "image": runner.image,
        "imagePullPolicy": runner.image_pull_policy,
        "command": list(runner.command),
        "env": _env(job, attempt, controls, config),
        "resources": _resources(controls.gpu_class, config),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": sc.read_only_root_filesystem,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if runner.args:
        container["args"] = list(runner.args)

    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": controls.timeout_seconds,
        "terminationGracePeriodSeconds": runner.termination_grace_period_seconds,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": volumes,
    }
    if runner.service_account_name:
        spec["serviceAccountName"] = runner.service_account_name
    if runner.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in runner.image_pull_secrets]
    if gpu.node_selector:
        spec["nodeSelector"] = dict(gpu.node_selector)
    if gpu.tolerations:
        spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in gpu.tolerations]
    if gpu.priority_class_name:
        spec["priorityClassName"] = gpu.priority_class_name

    labels = {**runner.pod_labels, **runner_labels(job, attempt, controls.gpu_class)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": runner_pod_name(job.name, attempt),
            "namespace": job.namespace,
            "labels": labels,
            "annotations": dict(runner.pod_annotations),
            "ownerReferences": [{
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "name": job.name,
                "uid": job.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }],
        },
        "spec": spec,
    }
