"""What ``/run``, ``/cancel`` and ``/retry`` answer (pure); ``/status`` answers ``img2img.api.answer.answer``."""

from __future__ import annotations

from typing import Any

from img2img.api.answer import job_id


def short_answer(job: dict[str, Any], state: str | None = None) -> dict[str, Any]:
    """``{"id", "status"}``: what ``/run``, ``/cancel`` and ``/retry`` answer."""
    return {"id": job_id(job), "status": state or (job.get("status") or {}).get("status") or "IN_QUEUE"}
