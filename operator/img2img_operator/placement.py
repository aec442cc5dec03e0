"""Where an attempt runs. Admission (``queue``) decides *whether* a job starts, the lifecycle decides *which* attempt,
a Placement decides *where*: today a pod per attempt; a warm runner pool can later implement the same protocol
(hand the staged job to an idle runner, release it) and sit beside per-job pods.
"""

from __future__ import annotations

import json
from typing import Protocol

from .cache import Cache
from .config import OperatorConfig
from .controls import Controls
from .kube import Kube
from .pods import build_runner_pod, input_uri
from .runpod_timings import submitted_at_ms
from .staging import Staging, input_document
from .views import JobView


# S3 errors that another try will not cure: the job cannot be staged where its output should go.
PERMANENT_S3_ERRORS = {"NoSuchBucket", "AccessDenied", "InvalidBucketName", "AllAccessDisabled", "InvalidAccessKeyId",
                       "SignatureDoesNotMatch", "AccountProblem"}


class StartRefused(Exception):
    """Starting an attempt failed for a reason that will not pass by itself (the job ends FAILED)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def _api_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    try:
        return json.loads(body).get("message") or str(body)
    except (TypeError, ValueError, AttributeError):
        return str(body or exc)


class Placement(Protocol):
    async def start(self, job: JobView, controls: Controls, attempt: int) -> bool:
        """Start attempt ``attempt`` of ``job``; idempotent. True if it was started now (not found running)."""

    async def stop(self, job_namespace: str, runner: str, uid: str | None, grace_seconds: int) -> None:
        """Stop a runner (kill its work); idempotent."""


class PodPlacement:
    """One runner pod per attempt: stage input.json in S3, then create pod ``<job>-<attempt>``."""

    def __init__(self, config: OperatorConfig, kube: Kube, staging: Staging, cache: Cache):
        self.config = config
        self.kube = kube
        self.staging = staging
        self.cache = cache

    async def start(self, job: JobView, controls: Controls, attempt: int) -> bool:
        document = input_document(job.namespace, job.name, job.uid, job.spec.get("input"), submitted_at_ms(job))
        uri = input_uri(job, controls, self.config)
        try:
            await self.staging.stage_input(uri, document)
        except Exception as e:
            code = (getattr(e, "response", None) or {}).get("Error", {}).get("Code")
            if code in PERMANENT_S3_ERRORS:
                raise StartRefused("StagingFailed", f"cannot write {uri}: {code}: {e}") from e
            raise
        try:
            body, created = await self.kube.create_pod(build_runner_pod(job, attempt, controls, self.config))
        except Exception as e:
            status = getattr(e, "status", None)
            message = _api_message(e)
            if status in (400, 422) or (status == 403 and "exceeded quota" not in message):
                raise StartRefused("PodRejected", f"the API server refused the runner pod: {message}") from e
            raise
        self.cache.put_pod(body)
        return created

    async def stop(self, job_namespace: str, runner: str, uid: str | None, grace_seconds: int) -> None:
        body = await self.kube.delete_pod(job_namespace, runner, uid, grace_seconds)
        if body is not None:
            self.cache.put_pod(body)
