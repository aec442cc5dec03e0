"""The runner's result.json as the dispatcher reads it from S3 (docs/architecture.md). Pure parsing.

The runner's other report, its outcome (``done``), is read by ``outcomes``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from img2img.api.images import plain_key


@dataclass(frozen=True)
class RunnerResult:
    """result.json as read from S3 by the dispatcher; ``problem`` says why it could not be used."""

    uri: str
    data: Mapping[str, Any] | None = None
    problem: str | None = None
    presigned: tuple[str, ...] | None = None  # GET URLs of the images, made by the operator
    presigned_expires_at: str | None = None

    @property
    def images(self) -> list[str]:
        return list((self.data or {}).get("images") or [])

    def signed(self, urls: list[str], expires_at: str) -> RunnerResult:
        return replace(self, presigned=tuple(urls), presigned_expires_at=expires_at)

    @property
    def output(self) -> dict[str, Any]:
        data = self.data or {}
        output = {
            "images": self.images,
            "info": data.get("info") if isinstance(data.get("info"), str) else json.dumps(data.get("info") or {}),
            "parameters": dict(data.get("parameters") or {}),
        }
        if self.presigned is not None:
            output.update(presigned=list(self.presigned), presignedExpiresAt=self.presigned_expires_at)
        return output


def check_result(uri: str, raw: bytes | None) -> RunnerResult:
    """Parse result.json bytes (None = the object does not exist); its images must be the attempt's own
    (``<attempt>/images/…``, beside result.json)."""
    if raw is None:
        return RunnerResult(uri, problem=f"{uri} does not exist")
    try:
        data = json.loads(raw)
    except ValueError as e:
        return RunnerResult(uri, problem=f"{uri} is not valid JSON: {e}")
    if not isinstance(data, Mapping) or not isinstance(data.get("images"), list):
        return RunnerResult(uri, problem=f"{uri} has no list of images")
    images = uri.rpartition("/")[0] + "/images/"
    outside = [i for i in data["images"]
               if not isinstance(i, str) or not i.startswith(images) or not plain_key(i[len(images):])]
    if outside:  # the operator presents and reads these for the tenant: only its attempt's own uploads
        return RunnerResult(uri, problem=f"{uri} names images outside {images}: {', '.join(map(str, outside[:3]))}")
    return RunnerResult(uri, data=data)
