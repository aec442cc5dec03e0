"""``Img2ImgJob.status``: RunPod's job response plus Kubernetes conventions (docs/architecture.md, "The resource").

Field names are camelCase exactly as RunPod and Kubernetes spell them, so ``kubectl get i2i NAME -o
jsonpath='{.status}'`` reads as a RunPod ``/status`` answer. Times are integers in milliseconds; instants are
RFC 3339 strings with milliseconds (``2026-01-01T00:00:05.123Z``).
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from img2img.api.errors import refuse
from img2img.api.times import parse_rfc3339


class JobState(str, enum.Enum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


# RunPod clients stop polling at these (runpod-sdk JobStatus::is_final)
TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT})

# kstatus condition types (GitOps tools read them)
READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"

MAX_OUTPUT_IMAGES = 1024  # batch_size (8) x n_iter (100) + a detect map per ControlNet unit, with room
URI_MAX = 2048
MESSAGE_MAX = 32768


def _instant(value: str | None) -> str | None:
    try:
        valid = value is None or parse_rfc3339(value) is not None  # "" is no instant either
    except ValueError:
        valid = False
    if not valid:
        raise refuse(f"{value!r} is not an RFC 3339 date-time")
    return value


Instant = Field(None, max_length=64, json_schema_extra={"format": "date-time"})


class StatusModel(BaseModel):
    # the status is written by our own operator; readers ignore fields a newer operator may add
    model_config = ConfigDict(extra="ignore")


class Output(StatusModel):
    """A1111's answer: images (S3 URIs, A1111's order: generated images, then detect maps), info, parameters."""

    images: list[Annotated[str, Field(max_length=URI_MAX)]] = Field(default_factory=list,
                                                                    max_length=MAX_OUTPUT_IMAGES)
    info: str = Field("", max_length=1_048_576, description="A1111's info JSON string")
    parameters: dict[str, Any] = Field(default_factory=dict, description="the effective request, A1111-shaped")
    presigned: list[Annotated[str, Field(max_length=URI_MAX)]] | None = Field(
        None, max_length=MAX_OUTPUT_IMAGES, description="HTTPS URLs of `images`, in their order, when the operator "
        "is configured to sign them (s3.presignExpirySeconds)")
    presignedExpiresAt: str | None = Instant


class Progress(StatusModel):
    """Where the runner is in the job: denoising step ``step`` of ``steps`` (refiner steps included)."""

    step: int = Field(..., ge=0)
    steps: int = Field(..., ge=0)


class LastFailure(StatusModel):
    reason: str = Field(..., max_length=256, description="e.g. BAD_INPUT, OOMKilled, Evicted")
    exitCode: int | None = Field(None, ge=-1024, le=1024)
    message: str = Field("", max_length=MESSAGE_MAX)


class WebhookDelivery(StatusModel):
    """The POST of the job's RunPod status to ``spec.webhook`` once it ended (the operator's ``webhooks``)."""

    delivered: bool = Field(False, description="the receiver answered 2xx")
    gaveUp: bool | None = Field(None, description="true: no more attempts (refused address, a 4xx, or the last "
                                "attempt failed)")
    attempts: int = Field(0, ge=0, description="POSTs made")
    lastStatusCode: int | None = Field(None, ge=100, le=599, description="the last attempt's HTTP status")
    lastError: str | None = Field(None, max_length=1024, description="why the last attempt failed")
    lastAttemptAt: str | None = Instant
    nextAttemptAt: str | None = Instant
    deliveredAt: str | None = Instant

    _check_times = field_validator("lastAttemptAt", "nextAttemptAt", "deliveredAt")(_instant)


class Condition(StatusModel):
    """metav1.Condition."""

    type: str = Field(..., max_length=316, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*"
                                                    r"[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?"
                                                    r"[A-Za-z0-9])$")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(..., min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field("", max_length=MESSAGE_MAX)
    lastTransitionTime: str = Field(..., max_length=64, json_schema_extra={"format": "date-time"})
    observedGeneration: int | None = Field(None, ge=0)

    _check_time = field_validator("lastTransitionTime")(_instant)


class JobStatus(StatusModel):
    id: str | None = Field(None, max_length=128, description="stable job id: the resource's uid")
    status: JobState | None = None
    delayTime: int | None = Field(None, ge=0, description="ms from submission to a runner starting the work "
                                  "(the time waiting for a runner)")
    executionTime: int | None = Field(None, ge=0, description="ms from the runner starting the work to its result "
                                      "uploaded (model loading included)")
    output: Output | None = None
    error: str | None = Field(None, max_length=MESSAGE_MAX, description="why the job FAILED or TIMED_OUT")
    queuePosition: int | None = Field(None, ge=0)
    attempts: int | None = Field(None, ge=0)
    runnerPod: str | None = Field(None, max_length=253)
    progress: Progress | None = Field(None, description="while IN_PROGRESS: the runner's step, updated at most "
                                      "once a second")
    submittedAt: str | None = Instant
    startedAt: str | None = Instant
    completedAt: str | None = Instant
    modelLoadTime: int | None = Field(None, ge=0, description="ms the runner spent loading models for this job "
                                      "(part of executionTime; 0 on a warm runner)")
    result: str | None = Field(None, max_length=URI_MAX, description="s3 URI of result.json")
    lastFailure: LastFailure | None = None
    webhook: WebhookDelivery | None = Field(None, description="the delivery of spec.webhook, once the job ended")
    conditions: list[Condition] = Field(default_factory=list, max_length=16, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    observedGeneration: int | None = Field(None, ge=0)

    _check_times = field_validator("submittedAt", "startedAt", "completedAt")(_instant)

    @property
    def terminal(self) -> bool:
        return self.status is not None and self.status.terminal

    def as_dict(self) -> dict[str, Any]:
        """The status as stored: RunPod-shaped, unset fields left out."""
        return self.model_dump(mode="json", exclude_none=True)
