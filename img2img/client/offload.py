"""Large inline images go to S3: which ones (the largest first), their bytes and key, and the upload itself."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any, Iterator

from img2img import uploads_prefix
from img2img.client.s3 import s3_call, s3_client

# The inline images of a submitted job together stay at or below this many base64 characters: the largest ones go to
# S3 until the rest fits. A job then stays small in etcd, in the API server's watch cache and in every watcher.
OFFLOAD_ABOVE_CHARS = 256 * 1024

Slot = tuple[Any, Any, str]  # (container, key, user-facing path): where a payload holds one image

_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "WEBP": "image/webp",
         "GIF": "image/gif", "BMP": "image/bmp", "TIFF": "image/tiff"}


def image_slots(payload: dict, prefix: str) -> Iterator[Slot]:
    """Every place a payload carries an image."""
    images = payload.get("init_images")
    if isinstance(images, list):
        for i, _ in enumerate(images):
            yield images, i, f"{prefix}.init_images[{i}]"
    if "mask" in payload:
        yield payload, "mask", f"{prefix}.mask"
    scripts = payload.get("alwayson_scripts")
    controlnet = scripts.get("controlnet") if isinstance(scripts, dict) else None
    units = controlnet.get("args") if isinstance(controlnet, dict) else None
    for j, unit in enumerate(units if isinstance(units, list) else []):
        if isinstance(unit, dict):
            for key in ("image", "input_image"):
                if key in unit:
                    yield unit, key, f"{prefix}.alwayson_scripts.controlnet.args[{j}].{key}"


def is_inline_image(value: Any) -> bool:
    from img2img.api.images import ImageError, is_inline

    if not isinstance(value, str):
        return False
    try:
        return is_inline(value)
    except ImageError:  # a malformed reference: validation names it
        return False


def inline_chars(payload: dict, prefix: str) -> int:
    """How many base64 characters of inline images the payload carries."""
    return sum(len(c[k]) for c, k, _ in image_slots(payload, prefix) if is_inline_image(c[k]))


def plan_offload(payload: dict, prefix: str, limit: int = OFFLOAD_ABOVE_CHARS) -> list[Slot]:
    """The image slots to upload: the largest inline images first, until the inline rest is at most ``limit``."""
    slots = [(c, k, p) for c, k, p in image_slots(payload, prefix) if is_inline_image(c[k])]
    total = inline_chars(payload, prefix)
    chosen: list[Slot] = []
    for slot in sorted(slots, key=lambda s: len(s[0][s[1]]), reverse=True):
        if total <= limit:
            break
        chosen.append(slot)
        total -= len(slot[0][slot[1]])
    order = {id(s): i for i, s in enumerate(slots)}
    return sorted(chosen, key=lambda s: order[id(s)])


@dataclass(frozen=True)
class Upload:
    path: str  # the field, e.g. input.payload.init_images[0]
    data: bytes
    extension: str
    content_type: str

    def key(self, namespace: str) -> str:
        # content-addressed: the same image submitted twice is stored once
        return f"{uploads_prefix(namespace)}{hashlib.sha256(self.data).hexdigest()}.{self.extension}"


def decode_for_upload(value: str, path: str) -> Upload:
    """Check an image that is going to S3 as validation would (base64, decodes, size) and keep its bytes."""
    from img2img.api.images import ImageError, decode_inline, strip_data_uri

    image = decode_inline(value)  # raises ImageError with the reason
    try:
        raw = base64.b64decode(strip_data_uri(value).strip(), validate=False)
    except (binascii.Error, ValueError) as exc:  # decode_inline accepted it, so this is not expected
        raise ImageError(f"not a decodable image (not valid base64: {exc})") from None
    fmt = (image.format or "PNG").upper()
    extension = {"JPEG": "jpg", "MPO": "jpg"}.get(fmt, fmt.lower())
    content_type = _MIME.get(fmt, "application/octet-stream")
    return Upload(path, raw, extension, content_type)


def upload(uploads: list[tuple[Any, Any, Upload]], bucket: str, namespace: str, s3=None) -> list[str]:
    """Upload the images set aside as (container, key, upload); their fields then hold
    ``s3://bucket/uploads/<namespace>/…``. Returns a line per image for the user."""
    done = []
    for container, key, item in uploads:
        s3 = s3 or s3_client()
        object_key = item.key(namespace)
        s3_call(f"{item.path}: upload to s3://{bucket}/{object_key}", s3.put_object, Bucket=bucket, Key=object_key,
                Body=item.data, ContentType=item.content_type)
        container[key] = f"s3://{bucket}/{object_key}"
        done.append(f"{item.path}: {len(item.data)} bytes uploaded to s3://{bucket}/{object_key}")
    return done
