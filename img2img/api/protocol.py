"""The runner ↔ operator protocol: runners pull work over HTTP; the operator is the only one that writes to Kubernetes.

Every call is a POST of JSON under ``RUNNER_API_PREFIX`` on the operator's runner endpoint
(``$IMG2IMG_OPERATOR_URL``), with ``Authorization: Bearer $IMG2IMG_RUNNER_TOKEN``. The token names the runner pod
and is signed with the operator's key, which only the operator holds: only runner pods the operator created (it puts
the token in their environment) can take jobs.

- ``take`` (long poll): the runner says which models it holds; the answer is an ``Assignment`` (200) or nothing
  (204) when ``waitSeconds`` pass without work. Before answering, the operator has recorded the assignment in the
  job's status (``attempts``, ``runnerPod``) under an optimistic lock, so a job is never handed out twice.
- ``heartbeat``: at least every ``heartbeatSeconds`` while working, with progress (step k of n). The answer renews
  the lease or says ``stop`` (the job was cancelled, ran past its deadline, or the lease was lost): the runner
  interrupts at the next step and goes back to ``take``.
- ``done``: the outcome. Only the current lease holder's outcome counts (fencing): a late answer from a lost lease is
  refused with 409 and changes nothing. A runner that wants more work says which models it holds (``models``, as in
  ``take``): an accepted outcome is then answered with its next assignment when a job waits for it (recorded as a
  take records it), saving a take; without one (or from an operator that predates this), it takes as usual.

The runner holds no credentials to tenants' S3 areas: the assignment carries presigned URLs for exactly that
attempt's input and outputs, and for the ``s3://`` images the job refers to.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RUNNER_API_PREFIX = "/runner/v1"
TAKE, HEARTBEAT, DONE = (f"{RUNNER_API_PREFIX}/{verb}" for verb in ("take", "heartbeat", "done"))

# The runner pod's environment, set by the operator when it creates the pod.
ENV_OPERATOR_URL = "IMG2IMG_OPERATOR_URL"
ENV_RUNNER_TOKEN = "IMG2IMG_RUNNER_TOKEN"
ENV_RUNNER_NAME = "IMG2IMG_RUNNER_NAME"
ENV_POOL = "IMG2IMG_POOL"
ENV_POOL_MODELS = "IMG2IMG_POOL_MODELS"  # JSON list of catalog names to load at start

MAX_WAIT_SECONDS = 60.0
STOP_REASONS = ("cancelled", "deadline", "lost")
# The Content-Type of each upload: result.json's, and the images' of the job's ``samples_format``
# (``img2img.api.image_formats``). The operator signs the PUTs with it (``ContentType``: a signature may cover the
# header, as S3's query-string SigV2 does), the runner sends it, and S3 keeps it for whoever reads the object.
RESULT_CONTENT_TYPE = "application/json"


class Message(BaseModel):
    # Both sides are ours, but of possibly different versions during a rollout: unknown keys are ignored.
    model_config = ConfigDict(extra="ignore", frozen=True)


class JobRef(Message):
    namespace: str
    name: str
    uid: str
    attempt: int = Field(..., ge=1)


class TakeRequest(Message):
    runner: str = Field(..., min_length=1, max_length=253)
    models: list[str] = Field(default_factory=list, description="catalog names the runner holds loaded")
    waitSeconds: float = Field(25.0, gt=0, le=MAX_WAIT_SECONDS)


class Outputs(Message):
    """Where this attempt's results go: ``images[i]`` is uploaded to ``imageUrls[i]`` (presigned PUT, signed for
    the content type of the job's ``samples_format``; the URIs end in its extension), then result.json to
    ``resultUrl`` (``RESULT_CONTENT_TYPE``)."""

    imageUris: list[str]
    imageUrls: list[str]
    resultUri: str
    resultUrl: str


class Assignment(Message):
    lease: str = Field(..., description="the lease id: names this job's attempt on this runner")
    job: JobRef
    inputUrl: str = Field(..., description="presigned GET of the staged input.json")
    images: dict[str, str] = Field(default_factory=dict, description="s3:// image reference → presigned GET")
    outputs: Outputs
    submittedAt: int = Field(..., description="ms since the epoch")
    leaseSeconds: float = Field(..., gt=0)
    heartbeatSeconds: float = Field(..., gt=0)


class Heartbeat(Message):
    runner: str
    lease: str
    step: int | None = Field(None, ge=0)
    steps: int | None = Field(None, ge=0)


class HeartbeatReply(Message):
    stop: Literal["cancelled", "deadline", "lost"] | None = None
    leaseSeconds: float | None = None


class Done(Message):
    runner: str
    lease: str
    outcome: dict[str, Any] = Field(..., description="the attempt's outcome (see img2img.api.termination)")
    models: list[str] | None = Field(None, description="catalog names the runner holds loaded, when it wants its "
                                                       "next job in the answer (None: it will take)")


class DoneReply(Message):
    accepted: bool
    reason: str | None = None
    assignment: Assignment | None = Field(None, description="the runner's next job (only when it sent models)")


# ---- runner identity ----------------------------------------------------------------------------------------------
def runner_token(key: bytes, runner: str) -> str:
    """The bearer token of runner pod ``runner``: its name and an HMAC of it under the operator's key."""
    return f"{runner}.{hmac.new(key, runner.encode(), hashlib.sha256).hexdigest()}"


def token_runner(key: bytes, token: str) -> str | None:
    """The runner a token names, or None when it was not signed with ``key``."""
    runner, dot, mac = token.rpartition(".")
    if not dot or not runner:
        return None
    return runner if hmac.compare_digest(runner_token(key, runner), token) else None
