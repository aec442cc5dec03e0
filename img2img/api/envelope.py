"""The RunPod A1111 worker's envelope: ``{"input": {"api": {"method", "endpoint"}, "payload": {…}}}``.

``spec.input`` of an Img2ImgJob is this ``input`` object verbatim; the request's ``webhook`` and ``policy`` become
the job's controls. ``POST /sdapi/v1/img2img`` and ``POST /sdapi/v1/txt2img`` are supported, each with its own
payload model (``PAYLOADS``); any other endpoint the RunPod worker knows (options, extras, …) is refused by name
until it is supported.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, ValidationInfo, field_validator

from img2img.api.addresses import URL_MAX, url_refusal
from img2img.api.base import ApiModel
from img2img.api.errors import refuse
from img2img.api.payload import Img2ImgPayload, ProcessingPayload
from img2img.api.txt2img import Txt2ImgPayload

SUPPORTED_METHOD = "POST"
IMG2IMG = "/sdapi/v1/img2img"
TXT2IMG = "/sdapi/v1/txt2img"
# endpoint -> the model of its payload
PAYLOADS: dict[str, type[ProcessingPayload]] = {IMG2IMG: Img2ImgPayload, TXT2IMG: Txt2ImgPayload}
SUPPORTED = ", ".join(f"{SUPPORTED_METHOD} {endpoint}" for endpoint in PAYLOADS)
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
    endpoint: str = Field(..., max_length=256, description="/sdapi/v1/img2img or /sdapi/v1/txt2img (the leading "
                          "slash is optional)")

    @field_validator("method")
    @classmethod
    def _post(cls, value: str) -> str:
        if value.upper() != SUPPORTED_METHOD:
            raise refuse(f"{value} is not supported; supported: {SUPPORTED}")
        return value

    @field_validator("endpoint")
    @classmethod
    def _supported(cls, value: str) -> str:
        if normalize_endpoint(value) not in PAYLOADS:
            raise refuse(f"{normalize_endpoint(value)} is not supported; supported: {SUPPORTED}")
        return value

    @property
    def path(self) -> str:
        """The endpoint, normalized: "/sdapi/v1/img2img" or "/sdapi/v1/txt2img"."""
        return normalize_endpoint(self.endpoint)


class RunPodInput(ApiModel):
    """The RunPod request's ``input``: which A1111 endpoint, and its body (validated as that endpoint's payload)."""

    # img2img needs its init images: the API server checks that much itself (CEL; the endpoint's other fields are
    # the operator's to check, since one structural schema holds both payloads' fields)
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.payload.init_images) || !self.api.endpoint.endsWith('img2img')",
         "fieldPath": ".payload.init_images", "message": "is required for /sdapi/v1/img2img"},
    ]})

    api: Api
    payload: Img2ImgPayload | Txt2ImgPayload = Field(..., description="the A1111 request body: "
                                                     "StableDiffusionImg2ImgProcessingAPI for /sdapi/v1/img2img, "
                                                     "StableDiffusionTxt2ImgProcessingAPI for /sdapi/v1/txt2img")

    @field_validator("payload", mode="wrap")
    @classmethod
    def _payload_of_endpoint(cls, value: Any, handler: Any, info: ValidationInfo) -> ProcessingPayload:
        api = info.data.get("api")
        if api is None:  # the endpoint is refused: there is no model to check its payload against
            return value
        model = PAYLOADS[api.path]
        return value if isinstance(value, model) else model.model_validate(value, context=info.context)

    @property
    def txt2img(self) -> bool:
        return self.api.path == TXT2IMG


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
