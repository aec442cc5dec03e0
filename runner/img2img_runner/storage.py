"""S3 I/O of the runner: the job input, the result images and result.json, model folders.

- Keys (docs/architecture.md): ``s3://<bucket>/<prefix>/<namespace>/<job>/<uid>/`` holds ``input.json`` (the
  operator's), ``images/<n>.<png|jpg|jpeg|webp>`` (generated images, then detect maps, in A1111's order, in the
  job's ``samples_format``) and ``result.json`` (written last: its presence means the upload is complete).
- Images carry their infotext as A1111's API answer does: PNGs in the ``parameters`` tEXt chunk, JPEG and WebP in
  the EXIF UserComment.
- Endpoint and credentials come from the environment as boto3 reads them (``AWS_ENDPOINT_URL``,
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``). Every call is retried with exponential backoff
  on 5xx answers, throttling and connection errors (``IMG2IMG_S3_ATTEMPTS``, default 4); then StorageError, which
  the runner reports with exit code 5 (the operator retries the job).
- Presigned GET URLs for the images when ``IMG2IMG_PRESIGN_EXPIRY`` (seconds) > 0.
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from PIL import Image, PngImagePlugin

from img2img import split_s3_uri
from img2img.api.image_formats import PNG, ImageEncoding, ImageFormat
from img2img.api.times import format_time_ms
from img2img_runner.errors import JobFailure, StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")
EXIF_IFD_POINTER, USER_COMMENT = 0x8769, 0x9286  # EXIF tags
LONG, UNDEFINED = 4, 7  # TIFF field types
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                    "ServiceUnavailable", "RequestTimeTooSkewed", "XMinioServerNotInitialized"}


def image_bytes(image: Image.Image, encoding: ImageEncoding = ImageEncoding()) -> bytes:
    """The image as A1111's API answer encodes it (api.py ``encode_pil_to_base64``): a PNG keeps the image's text
    items as chunks (the infotext in ``parameters``); a JPEG or WebP, RGB at ``jpeg_quality``, carries the infotext
    in its EXIF UserComment (empty when the image has none), as A1111 writes it with piexif. ``webp_lossless`` is
    honoured where A1111's answer ignores it (README, "Where it differs")."""
    buf = io.BytesIO()
    if encoding.format.pillow == "PNG":
        meta = PngImagePlugin.PngInfo()
        for key, value in image.info.items():
            if isinstance(key, str) and isinstance(value, str):
                meta.add_text(key, value)
        image.save(buf, format="PNG", pnginfo=meta)
        return buf.getvalue()
    if image.mode in ("RGBA", "P"):
        image = image.convert("RGB")
    exif = exif_user_comment(image.info.get("parameters") or "")
    image.save(buf, format=encoding.format.pillow, exif=exif, quality=encoding.quality,
               **({"lossless": encoding.lossless} if encoding.format.pillow == "WEBP" else {}))
    return buf.getvalue()


def exif_user_comment(text: str) -> bytes:
    """EXIF holding one UserComment, as A1111 writes it with piexif (``UserComment.dump(text, "unicode")``: the
    UNICODE character code, then UTF-16 big-endian) and reads it back (``read_info_from_image``). Written by hand:
    Pillow's Exif stores bytes as type BYTE, which piexif reads back as a tuple of numbers; UserComment is UNDEFINED.
    """
    comment = b"UNICODE\0" + text.encode("utf-16-be")
    exif_ifd = 8 + 2 + 12 + 4  # after the TIFF header and IFD0 (one entry, no next IFD)
    data = exif_ifd + 2 + 12 + 4
    return (b"Exif\0\0MM\0\x2a" + struct.pack(">I", 8)
            + struct.pack(">HHHII", 1, EXIF_IFD_POINTER, LONG, 1, exif_ifd) + struct.pack(">I", 0)
            + struct.pack(">HHHII", 1, USER_COMMENT, UNDEFINED, len(comment), data) + struct.pack(">I", 0)
            + comment)


def image_files(images: list[Image.Image], encoding: ImageEncoding = ImageEncoding()) -> list[bytes]:
    """``image_bytes`` of each image, encoded in parallel: zlib and libjpeg/libwebp run outside the GIL, so a job's
    images (generated images, detect maps) take about as long as the largest one instead of the sum."""
    if len(images) < 2:
        return [image_bytes(image, encoding) for image in images]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(images), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda image: image_bytes(image, encoding), images))


def join_key(prefix: str, name: str) -> str:
    return f"{prefix.rstrip('/')}/{name}" if prefix.strip("/") else name


def s3_client(attempts: int = 1):
    """A boto3 S3 client from the environment. botocore's own retries are off: ``with_retries`` does them."""
    import boto3
    from botocore.config import Config

    # total_max_attempts counts the first call (botocore's max_attempts counts retries: 1 would mean two calls)
    config = Config(retries={"total_max_attempts": attempts, "mode": "standard"}, connect_timeout=5, read_timeout=60,
                    signature_version="s3v4", s3={"addressing_style": "path"})
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.client("s3", endpoint_url=endpoint, config=config,
                        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")


def transient(exc: BaseException) -> bool:
    """Worth retrying: a 5xx, throttling, or no connection at all (boto3 calls, and plain HTTP to presigned URLs)."""
    import http.client
    import urllib.error

    import botocore.exceptions as be

    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code in (408, 429)
    if isinstance(exc, (urllib.error.URLError, http.client.HTTPException)):
        return True
    if isinstance(exc, (be.EndpointConnectionError, be.ConnectionError, be.ConnectionClosedError, be.ReadTimeoutError,
                        be.ConnectTimeoutError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, be.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = exc.response.get("Error", {}).get("Code", "")
        return status >= 500 or code in _TRANSIENT_CODES
    return False


def with_retries(what: str, call: Callable[[], T], *, attempts: int | None = None, delay: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, retried with exponential backoff while it fails transiently; then StorageError."""
    attempts = attempts or int(os.environ.get("IMG2IMG_S3_ATTEMPTS") or 4)
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except JobFailure:
            raise  # already a verdict of the call (a bad input found in what it read)
        except Exception as exc:  # noqa: BLE001 - classified below
            if not transient(exc):
                raise StorageError(f"{what}: {_describe(exc)}") from exc
            if attempt == attempts:
                raise StorageError(f"{what}: {_describe(exc)} (after {attempts} attempts)") from exc
            log.warning("%s failed (%s), attempt %d of %d; retrying in %.1fs", what, _describe(exc), attempt,
                        attempts, delay)
            sleep(delay)
            delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")


def _describe(exc: BaseException) -> str:
    import botocore.exceptions as be

    if isinstance(exc, be.ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{err.get('Code') or status} {err.get('Message') or ''}".strip()
    return f"{type(exc).__name__}: {exc}"


# --- reading -----------------------------------------------------------------------------------------------


def read_bytes(uri: str, client=None) -> bytes:
    bucket, key = split_s3_uri(uri)
    client = client or s3_client()
    return with_retries(f"reading {uri}", lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read())


def sync_prefix(uri: str, folder: str | os.PathLike, client=None) -> Path:
    """Mirror ``s3://bucket/prefix/`` into ``folder`` (files missing or of another size are downloaded)."""
    bucket, prefix = split_s3_uri(uri, need_key=False)
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    folder = Path(folder)
    marker = folder / ".img2img-synced"
    if marker.exists():
        return folder
    client = client or s3_client()
    objects: list[dict] = []

    def listing() -> None:
        objects.clear()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            objects.extend(page.get("Contents", []))

    with_retries(f"listing {uri}", listing)
    if not objects:
        raise StorageError(f"{uri}: no objects under that prefix")
    for obj in objects:
        rel = obj["Key"][len(prefix):]
        if not rel or rel.endswith("/") or ".." in rel.split("/"):
            continue
        target = folder / rel
        if target.exists() and target.stat().st_size == obj["Size"]:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        with_retries(f"downloading s3://{bucket}/{obj['Key']}",
                     lambda: client.download_file(bucket, obj["Key"], str(tmp)))
        os.replace(tmp, target)
    marker.write_text(json.dumps({"source": uri, "objects": len(objects)}))
    return folder


# --- writing -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Uploaded:
    images: list[str]  # s3:// URIs, in order
    result: str  # s3:// URI of result.json
    presigned: list[str] | None


def upload_result(output: str, images: list[bytes], result: dict[str, Any], *, image_format: ImageFormat = PNG,
                  client=None, presign_seconds: int | None = None) -> Uploaded:
    """Upload ``images/<n>.<extension>`` then ``result.json`` (with ``images`` and ``presigned`` filled in) under
    ``output`` (``s3://bucket/prefix/…/``). result.json goes last: readers take its presence as completion."""
    bucket, prefix = split_s3_uri(output, need_key=False)
    client = client or s3_client()
    if presign_seconds is None:
        presign_seconds = int(os.environ.get("IMG2IMG_PRESIGN_EXPIRY") or 0)
    uris, presigned = [], []
    signed_ms = int(time.time() * 1000)
    for n, data in enumerate(images):
        key = join_key(prefix, f"images/{n}.{image_format.extension}")
        with_retries(f"uploading s3://{bucket}/{key}", lambda: client.put_object(
            Bucket=bucket, Key=key, Body=data, ContentType=image_format.content_type))
        uris.append(f"s3://{bucket}/{key}")
        if presign_seconds > 0:
            presigned.append(client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                           ExpiresIn=presign_seconds))
    body = dict(result)
    body["images"] = uris
    body["presigned"] = presigned if presign_seconds > 0 else None
    # when the first URL was signed, so the stated expiry is never later than the real one
    body["presignedExpiresAt"] = format_time_ms(signed_ms + presign_seconds * 1000) if presign_seconds > 0 else None
    key = join_key(prefix, "result.json")
    payload = json.dumps(body).encode()
    with_retries(f"uploading s3://{bucket}/{key}",
                 lambda: client.put_object(Bucket=bucket, Key=key, Body=payload, ContentType="application/json"))
    return Uploaded(images=uris, result=f"s3://{bucket}/{key}", presigned=body["presigned"])
