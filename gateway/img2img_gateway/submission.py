"""A RunPod request body -> the Img2ImgJob to create (pure, apart from the images set aside for S3).

The body is what RunPod's ``/run`` takes: ``input`` (the A1111 envelope, validated as ``img2img validate`` does,
every problem with its field path), ``webhook`` and ``policy`` (the job's controls, ``RunPodRequest.job_controls``),
``s3Config`` (the caller's bucket, which results are copied to as well) and, ours, ``outputMode`` (how answers carry
the images: ``base64``, ``s3`` or ``presigned``; default: the endpoint's). Large inline images are set aside for
S3 exactly as ``img2img submit`` does (``img2img.client.request.prepare_data``).

The job gets the endpoint's job defaults for the controls the request leaves out, the endpoint's label, its output
mode as an annotation (so that its webhook, which the operator sends, carries the images as its ``/status`` does),
and the submission time in ms (the operator measures ``delayTime`` from it, as RunPod does from the request).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationError

from img2img import API_GROUP
from img2img.api.addresses import url_refusal
from img2img.api.answer import JOB_ID_LABEL, OUTPUT_MODE_ANNOTATION, OutputMode
from img2img.api.base import ApiModel
from img2img.api.errors import Problem, problems
from img2img.api.images import S3_BUCKET_PATTERN
from img2img.client.request import Prepared, prepare_data
from img2img.client.submit import SUBMITTED_AT
from img2img_gateway.config import Endpoint

ENDPOINT_LABEL = f"{API_GROUP}/endpoint"
GATEWAY_KEYS = ("s3Config", "outputMode")  # body keys the gateway acts on itself; the rest is a RunPod request
MANIFEST_KEYS = ("apiVersion", "kind", "spec", "metadata")


class BadRequest(Exception):
    """A request that cannot become a job: every problem, each with its field path."""

    def __init__(self, found: list[Problem]):
        super().__init__("; ".join(str(p) for p in found))
        self.problems = found


class S3Config(ApiModel):
    """RunPod's ``s3Config``: the caller's bucket and credentials (``runpod.serverless.utils.rp_upload`` names)."""

    accessId: str = Field(..., min_length=1, max_length=256)
    accessSecret: str = Field(..., min_length=1, max_length=256)
    bucketName: str = Field(..., pattern=S3_BUCKET_PATTERN)
    endpointUrl: str = Field(..., min_length=1, max_length=2048, pattern=r"^https?://")
    objectPath: str | None = Field(None, max_length=512, description="key prefix for the copies")


@dataclass
class Submission:
    prepared: Prepared  # the request, its large images still to upload (``prepared.uploads``)
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]  # without the submission time: stamped when the job is created
    defaults: dict[str, Any]
    output_mode: OutputMode  # the request's, else the endpoint's
    s3_config: S3Config | None

    def manifest(self, submitted_ms: int) -> dict[str, Any]:
        """The job to create, once the uploads are done (their fields then hold s3:// references)."""
        manifest = self.prepared.manifest(None, self.namespace)
        metadata = manifest["metadata"]
        metadata["labels"] = {**(metadata.get("labels") or {}), **self.labels}
        metadata["annotations"] = {**(metadata.get("annotations") or {}), **self.annotations,
                                   SUBMITTED_AT: str(submitted_ms)}
        manifest["spec"] = {**self.defaults, **manifest["spec"]}  # the request's own controls win
        return manifest


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as an object; BadRequest when it is not JSON or not an object."""
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest([Problem("", f"the body is not valid JSON ({exc})")]) from None
    if not isinstance(body, dict) or any(k in body for k in MANIFEST_KEYS) or "input" not in body:
        raise BadRequest([Problem("input", "is required: the body is a RunPod request {\"input\": {\"api\": …, "
                                           "\"payload\": …}}")])
    return body


def get_endpoint_of(body: dict[str, Any]) -> str | None:
    """The A1111 endpoint a ``GET`` request asks for (the discovery calls), None for a job."""
    from img2img.api.envelope import normalize_endpoint

    api = body["input"].get("api") if isinstance(body["input"], dict) else None
    if isinstance(api, dict) and isinstance(api.get("method"), str) and api["method"].upper() == "GET":
        return normalize_endpoint(str(api.get("endpoint") or ""))
    return None


def build_submission(body: dict[str, Any], endpoint_id: str, endpoint: Endpoint, bucket: str,
                     allow_private: bool = False) -> Submission:
    """Validate a request for an endpoint; BadRequest with every problem when it cannot run. ``allow_private``:
    an ``s3Config`` and a ``webhook`` may name a plain-http or private address (otherwise the image fetches' address
    rule holds)."""
    from img2img.api.job import JobProblems

    found: list[Problem] = []
    output_mode = s3_config = None
    if "outputMode" in body:
        try:
            output_mode = OutputMode(body["outputMode"])
        except ValueError:
            found.append(Problem("outputMode", f"must be one of {', '.join(m.value for m in OutputMode)}"))
    if "s3Config" in body:
        try:
            s3_config = S3Config.model_validate(body["s3Config"])
        except ValidationError as exc:
            found += problems(exc, "s3Config")
        why = None if s3_config is None else url_refusal(s3_config.endpointUrl, allow_private)
        if why:
            found.append(Problem("s3Config.endpointUrl", f"{s3_config.endpointUrl[:80]!r} {why}"))
    request = {k: v for k, v in body.items() if k not in GATEWAY_KEYS}
    try:
        prepared = prepare_data(request, bucket, allow_private)
    except JobProblems as exc:
        found += exc.problems
    if found:
        raise BadRequest(found)
    output_mode = output_mode or endpoint.output
    return Submission(prepared, endpoint.namespace, {ENDPOINT_LABEL: endpoint_id},
                      {OUTPUT_MODE_ANNOTATION: output_mode.value}, endpoint.defaults(), output_mode, s3_config)


def retry_manifest(job: dict[str, Any], job_id: str, submitted_ms: int) -> dict[str, Any]:
    """A new job doing what ``job`` did, answering to its id (RunPod's ``/retry`` keeps the id)."""
    metadata = job["metadata"]
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items() if k.startswith(f"{API_GROUP}/")}
    spec = {k: v for k, v in job["spec"].items() if k != "cancel"}
    return {"apiVersion": job["apiVersion"], "kind": job["kind"],
            "metadata": {"generateName": f"{metadata['name'].rsplit('-retry', 1)[0][:200]}-retry-",
                         "namespace": metadata["namespace"],
                         "labels": {**(metadata.get("labels") or {}), JOB_ID_LABEL: job_id},
                         "annotations": {**annotations, SUBMITTED_AT: str(submitted_ms)}},
            "spec": spec}
