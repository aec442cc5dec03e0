"""A job's status -> the answer RunPod's ``/status`` gives (pure).

The answer is the RunPod part of ``.status`` (``img2img.client.view.runpod_view``: id, status, delayTime,
executionTime, output, error) with the job's gateway id, and an ``output`` as RunPod's A1111 workers return it:
``images`` (base64 by default, PNG unless the job's ``samples_format`` says otherwise, in A1111's order; or the
s3:// URIs, or presigned URLs), ``info`` and ``parameters``. Which images to put there is read from S3 by the caller
(``images_wanted`` says which).
"""

from __future__ import annotations

from typing import Any

from img2img.client.view import runpod_view
from img2img_gateway.config import OutputMode
from img2img_gateway.submission import JOB_ID_LABEL, OUTPUT_MODE_ANNOTATION

OUTPUT_KEYS = ("images", "info", "parameters")


def job_id(job: dict[str, Any]) -> str:
    """The id RunPod clients use for a job: its uid (``status.id``), or, for a job made by ``/retry``, the id of the
    job it retries."""
    metadata = job["metadata"]
    return (metadata.get("labels") or {}).get(JOB_ID_LABEL) or metadata["uid"]


def output_mode(job: dict[str, Any], default: OutputMode) -> OutputMode:
    """The request's choice (an annotation), else the endpoint's."""
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
    return view


def short_answer(job: dict[str, Any], state: str | None = None) -> dict[str, Any]:
    """``{"id", "status"}``: what ``/run``, ``/cancel`` and ``/retry`` answer."""
    return {"id": job_id(job), "status": state or (job.get("status") or {}).get("status") or "IN_QUEUE"}
