"""The runner's result.json as the dispatcher reads it from S3 (docs/architecture.md), and how much of it goes into
the job's status. Pure.

result.json is read up to RESULT_MAX_BYTES: a larger one fails the attempt (``ResultTooLarge``, not retried: the
same job would write the same answer). The runner's other report, its outcome (``done``), is read by ``outcomes``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from img2img.api.images import plain_key

from .status import json_size

# result.json is read into memory up to this size: the largest valid answer (800 images with long prompts: a
# 2.8 MB info; parameters echoing a megabyte of init_images) with room to spare
RESULT_MAX_BYTES = 8 * 1024 * 1024
OMITTED_ROOM = 256  # bytes kept for ``omitted`` and ``presignedExpiresAt``


@dataclass(frozen=True)
class RunnerResult:
    """result.json as read from S3 by the dispatcher; ``problem`` says why it could not be used."""

    uri: str
    data: Mapping[str, Any] | None = None
    problem: str | None = None
    too_large: bool = False  # the problem: over RESULT_MAX_BYTES
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


def check_result(uri: str, raw: bytes | None, size: int | None = None) -> RunnerResult:
    """Parse result.json bytes (None = the object does not exist); ``size``: the object's size, when it was read
    only up to RESULT_MAX_BYTES. Its images must be the attempt's own (``<attempt>/images/…``, beside
    result.json)."""
    if raw is None:
        return RunnerResult(uri, problem=f"{uri} does not exist")
    size = len(raw) if size is None else size
    if size > RESULT_MAX_BYTES:
        return RunnerResult(uri, problem=f"{uri} is {size:,} bytes, over the {RESULT_MAX_BYTES:,} the operator "
                                         f"reads", too_large=True)
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


def bounded_output(output: Mapping[str, Any], budget: int) -> dict[str, Any]:
    """``output`` (``RunnerResult.output``) within ``budget`` bytes of JSON, for the job's status. The images always;
    then ``info``, ``parameters`` and ``presigned``, each whole while it fits in what is left, ``parameters`` without
    the ``init_images`` A1111 echoes (``include_init_images``) when only that fits. ``omitted`` names what was left
    out (``info``, ``parameters.init_images``, …): the whole answer is in result.json (the status's ``result``)."""
    kept: dict[str, Any] = {"images": list(output.get("images") or [])}
    left = budget - json_size(kept) - OMITTED_ROOM
    omitted: list[str] = []
    for key in ("info", "parameters", "presigned"):
        if key not in output:
            continue
        value = output[key]
        choices = [(value, None)]
        if key == "parameters" and isinstance(value, Mapping) and value.get("init_images"):
            choices.append(({**value, "init_images": None}, "parameters.init_images"))
        for choice, lost in choices:
            cost = json_size({key: choice})
            if cost <= left:
                kept[key], left = choice, left - cost
                omitted += [lost] if lost else []
                break
        else:
            omitted.append(key)
    if "presigned" in kept:
        kept["presignedExpiresAt"] = output.get("presignedExpiresAt")
    if omitted:
        kept["omitted"] = omitted
    return kept
