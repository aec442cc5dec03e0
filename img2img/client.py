"""`img2img submit | status | fetch`: the user's side of a job on a cluster (any kube context, any S3).

Submitting offloads large inline images to S3 first, so a job never approaches etcd's object size limit, and stamps
the submission time with millisecond precision (creationTimestamp only has seconds).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from img2img import API_GROUP, API_VERSION, PLURAL

SUBMITTED_AT = f"{API_GROUP}/submitted-at"
# Inline images above this many base64 characters go to S3 before the job is created.
OFFLOAD_ABOVE_CHARS = 256 * 1024
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
RUNPOD_FIELDS = ("id", "status", "delayTime", "executionTime", "output", "error")


def runpod_view(status: dict) -> dict:
    """The part of `.status` a RunPod client reads, in RunPod's key order."""
    return {k: status[k] for k in RUNPOD_FIELDS if status.get(k) is not None}


def _kube():
    from kubernetes import client, config

    try:
        config.load_kube_config()
        _, context = config.list_kube_config_contexts()
        namespace = context.get("context", {}).get("namespace") or "default"
    except config.ConfigException:
        config.load_incluster_config()
        namespace = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
    return client.CustomObjectsApi(), namespace


def _s3():
    import boto3

    return boto3.client("s3")


def image_slots(payload: dict) -> Iterator[tuple[Any, Any, str]]:
    """Every place a payload carries an image: (container, key, user-facing path)."""
    for i, _ in enumerate(payload.get("init_images") or []):
        yield payload["init_images"], i, f"input.payload.init_images[{i}]"
    units = ((payload.get("alwayson_scripts") or {}).get("controlnet") or {}).get("args") or []
    for j, unit in enumerate(units):
        if isinstance(unit, dict):
            for key in ("image", "input_image"):
                if isinstance(unit.get(key), str):
                    yield unit, key, f"input.payload.alwayson_scripts.controlnet.args[{j}].{key}"


def offload_large_images(payload: dict, namespace: str, bucket: str, s3=None) -> list[str]:
    """Upload inline images over OFFLOAD_ABOVE_CHARS to s3://bucket/uploads/<namespace>/ and reference them instead."""
    from img2img.api.images import is_inline, strip_data_uri

    moved = []
    for container, key, path in image_slots(payload):
        value = container[key]
        if not (isinstance(value, str) and is_inline(value) and len(value) > OFFLOAD_ABOVE_CHARS):
            continue
        s3 = s3 or _s3()
        object_key = f"uploads/{namespace}/{uuid.uuid4().hex}.img"
        s3.put_object(Bucket=bucket, Key=object_key, Body=base64.b64decode(strip_data_uri(value)))
        container[key] = f"s3://{bucket}/{object_key}"
        moved.append(path)
    return moved


def load_manifest(path: str, name: str | None, namespace: str) -> dict:
    from img2img.api.convert import to_manifest

    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return to_manifest(text, name=name, namespace=namespace)


def submit_command(path: str, *, name: str | None, namespace: str | None, wait: bool, timeout: float) -> int:
    from img2img.api.errors import problems
    from pydantic import ValidationError

    api, default_namespace = _kube()
    namespace = namespace or default_namespace
    try:
        manifest = load_manifest(path, name, namespace)
    except ValidationError as exc:
        for problem in problems(exc):
            print(f"{problem.path}: {problem.reason}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"img2img submit: {exc}", file=sys.stderr)
        return 1
    bucket = os.environ.get("IMG2IMG_BUCKET")
    payload = manifest["spec"]["input"]["payload"]
    if bucket:
        for moved in offload_large_images(payload, namespace, bucket):
            print(f"{moved}: uploaded to S3 (large inline image)", file=sys.stderr)
    manifest["metadata"].setdefault("annotations", {})[SUBMITTED_AT] = str(int(time.time() * 1000))
    created = api.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, manifest)
    job = created["metadata"]["name"]
    print(f"img2imgjob.{API_GROUP}/{job} created in {namespace}", file=sys.stderr)
    if not wait:
        print(json.dumps({"id": created["metadata"]["uid"], "status": "IN_QUEUE", "name": job}))
        return 0
    return _wait(api, namespace, job, timeout)


def _wait(api, namespace: str, job: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        status = api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, job).get("status") or {}
        state = status.get("status")
        if state != last:
            position = f" (queue position {status['queuePosition']})" if status.get("queuePosition") else ""
            print(f"{job}: {state or 'submitted'}{position}", file=sys.stderr)
            last = state
        if state in TERMINAL:
            print(json.dumps(runpod_view(status), indent=2))
            return 0 if state == "COMPLETED" else 1
        time.sleep(0.5)
    print(f"{job}: still {last} after {timeout:.0f} s", file=sys.stderr)
    return 1


def status_command(name: str, *, namespace: str | None) -> int:
    api, default_namespace = _kube()
    job = api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace or default_namespace, PLURAL, name)
    print(json.dumps(runpod_view(job.get("status") or {}), indent=2))
    return 0


def fetch_command(name: str, output: Path, *, namespace: str | None) -> int:
    api, default_namespace = _kube()
    job = api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace or default_namespace, PLURAL, name)
    images = ((job.get("status") or {}).get("output") or {}).get("images") or []
    if not images:
        print(f"{name}: no images yet (status {(job.get('status') or {}).get('status')})", file=sys.stderr)
        return 1
    output.mkdir(parents=True, exist_ok=True)
    s3 = _s3()
    for uri in images:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        target = output / Path(key).name
        s3.download_file(bucket, key, str(target))
        print(target)
    return 0
