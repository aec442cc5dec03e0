"""What the runner reports: its termination message and its result.json (docs/architecture.md). Pure parsing.

Termination message (``/dev/termination-log``, < 4 KiB)::

    {"result": "s3://…/result.json", "startedAt": 1732467600000, "modelsLoadedAt": 1732467601000,
     "finishedAt": 1732467605000, "modelLoadTime": 1000, "inferenceTime": 3500, "uploadTime": 500,
     "error": null | {"code": "BAD_INPUT", "field": "input.payload.steps", "message": "…"}}

With ``terminationMessagePolicy: FallbackToLogsOnError`` a runner that died before writing it leaves the tail of
its log instead; that text is kept (shortened) for the job's error message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_MESSAGE = 1024  # how much of a runner's own words goes into status.error / lastFailure.message


@dataclass(frozen=True)
class RunnerError:
    code: str | None = None
    field: str | None = None
    message: str | None = None

    def __str__(self) -> str:
        text = self.message or self.code or "runner error"
        if self.field and self.field not in text:
            text = f"{self.field}: {text}"
        return text


@dataclass(frozen=True)
class RunnerReport:
    result: str | None = None
    started_at: int | None = None
    models_loaded_at: int | None = None
    finished_at: int | None = None
    model_load_time: int | None = None
    inference_time: int | None = None
    upload_time: int | None = None
    error: RunnerError | None = None
    raw: str | None = None  # the message as written when it is not the JSON report (a log tail)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value)
    return None


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    return "…" + text[-(limit - 1):]  # a log tail: the end is what matters


def parse_termination_message(message: str | None) -> RunnerReport | None:
    """The runner's report, or a report with only ``raw`` set for a log tail; None when there is no message."""
    if not message or not message.strip():
        return None
    try:
        data = json.loads(message)
    except ValueError:
        return RunnerReport(raw=shorten(message))
    if not isinstance(data, Mapping):
        return RunnerReport(raw=shorten(message))
    error = data.get("error")
    runner_error = None
    if isinstance(error, Mapping):
        runner_error = RunnerError(
            code=str(error["code"]) if error.get("code") is not None else None,
            field=str(error["field"]) if error.get("field") is not None else None,
            message=shorten(str(error["message"])) if error.get("message") is not None else None,
        )
    elif isinstance(error, str) and error:
        runner_error = RunnerError(message=shorten(error))
    result = data.get("result")
    return RunnerReport(
        result=result if isinstance(result, str) and result else None,
        started_at=_int(data.get("startedAt")),
        models_loaded_at=_int(data.get("modelsLoadedAt")),
        finished_at=_int(data.get("finishedAt")),
        model_load_time=_int(data.get("modelLoadTime")),
        inference_time=_int(data.get("inferenceTime")),
        upload_time=_int(data.get("uploadTime")),
        error=runner_error,
    )


@dataclass(frozen=True)
class RunnerResult:
    """result.json as read from S3 by the dispatcher; ``problem`` says why it could not be used."""

    uri: str
    data: Mapping[str, Any] | None = None
    problem: str | None = None

    @property
    def output(self) -> dict[str, Any]:
        data = self.data or {}
        return {
            "images": list(data.get("images") or []),
            "info": data.get("info") if isinstance(data.get("info"), str) else json.dumps(data.get("info") or {}),
            "parameters": dict(data.get("parameters") or {}),
            **self._presigned(data),
        }

    @staticmethod
    def _presigned(data: Mapping[str, Any]) -> dict[str, Any]:
        """The runner's presigned URLs, when it signed one for each image."""
        urls, images = data.get("presigned"), data.get("images") or []
        if not (isinstance(urls, list) and len(urls) == len(images) and all(isinstance(u, str) for u in urls)):
            return {}
        return {"presigned": urls, "presignedExpiresAt": data.get("presignedExpiresAt")}


def check_result(uri: str, raw: bytes | None) -> RunnerResult:
    """Parse result.json bytes (None = the object does not exist)."""
    if raw is None:
        return RunnerResult(uri, problem=f"{uri} does not exist")
    try:
        data = json.loads(raw)
    except ValueError as e:
        return RunnerResult(uri, problem=f"{uri} is not valid JSON: {e}")
    if not isinstance(data, Mapping) or not isinstance(data.get("images"), list):
        return RunnerResult(uri, problem=f"{uri} has no list of images")
    return RunnerResult(uri, data=data)
