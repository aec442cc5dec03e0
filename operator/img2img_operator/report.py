"""The runner's result.json as the dispatcher reads it from S3 (docs/architecture.md). Pure parsing.

The runner's other report, its termination message, is ``img2img.api.termination.TerminationMessage``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


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
