"""How a job's result images are written: A1111's ``samples_format`` → file format, S3 key extension and content
type, in one table (pure).

A1111 1.10's API answer (modules/api/api.py ``encode_pil_to_base64``) knows png, jpg, jpeg and webp: PNG with the
image's text items as chunks (the infotext in ``parameters``); JPEG and WebP at ``jpeg_quality`` with the infotext
in the EXIF UserComment. The operator signs each upload for the content type, the runner encodes and sends it, and
readers (the gateway's copy to a caller's bucket, ``img2img fetch``) take the format from the key's extension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ImageFormat:
    pillow: str  # Pillow's format name
    extension: str  # of the S3 key and of a fetched file: A1111 names its files with samples_format as given
    content_type: str


SamplesFormat = Literal["png", "jpg", "jpeg", "webp"]
SAMPLES_FORMATS: dict[str, ImageFormat] = {
    "png": ImageFormat("PNG", "png", "image/png"),
    "jpg": ImageFormat("JPEG", "jpg", "image/jpeg"),
    "jpeg": ImageFormat("JPEG", "jpeg", "image/jpeg"),
    "webp": ImageFormat("WEBP", "webp", "image/webp"),
}
PNG = SAMPLES_FORMATS["png"]
JPEG_QUALITY = 80  # A1111's default jpeg_quality
UNKNOWN_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class ImageEncoding:
    """A job's image options, A1111's defaults unless ``override_settings`` say otherwise."""

    format: ImageFormat = PNG
    quality: int = JPEG_QUALITY  # jpeg_quality: JPEG and WebP
    lossless: bool = False  # webp_lossless: WebP only
    infotext: bool = True  # enable_pnginfo: the infotext goes into the file (PNG chunk, EXIF UserComment)


def content_type_of(key: str) -> str:
    """The content type of a result image stored under ``key`` (by its extension)."""
    extension = key.rsplit(".", 1)[-1].lower() if "." in key.rsplit("/", 1)[-1] else ""
    found = SAMPLES_FORMATS.get(extension)
    return found.content_type if found else UNKNOWN_CONTENT_TYPE
