"""The pod of one warm runner of a pool, as a manifest dict (POOLS.md, "Runner pod"). Pure.

A runner is long-lived: it loads its pool's models, then asks the operator for work (``img2img-runner serve``,
protocol in ``img2img.api.protocol``). It lives in the runner namespace, runs under the "restricted" Pod Security
Standard with no API token, and holds no credentials to tenants' S3 areas: each assignment brings presigned URLs.
Its only secrets are its own runner token and, when the catalog reads models from S3, read access to the model
store (``runners.modelStoreSecret``).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import random
import re
import string
from collections.abc import Mapping
from typing import Any

from img2img.api.pool import POOL_API_VERSION, POOL_KIND
from img2img.api.protocol import (
    ENV_OPERATOR_URL,
    ENV_POOL,
    ENV_POOL_MODELS,
    ENV_RUNNER_NAME,
    ENV_RUNNER_TOKEN,
    runner_token,
    token_runner,
)

from img2img.api.termination import TERMINATION_LOG_PATH

from .config import OperatorConfig
from .pool_scaling import Pool
from .views import (LABEL_COMPONENT, LABEL_GPU_CLASS, LABEL_MANAGED_BY, LABEL_POOL, MANAGED_BY, RUNNER_COMPONENT,
                    RUNNER_CONTAINER)

MAX_NAME = 63  # pod names become host names: one DNS label
TMP_MOUNT = "/tmp"
RUNNER_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_COMPONENT}={RUNNER_COMPONENT}"  # every runner pod
SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
SUFFIX_LENGTH = 5

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def label_value(value: str) -> str:
    """A label value (≤ 63 characters, alphanumeric at both ends); long or odd values are cut and hashed."""
    if len(value) <= 63 and _LABEL_VALUE.match(value):
        return value
    cleaned = re.sub(r"[^-A-Za-z0-9_.]", "-", value)
    head = cleaned[: 63 - 9].strip("-_.")
    return f"{head}-{_digest(value)}" if head else _digest(value)




def runner_name(pool: str, rng: random.Random) -> str:
    """``<pool>-<5 random [a-z0-9]>``, one DNS label (the pool's name cut when too long for that)."""
    suffix = "".join(rng.choice(SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))
    head = pool[: MAX_NAME - SUFFIX_LENGTH - 1].rstrip("-.")
    return f"{head}-{suffix}"


def pool_selector(pool: str) -> dict[str, str]:
    """The labels that select one pool's runner pods."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: RUNNER_COMPONENT, LABEL_POOL: label_value(pool)}


def pod_security_context(config: OperatorConfig) -> dict[str, Any]:
    sc = config.runner.security_context
    out: dict[str, Any] = {"runAsNonRoot": True, "runAsUser": sc.run_as_user, "runAsGroup": sc.run_as_group,
                           "seccompProfile": {"type": "RuntimeDefault"}}
    if sc.fs_group is not None:
        out["fsGroup"] = sc.fs_group
    return out


def container_security_context(config: OperatorConfig) -> dict[str, Any]:
    return {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "privileged": False,
            "readOnlyRootFilesystem": config.runner.security_context.read_only_root_filesystem,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def _env(pool: Pool, name: str, key: bytes, config: OperatorConfig) -> list[dict[str, Any]]:
    runner, s3 = config.runner, config.s3
    ours: list[dict[str, Any]] = [
        {"name": ENV_OPERATOR_URL, "value": config.runners.url},
        {"name": ENV_RUNNER_TOKEN, "value": runner_token(key, name)},
        {"name": ENV_RUNNER_NAME, "value": name},
        {"name": ENV_POOL, "value": pool.name},
        {"name": ENV_POOL_MODELS, "value": json.dumps(list(pool.models))},
        {"name": "IMG2IMG_ALLOWED_HOSTS", "value": json.dumps(list(runner.allowed_hosts))},
    ]
    if runner.catalog_path:
        ours.append({"name": "IMG2IMG_CATALOG", "value": runner.catalog_path})
    if runner.model_cache is not None:
        ours.append({"name": "IMG2IMG_MODEL_CACHE", "value": runner.model_cache.mount_path})
    # where S3 is, for catalogs that read models from it; credentials only for the model store
    if s3.endpoint:
        ours.append({"name": "AWS_ENDPOINT_URL", "value": s3.endpoint})
    if s3.region:
        ours.append({"name": "AWS_REGION", "value": s3.region})
    if config.runners.model_store_secret:
        for env_key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            ours.append({"name": env_key, "valueFrom": {"secretKeyRef": {
                "name": config.runners.model_store_secret, "key": env_key}}})
    if runner.hub_token_secret is not None:
        ref = runner.hub_token_secret
        ours.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    taken = {e["name"] for e in ours}
    return [{"name": k, "value": v} for k, v in sorted(runner.env.items()) if k not in taken] + ours


def _resources(gpu_class: str, config: OperatorConfig) -> dict[str, Any]:
    """runner.resources with the GPU class's quantities laid over both requests and limits. A runner always has a
    memory limit: without one configured, its memory request (a runner that outgrows it is killed, not its
    node's other pods)."""
    base = config.runner.resources
    requests = {k: v for k, v in base.requests.items()}
    limits = {k: v for k, v in base.limits.items()}
    for key, value in config.gpu_classes[gpu_class].resources.items():
        requests[key] = value
        limits[key] = value
    if "memory" in requests:
        limits.setdefault("memory", requests["memory"])
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


def build_pool_runner_pod(pool: Pool, name: str, key: bytes, config: OperatorConfig) -> dict[str, Any]:
    """The manifest of runner ``name`` (from ``runner_name``) of ``pool``; ``key`` signs its runner token."""
    runner = config.runner
    gpu = config.gpu_classes[pool.gpu_class]
    volumes, mounts = _volumes(config)
    container: dict[str, Any] = {
        "name": RUNNER_CONTAINER,
        "image": runner.image,
        "imagePullPolicy": runner.image_pull_policy,
        "command": list(runner.command),
        "args": ["serve", *runner.args],
        "env": _env(pool, name, key, config),
        "resources": _resources(pool.gpu_class, config),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(config),
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",  # a crashed runner is replaced, not restarted
        "terminationGracePeriodSeconds": runner.termination_grace_period_seconds,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(config),
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

    metadata: dict[str, Any] = {
        "name": name,
        "namespace": config.runners.namespace,
        "labels": {**runner.pod_labels, "app.kubernetes.io/name": "img2img-runner", **pool_selector(pool.name),
                   LABEL_GPU_CLASS: label_value(pool.gpu_class)},
        "annotations": dict(runner.pod_annotations),
    }
    if pool.uid:  # a RunnerPool's runners go with it; an implicit pool has no object to own them
        # no blockOwnerDeletion: it would need rights on runnerpools/finalizers, and nothing waits on runners
        metadata["ownerReferences"] = [{"apiVersion": POOL_API_VERSION, "kind": POOL_KIND, "name": pool.name,
                                        "uid": pool.uid, "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def made_by_operator(body: Mapping[str, Any], key: bytes) -> bool:
    """Whether pod ``body`` is a runner this operator made: its runner container carries the token ``key`` signs for
    the pod's own name. Labels say nothing (anyone who may create pods can copy them), and neither does a token
    copied from another runner: it names that runner, not this pod."""
    name = (body.get("metadata") or {}).get("name")
    for container in (body.get("spec") or {}).get("containers") or []:
        if container.get("name") == RUNNER_CONTAINER:
            token = next((e.get("value") for e in container.get("env") or [] if e.get("name") == ENV_RUNNER_TOKEN),
                         None)
            return bool(name) and isinstance(token, str) and token_runner(key, token) == name
    return False
