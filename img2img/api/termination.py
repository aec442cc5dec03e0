"""The runner's report of a job's outcome: its termination message (docs/architecture.md, "Operator → runner").

The runner writes it to ``/dev/termination-log`` (the pod's ``terminationMessagePath``) before it exits; the kubelet
copies it into the container's status, where the operator reads it::

    {"result": "s3://…/result.json", "startedAt": 1732467600000, "modelsLoadedAt": 1732467601000,
     "finishedAt": 1732467605000, "modelLoadTime": 1000, "inferenceTime": 3500, "uploadTime": 500,
     "error": null | {"code": "BAD_INPUT", "field": "input.payload.steps", "message": "…"}}

Times are ms since the epoch (``…At``) or ms (``…Time``), from the runner's clock. ``error.code`` names the
``ExitCode`` the runner exits with. With ``terminationMessagePolicy: FallbackToLogsOnError`` a runner that died before
writing the message leaves the tail of its log instead: ``parse`` returns None for that text.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator

from img2img.api.exitcodes import ExitCode

TERMINATION_LOG_PATH = "/dev/termination-log"  # Kubernetes' default terminationMessagePath
MAX_MESSAGE_BYTES = 4096  # the kubelet keeps at most this much of a termination message
_CUT_MARK = "…"


class RunnerFailure(BaseModel):
    """Why the job failed: the exit code (by name in JSON), the job field it is about, and the reason."""

    model_config = ConfigDict(extra="ignore")

    code: ExitCode
    field: str | None = None  # a path in the job as the user wrote it: input.payload.steps
    message: str = ""

    @field_validator("code", mode="before")
    @classmethod
    def _code_by_name(cls, value: Any) -> Any:
        return ExitCode[value] if isinstance(value, str) and value in ExitCode.__members__ else value

    @field_serializer("code")
    def _code_name(self, code: ExitCode) -> str:
        return code.name

    def __str__(self) -> str:
        text = self.message or self.code.name
        return f"{self.field}: {text}" if self.field and self.field not in text else text


class TerminationMessage(BaseModel):
    """What the runner reports when it ends; every field optional, so a runner that failed early reports what it has."""

    # a newer runner may add fields
    model_config = ConfigDict(extra="ignore")

    result: str | None = None  # s3:// URI (or local path) of result.json
    startedAt: int | None = Field(None, ge=0)
    modelsLoadedAt: int | None = Field(None, ge=0)
    finishedAt: int | None = Field(None, ge=0)
    modelLoadTime: int | None = Field(None, ge=0)
    inferenceTime: int | None = Field(None, ge=0)
    uploadTime: int | None = Field(None, ge=0)
    error: RunnerFailure | None = None

    def dump(self) -> str:
        """The message as JSON, at most MAX_MESSAGE_BYTES: an error text too long for that keeps its head, cut where
        the rest would not fit, the cut marked with "…" (the other fields are short by nature)."""
        text = self.model_dump_json()
        if len(text.encode()) <= MAX_MESSAGE_BYTES or self.error is None:
            return text
        message = self.error.message

        def cut(keep: int) -> str:
            error = self.error.model_copy(update={"message": message[:keep] + _CUT_MARK})
            return self.model_copy(update={"error": error}).model_dump_json()

        # the longest head that fits: JSON escapes make a character 1 to 6 bytes, so search rather than count
        low, high = 0, len(message) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if len(cut(middle).encode()) <= MAX_MESSAGE_BYTES:
                low = middle
            else:
                high = middle - 1
        return cut(low)

    @classmethod
    def parse(cls, text: str | None) -> TerminationMessage | None:
        """The runner's message as the kubelet kept it; None when there is none or the text is not one (a log tail).

        A field that does not fit (a runner of another version wrote it otherwise) is left out, not fatal.
        """
        try:
            data = json.loads(text or "")
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            unusable = {err["loc"][0] for err in exc.errors()}
        return cls.model_validate({k: v for k, v in data.items() if k not in unusable})
