"""`img2img submit`: validate offline, offload large images to S3, create the Img2ImgJob, optionally wait."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any

from img2img import API_GROUP
from img2img.client.errors import ClientError, fail
from img2img.client.kube import current_cluster
from img2img.client.offload import upload
from img2img.client.request import BUCKET_ENV, prepare, read_text
from img2img.client.view import out
from img2img.client.wait import wait_for
from img2img.kube import job_path

SUBMITTED_AT = f"{API_GROUP}/submitted-at"
FIELD_MANAGER = "img2img-cli"


def submit_command(path: str, *, name: str | None, namespace: str | None, wait: bool, timeout: float) -> int:
    from img2img.api.job import GENERATE_NAME, JobProblems

    try:
        bucket = bucket_from_env()
        try:
            prepared = prepare(read_text(path), path, bucket)
        except JobProblems as exc:
            return _problems(path, exc)
        cluster = current_cluster()
        namespace = target_namespace(prepared.data, namespace, cluster.namespace)
        for field in prepared.inline_kept:
            print(f"{field}: large inline image kept in the job ({BUCKET_ENV} is not set, so it is not offloaded "
                  "to S3)", file=sys.stderr)
        for line in upload(prepared.uploads, bucket, namespace) if prepared.uploads else ():
            print(line, file=sys.stderr)
        try:
            manifest = prepared.manifest(name, namespace)
        except JobProblems as exc:  # not expected: the request was validated with placeholders for the uploads
            return _problems(path, exc)
        metadata = manifest["metadata"]
        if not metadata.get("name") and not metadata.get("generateName"):
            metadata["generateName"] = GENERATE_NAME
        # stamped last, just before the create: the operator measures the job's delay from it
        metadata["annotations"] = {**(metadata.get("annotations") or {}), SUBMITTED_AT: str(int(time.time() * 1000))}
        created = cluster.call(f"create {metadata.get('name') or 'job'} in namespace {namespace}", "POST",
                               job_path(namespace), body=manifest,
                               query={"fieldManager": FIELD_MANAGER, "fieldValidation": "Strict"})
        job, uid = created["metadata"]["name"], created["metadata"]["uid"]
        print(f"img2imgjob.{API_GROUP}/{job} created in namespace {namespace}", file=sys.stderr)
        if not wait:
            out(json.dumps({"id": uid, "status": "IN_QUEUE", "name": job, "namespace": namespace}))
            return 0
        return wait_for(cluster, namespace, job, timeout)
    except ClientError as exc:
        return fail("submit", exc)


def _problems(path: str, exc) -> int:
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    print(f"img2img submit: {path}: {len(exc.problems)} problem(s); nothing submitted", file=sys.stderr)
    return 1


def bucket_from_env() -> str | None:
    """``$IMG2IMG_BUCKET``, checked; None when unset."""
    from img2img.api.images import S3_BUCKET_PATTERN

    bucket = os.environ.get(BUCKET_ENV, "").strip() or None
    if bucket and not re.match(S3_BUCKET_PATTERN, bucket):
        raise ClientError(f"{BUCKET_ENV}={bucket!r} is not a valid S3 bucket name")
    return bucket


def target_namespace(data: Any, flag: str | None, default: str) -> str:
    """``-n``, else the manifest's namespace, else the context's; a manifest and ``-n`` that disagree are refused."""
    meta = data.get("metadata") if isinstance(data, dict) else None
    own = meta.get("namespace") if isinstance(meta, dict) else None
    if flag and own and flag != own:
        raise ClientError(f"the manifest's namespace {own!r} does not match -n {flag!r}")
    return flag or own or default
