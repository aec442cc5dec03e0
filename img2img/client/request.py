"""A request made ready to submit: read, validated offline, its large images set aside for S3."""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from img2img.client.errors import ClientError
from img2img.client.offload import Upload, decode_for_upload, image_slots, inline_chars, plan_offload

BUCKET_ENV = "IMG2IMG_BUCKET"
PLACEHOLDER_BUCKET = "img2img-upload-pending"


def read_text(path: str) -> str:
    """The file's text; ``-`` reads stdin."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ClientError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ClientError(f"{path}: cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def payload_of(data: Any) -> tuple[dict | None, str]:
    """Where the A1111 payload sits in a parsed request or manifest, and its path prefix as users read it."""
    if not isinstance(data, dict):
        return None, ""
    if "input" in data and "spec" not in data and "kind" not in data:
        inp, prefix = data.get("input"), "input"
    else:
        inp, prefix = (data.get("spec") or {}).get("input") if isinstance(data.get("spec"), dict) else None, \
            "spec.input"
    payload = inp.get("payload") if isinstance(inp, dict) else None
    return (payload if isinstance(payload, dict) else None), f"{prefix}.payload"


@dataclass
class Prepared:
    """A request made ready to create: validated, with the images still to upload."""

    data: Any  # the parsed request or manifest; offloaded slots hold a placeholder until uploaded
    uploads: list[tuple[Any, Any, Upload]]  # (container, key, upload) in the data
    inline_kept: list[str]  # large images left inline (no bucket), by path
    allow_private_addresses: bool = False  # the webhook may be http and name a private address (the gateway's rule)

    def manifest(self, name: str | None, namespace: str) -> dict:
        from img2img.api.convert import to_manifest

        return to_manifest(self.data, name=name, namespace=namespace,
                           allow_private_addresses=self.allow_private_addresses)


def prepare(text: str, source: str, bucket: str | None) -> Prepared:
    """Parse and validate a request/manifest offline; images to offload are decoded here and replaced by a placeholder.

    Raises ``JobProblems`` with every problem. Without a bucket, large images stay inline when the job still fits
    (``inline_kept``); when it would not, ClientError says to set IMG2IMG_BUCKET.
    """
    from img2img.api.job import parse_document

    return prepare_data(parse_document(text, source), bucket)


def prepare_data(data: Any, bucket: str | None, allow_private_addresses: bool = False) -> Prepared:
    """``prepare`` for a request or manifest already parsed (the gateway's request bodies, with the gateway's
    ``allowPrivateAddresses``)."""
    from img2img.api.convert import to_manifest
    from img2img.api.errors import Problem
    from img2img.api.images import MAX_INLINE_TOTAL_CHARS, ImageError
    from img2img.api.job import JobProblems

    payload, prefix = payload_of(data)
    chosen = plan_offload(payload, prefix) if payload is not None else []
    work = copy.deepcopy(data)
    work_payload, _ = payload_of(work)
    found: list[Problem] = []
    uploads: list[tuple[Any, Any, Upload]] = []
    # the same slots in the working copy, by path
    slots = {p: (c, k) for c, k, p in image_slots(work_payload, prefix)} if work_payload is not None else {}
    for container, key, path in chosen:
        try:
            upload = decode_for_upload(container[key], path)
        except ImageError as exc:
            found.append(Problem(path, str(exc)))
            upload = None
        wc, wk = slots[path]
        wc[wk] = f"s3://{PLACEHOLDER_BUCKET}/uploads/pending/{len(uploads)}.png"
        if upload:
            uploads.append((wc, wk, upload))
    try:
        to_manifest(work, allow_private_addresses=allow_private_addresses)
    except JobProblems as exc:
        found.extend(exc.problems)
    if found:
        raise JobProblems(list(dict.fromkeys(found)))
    if uploads and not bucket:
        inline = inline_chars(payload, prefix)
        paths = ", ".join(u.path for _, _, u in uploads)
        if inline > MAX_INLINE_TOTAL_CHARS:
            raise ClientError(
                f"{paths}: {inline} characters of inline image data do not fit in a job (at most "
                f"{MAX_INLINE_TOTAL_CHARS}); set {BUCKET_ENV} to the operator's S3 bucket so that img2img submit "
                "uploads large images to s3://<bucket>/uploads/<namespace>/ (or pass s3:// references yourself)")
        return Prepared(data, [], [u.path for _, _, u in uploads], allow_private_addresses)
    return Prepared(work, uploads, [], allow_private_addresses)
