"""A job -> the object RunPod's ``/status`` answers for it (pure): what the gateway answers, the CLI prints and the
operator's webhooks POST.

The answer is the RunPod part of ``.status`` (id, status, delayTime, executionTime, output, error) under the job's
RunPod id, with an ``output`` as RunPod's A1111 workers return it: ``images``, ``info`` and ``parameters``. The
images are the status's s3:// URIs, or what the job's output mode asks (``output_images``): base64 (PNG unless the
job's ``samples_format`` says otherwise), as RunPod's A1111 workers return them, or presigned https URLs. The
gateway records each request's mode on its job (the annotation ``img2img.dev/output-mode``); a job without it
(kubectl, ``img2img submit``) answers the s3:// URIs where the gateway does not decide for it (its endpoint's
``output``).

When the job's status could not hold the whole answer (``output.omitted``: the operator bounds the status), the
answer says so beside ``output``, whose shape stays RunPod's: ``outputOmitted: {"fields": [...], "result":
"s3://…/result.json"}`` names what is missing and where the whole answer is. RunPod clients ignore keys they do not
know; one that needs ``output.info`` finds it absent, never empty.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable
from typing import Any

from img2img import API_GROUP

RUNPOD_FIELDS = ("id", "status", "delayTime", "executionTime", "output", "error")
OUTPUT_KEYS = ("images", "info", "parameters")
# a job made by the gateway's /retry answers to the id of the job it retries
JOB_ID_LABEL = f"{API_GROUP}/job-id"
OUTPUT_MODE_ANNOTATION = f"{API_GROUP}/output-mode"


class OutputMode(str, enum.Enum):
    """How an answer carries the images: base64 (as RunPod's A1111 workers), the s3:// URIs of the job's
    status, or presigned https URLs of them."""

    BASE64 = "base64"
    S3 = "s3"
    PRESIGNED = "presigned"


def runpod_view(status: dict, uid: str | None = None) -> dict:
    """The part of ``.status`` a RunPod client reads, in RunPod's key order.

    A job the operator has not written yet is IN_QUEUE with the resource's uid as id, as RunPod answers ``/status``
    right after ``/run``.
    """
    defaults = {"id": uid, "status": "IN_QUEUE"}
    view = {}
    for key in RUNPOD_FIELDS:
        value = status.get(key)
        value = defaults.get(key) if value is None else value
        if value is not None:
            view[key] = value
    return view


def job_id(job: dict[str, Any]) -> str:
    """The id RunPod clients use for a job: its uid (``status.id``), or, for a job made by ``/retry``, the id of the
    job it retries."""
    metadata = job["metadata"]
    return (metadata.get("labels") or {}).get(JOB_ID_LABEL) or metadata["uid"]


def output_mode(job: dict[str, Any], default: OutputMode) -> OutputMode:
    """The mode recorded on the job (an annotation), else ``default``."""
    chosen = (job["metadata"].get("annotations") or {}).get(OUTPUT_MODE_ANNOTATION)
    try:
        return OutputMode(chosen) if chosen else default
    except ValueError:
        return default


def images_wanted(job: dict[str, Any]) -> list[str]:
    """The s3:// URIs of the job's output images, in A1111's order (empty until it COMPLETED)."""
    status = job.get("status") or {}
    if status.get("status") != "COMPLETED":
        return []
    return list((status.get("output") or {}).get("images") or [])


def output_images(uris: list[str], mode: OutputMode, read: Callable[[str], bytes],
                  presign: Callable[[str], str]) -> list[str]:
    """The images as an answer in ``mode`` carries them: ``read`` gives an s3:// URI's bytes, ``presign`` its
    https URL (both blocking: call this in a worker thread)."""
    if mode is OutputMode.S3:
        return list(uris)
    if mode is OutputMode.PRESIGNED:
        return [presign(uri) for uri in uris]
    return [base64.b64encode(read(uri)).decode() for uri in uris]


def answer(job: dict[str, Any], images: list[str] | None = None) -> dict[str, Any]:
    """The RunPod answer for a job; ``images`` replace the output's s3:// URIs (base64 data or URLs)."""
    view = runpod_view(job.get("status") or {}, job["metadata"].get("uid"))
    view["id"] = job_id(job)
    output = view.get("output")
    if isinstance(output, dict):
        shaped = {k: output[k] for k in OUTPUT_KEYS if k in output}
        if images is not None:
            shaped["images"] = images
        view["output"] = shaped
        if output.get("omitted"):
            view["outputOmitted"] = {"fields": list(output["omitted"]),
                                     "result": (job.get("status") or {}).get("result")}
    return view
