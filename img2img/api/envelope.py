"""The RunPod A1111 worker's envelope: ``{"input": {"api": {"method", "endpoint"}, "payload": {…}}}``.

``spec.input`` of an Img2ImgJob is this ``input`` object verbatim. Only ``POST /sdapi/v1/img2img`` is supported; any
other endpoint the RunPod worker knows (txt2img, options, …) is refused by name until it is supported.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from img2img.api.base import ApiModel
from img2img.api.errors import refuse
from img2img.api.payload import Img2ImgPayload

SUPPORTED_METHOD = "POST"
SUPPORTED_ENDPOINT = "/sdapi/v1/img2img"
SUPPORTED = f"{SUPPORTED_METHOD} {SUPPORTED_ENDPOINT}"


def normalize_endpoint(endpoint: str) -> str:
    """"sdapi/v1/img2img" and "/sdapi/v1/img2img" are the same endpoint: the RunPod worker strips the slash."""
    return "/" + endpoint.strip().lstrip("/")


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


class RunPodRequest(ApiModel):
    """A whole RunPod request as users send it to ``/run``: ``{"input": {...}}``.

    RunPod's own top-level keys (``webhook``, ``policy``, ``s3Config``) have Img2ImgJob counterparts
    (``timeoutSeconds``, ``output``…) and are refused here with that hint rather than ignored.
    """

    input: RunPodInput

    @classmethod
    def _unknown_key_reason(cls, key: str) -> str:
        hints = {"policy": "use the Img2ImgJob controls (timeoutSeconds, ttlSecondsAfterFinished) instead",
                 "s3Config": "use the Img2ImgJob control output {bucket, prefix} instead",
                 "webhook": "webhooks are not supported; watch the Img2ImgJob's status instead"}
        return hints.get(key) or super()._unknown_key_reason(key)

