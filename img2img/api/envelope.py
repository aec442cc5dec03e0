"""The RunPod A1111 worker's envelope: ``{"input": {"api": {"method", "endpoint"}, "payload": {…}}}``.

``spec.input`` of an Img2ImgJob is this ``input`` object verbatim; the request's ``webhook`` and ``policy`` become
the job's controls. Only ``POST /sdapi/v1/img2img`` is supported; any
other endpoint the RunPod worker knows (txt2img, options, …) is refused by name until it is supported.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from img2img.api.addresses import URL_MAX, url_refusal
from img2img.api.base import ApiModel
from img2img.api.errors import refuse
from img2img.api.payload import Img2ImgPayload

SUPPORTED_METHOD = "POST"
SUPPORTED_ENDPOINT = "/sdapi/v1/img2img"
SUPPORTED = f"{SUPPORTED_METHOD} {SUPPORTED_ENDPOINT}"
# RunPod's policy limits (ms)
MIN_EXECUTION_TIMEOUT_MS = 5_000
MIN_TTL_MS = 10_000
MAX_POLICY_MS = 7 * 24 * 3600 * 1000
LOW_PRIORITY = -1000  # the lowest priority a job can have: `policy.lowPriority` runs after everything else


def normalize_endpoint(endpoint: str) -> str:
    """"sdapi/v1/img2img" and "/sdapi/v1/img2img" are the same endpoint: the RunPod worker strips the slash."""
    return "/" + endpoint.strip().lstrip("/")


# The validation context key (``model_validate(..., context=…)``) that lets a webhook be plain http and name a private
# address: set by the operator and the gateway from their ``allowPrivateAddresses``; absent, the strict rule holds.
ALLOW_PRIVATE_ADDRESSES = "allowPrivateAddresses"


def private_addresses(allow: bool) -> dict[str, bool]:
    """The validation context of a service that lets webhooks reach private addresses (or not)."""
    return {ALLOW_PRIVATE_ADDRESSES: allow}


def _webhook(url: str, info: ValidationInfo) -> str:
    why = url_refusal(url, bool((info.context or {}).get(ALLOW_PRIVATE_ADDRESSES)))
    if why:
        raise refuse(f"{url[:80]!r} {why}")
    return url


# A URL the operator POSTs to: the same address rules as image fetches (``img2img.api.addresses``). The API server
# checks only the scheme's shape: where http is allowed is the operator's configuration.
WebhookUrl = Annotated[str, Field(max_length=URL_MAX, json_schema_extra={"pattern": "^https?://"}),
                      AfterValidator(_webhook)]


class Api(ApiModel):
    method: str = Field(..., max_length=16, description="POST")
    endpoint: str = Field(..., max_length=256, description="/sdapi/v1/img2img (the leading slash is optional)")

    @field_validator("method")
    @classmethod
    def _post(cls, value: str) -> str:
        if value.upper() != SUPPORTED_METHOD:
            raise refuse(f"{value} is not supported; supported: {SUPPORTED}")
        return value

    @field_validator("endpoint")
    @classmethod
    def _img2img(cls, value: str) -> str:
        if normalize_endpoint(value) != SUPPORTED_ENDPOINT:
            raise refuse(f"{normalize_endpoint(value)} is not supported; supported: {SUPPORTED}")
        return value


class RunPodInput(ApiModel):
    """The RunPod request's ``input``: which A1111 endpoint, and its body."""

    api: Api
    payload: Img2ImgPayload


class Policy(ApiModel):
    """RunPod's ``policy``: limits of one job, in milliseconds as RunPod counts them."""

    executionTimeout: int | None = Field(None, ge=MIN_EXECUTION_TIMEOUT_MS, le=MAX_POLICY_MS,
                                         description="ms a job may run (RunPod: 5 s to 7 days)")
    ttl: int | None = Field(None, ge=MIN_TTL_MS, le=MAX_POLICY_MS, description="ms the job is kept (RunPod: 10 s "
                            "to 7 days)")
    lowPriority: bool | None = Field(None, description="true: the job runs after every other job")


class RunPodRequest(ApiModel):
    """A whole RunPod request as users send it to ``/run``: ``{"input": {...}, "webhook"?, "policy"?}``.

    ``webhook`` and ``policy`` become the Img2ImgJob's controls (``job_controls``). ``s3Config`` carries the caller's
    S3 credentials, which do not belong in a job object: only the gateway takes it, the CLI refuses it.
    """

    input: RunPodInput
    webhook: WebhookUrl | None = Field(None, description="https URL the job's RunPod status is POSTed to when it "
                                       "ends")
    policy: Policy | None = None

    @classmethod
    def _unknown_key_reason(cls, key: str) -> str:
        hints = {"s3Config": "is taken by the gateway only (it carries credentials); give the Img2ImgJob control "
                             "output {bucket, prefix} instead"}
        return hints.get(key) or super()._unknown_key_reason(key)

    def job_controls(self) -> dict[str, Any]:
        """The Img2ImgJob controls this request asks for: ``webhook``, and ``policy`` in the job's units.

        RunPod's ``ttl`` counts from submission; a job's ``ttlSecondsAfterFinished`` from its end, so a job is kept
        at least as long as RunPod would keep it.
        """
        controls: dict[str, Any] = {}
        if self.webhook is not None:
            controls["webhook"] = self.webhook
        policy = self.policy or Policy()
        if policy.executionTimeout is not None:
            controls["timeoutSeconds"] = math.ceil(policy.executionTimeout / 1000)
        if policy.ttl is not None:
            controls["ttlSecondsAfterFinished"] = math.ceil(policy.ttl / 1000)
        if policy.lowPriority:
            controls["priority"] = LOW_PRIORITY
        return controls
