"""Image fields: inline base64 / data URI, or a reference to an object in S3 or on an https server.

Where images may come from, how large an inline one may be, and how any image is decoded (``decode_image``: the
one decoder, for validation and the runner alike, under the input budget of ``img2img.api.limits``).

Size budget (the numbers behind the limits below):

- etcd refuses a request larger than 1.5 MiB (1 572 864 bytes, ``--max-request-bytes``); the whole stored object must
  fit, metadata and managedFields included. base64 costs 4/3, so 1.5 MiB of object holds at most ~1.1 MB of image.
- We therefore allow at most ``MAX_INLINE_TOTAL_CHARS`` = 1 450 000 characters of inline image data per job (all
  images together), leaving ~120 KB for the rest of the object. That admits a 1 MB image
  (1 000 000 bytes -> 1 333 336 base64 characters) and refuses what etcd would refuse anyway, with a useful message.
- Client-side ``kubectl apply`` copies the object into an annotation limited to 256 KiB; a job with a large inline
  image must be created with ``kubectl create`` or ``kubectl apply --server-side`` (the ``img2img submit`` CLI
  offloads large images to S3 by itself).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from typing import Annotated

from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import AfterValidator, ValidationInfo, WithJsonSchema

from img2img.api.errors import refuse
from img2img.api.limits import ACCEPTED_FORMATS, ACCEPTED_FORMATS_TEXT, image_size_refusal

ETCD_MAX_REQUEST_BYTES = 1_572_864
# All inline image characters of one job together; see the module docstring.
MAX_INLINE_TOTAL_CHARS = 1_450_000
# One image field: the total budget bounds it; this is the CRD's maxLength for any image string.
MAX_IMAGE_CHARS = MAX_INLINE_TOTAL_CHARS
MAX_REFERENCE_CHARS = 2048  # an s3:// or https:// reference

# The validation context key (``model_validate(..., context=…)``) that says the inline images were decoded by an
# earlier check of the very same values: their form and size are checked again, their pixels are not (the operator
# re-checks a job it already queued without decoding every image again after a restart).
IMAGES_DECODED = "imagesDecoded"

_DATA_URI = re.compile(r"^data:(?P<mime>[\w/+.-]*)(?P<params>(;[\w=.+-]+)*);base64,", re.IGNORECASE)
# S3 bucket names: 3-63 chars of lowercase letters, digits, dots and hyphens.
S3_BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
_S3_BUCKET = re.compile(S3_BUCKET_PATTERN)


class ImageError(ValueError):
    """An image field that cannot be used; the message is the reason, to be shown after the field's path."""


@dataclass(frozen=True)
class S3Ref:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class HttpsRef:
    url: str

    def __str__(self) -> str:
        return self.url


def parse_reference(value: str) -> S3Ref | HttpsRef | None:
    """``s3://bucket/key`` -> S3Ref, ``https://…`` -> HttpsRef, anything else (inline data) -> None.

    Raises ImageError for a reference that is malformed (no key, bad bucket name) or uses plain http.
    """
    head = value[:8].lower()
    if head.startswith(("s3://", "https://")) and len(value) > MAX_REFERENCE_CHARS:
        raise ImageError(f"a reference longer than {MAX_REFERENCE_CHARS} characters")
    if head.startswith("s3://"):
        bucket, _, key = value[5:].partition("/")
        if not _S3_BUCKET.match(bucket):
            raise ImageError(f"{value[:80]!r}: not a valid S3 bucket name {bucket!r}")
        if not key or key.endswith("/"):
            raise ImageError(f"{value[:80]!r}: an S3 reference needs an object key (s3://bucket/key)")
        return S3Ref(bucket, key)
    if head.startswith("https://"):
        parts = urlsplit(value)
        if not parts.hostname:
            raise ImageError(f"{value[:80]!r}: not a valid https URL")
        return HttpsRef(value)
    if head.startswith("http://"):
        raise ImageError("plain http:// is not accepted; use https:// or s3://")
    return None


def plain_key(key: str) -> bool:
    """An object key without empty, ``.`` or ``..`` segments (which some S3 servers would resolve as paths)."""
    return not any(segment in ("", ".", "..") for segment in key.split("/"))


def s3_allowed(ref: S3Ref, allowed: Iterable[str]) -> bool:
    """Whether ``ref`` lies under one of ``allowed`` (``s3://bucket/prefix`` entries; a bare bucket allows all of
    it). The one rule for what a job may read: the operator presigns only such reads, the runner checks them."""
    for entry in allowed:
        if not entry.startswith("s3://"):
            continue
        bucket, _, prefix = entry[5:].partition("/")
        if bucket != ref.bucket:
            continue
        if not prefix or ref.key.startswith(prefix if prefix.endswith("/") else prefix + "/") or ref.key == prefix:
            return True
    return False


def strip_data_uri(value: str) -> str:
    """The base64 part of a data URI (``data:image/png;base64,…``), or the value itself."""
    match = _DATA_URI.match(value[:200])
    return value[match.end():] if match else value


def decode_inline(value: str) -> Image.Image:
    """Decode base64 (optionally a data URI) into an image (``decode_image``); ImageError with a short reason."""
    data = strip_data_uri(value).strip()
    if not data:
        raise ImageError("not a decodable image (empty)")
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"not a decodable image (not valid base64: {exc})") from None
    return decode_image(raw)


# What a refused format's data starts with: to say which format it is (Pillow never opens them)
_REFUSED_SIGNATURES = ((b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"), (b"\x00\x00\x01\x00", "ICO"),
                       (b"%!PS", "EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"%PDF", "PDF"), (b"8BPS", "PSD"))


def decode_image(raw: bytes) -> Image.Image:
    """Image file bytes -> the image, fully loaded and turned upright (EXIF orientation), or ImageError.

    The header decides first (limits): only the accepted formats' decoders are tried (EPS never reaches
    Ghostscript), and an image too large or too elongated is refused before a pixel is decoded.
    """
    if not raw:
        raise ImageError("not a decodable image (no data)")
    try:
        image = Image.open(io.BytesIO(raw), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        named = next((name for head, name in _REFUSED_SIGNATURES if raw.startswith(head)), None)
        if named:
            raise ImageError(f"{named} images are not accepted; send {ACCEPTED_FORMATS_TEXT}") from None
        # Pillow's own message names an in-memory object ("<_io.BytesIO object at 0x…>"): say what it means
        raise ImageError(f"not a decodable image (not {ACCEPTED_FORMATS_TEXT})") from None
    except Exception as exc:  # noqa: BLE001 - a decoder fails on bad data in many ways; all mean bad data
        raise _undecodable(exc) from None
    why = image_size_refusal(image.width, image.height)
    if why:
        raise ImageError(why)
    try:
        image.load()
        # upright now: a broken EXIF block is bad data here, not a crash where the runner turns the image
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as exc:  # noqa: BLE001 - as above
        raise _undecodable(exc) from None
    return image


def _undecodable(exc: Exception) -> ImageError:
    return ImageError(f"not a decodable image ({type(exc).__name__}: {str(exc)[:120]})")


def is_inline(value: str) -> bool:
    return parse_reference(value) is None


def check_image(value: str, decode: bool = True) -> str:
    """Validate one image field's value: a well-formed reference, or inline data that decodes (unless ``decode`` is
    False: then only its size is checked). Returns it as sent."""
    if parse_reference(value) is None:
        if len(value) > MAX_IMAGE_CHARS:
            raise ImageError(too_large_message(len(value)))
        if decode:
            decode_inline(value)
    return value


def too_large_message(chars: int) -> str:
    return (f"{chars} characters of inline image data; at most {MAX_INLINE_TOTAL_CHARS} fit in a job "
            f"(etcd stores at most {ETCD_MAX_REQUEST_BYTES} bytes per object); upload the image to S3 and pass "
            "s3://bucket/key instead (`img2img submit` does this by itself)")


def _image(value: str, info: ValidationInfo) -> str:
    try:
        return check_image(value, decode=not (info.context or {}).get(IMAGES_DECODED))
    except ImageError as exc:
        raise refuse(str(exc)) from None


# An image field of a model: base64, data URI, s3://bucket/key or https:// URL. The length limit is checked by
# `check_image`, with a message that says what to do; the schema states it for the CRD.
ImageStr = Annotated[str, AfterValidator(_image),
                     WithJsonSchema({"type": "string", "maxLength": MAX_IMAGE_CHARS,
                                     "description": "base64 image, data URI, s3://bucket/key or https:// URL"})]
