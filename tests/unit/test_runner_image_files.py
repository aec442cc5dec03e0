"""The result images as A1111's API answer writes them: PNG with the infotext chunk, or JPEG / WebP at the job's
quality with the infotext in the EXIF UserComment (what A1111's PNG-info tab and infotext readers look at)."""

from __future__ import annotations

import io
import random
import struct

from PIL import ExifTags, Image

from img2img.api.image_formats import SAMPLES_FORMATS, ImageEncoding
from img2img_runner.storage import image_bytes, image_files

INFOTEXT = "an astronaut riding a horse\nSteps: 6, Sampler: Euler a, Seed: 7, Size: 64x64"


def picture(mode: str = "RGB", infotext: str | None = INFOTEXT) -> Image.Image:
    rng = random.Random(3)
    image = Image.frombytes("RGB", (64, 48), bytes(rng.getrandbits(8) for _ in range(64 * 48 * 3))).convert(mode)
    if infotext is not None:
        image.info["parameters"] = infotext
    return image


def encoding(samples_format: str, **options) -> ImageEncoding:
    return ImageEncoding(format=SAMPLES_FORMATS[samples_format], **options)


def user_comment(data: bytes) -> bytes:
    """The UserComment, which must be stored as UNDEFINED (type 7): piexif, A1111's EXIF reader, reads any other
    type back as numbers and fails to decode it."""
    image = Image.open(io.BytesIO(data))
    tiff = image.info["exif"].removeprefix(b"Exif\0\0")
    order = ">" if tiff[:2] == b"MM" else "<"
    entry = tiff.find(struct.pack(order + "H", ExifTags.Base.UserComment))
    assert entry > 0 and struct.unpack(order + "H", tiff[entry + 2:entry + 4]) == (7,)
    return image.getexif().get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment]


def test_png_by_default_with_the_infotext_chunk():
    data = image_bytes(picture())
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert Image.open(io.BytesIO(data)).text == {"parameters": INFOTEXT}


def test_jpeg_carries_the_infotext_as_a_unicode_exif_user_comment():
    for name in ("jpg", "jpeg"):
        data = image_bytes(picture("RGBA"), encoding(name))  # RGBA is flattened to RGB, as A1111 does
        assert data.startswith(b"\xff\xd8\xff")
        decoded = Image.open(io.BytesIO(data))
        assert (decoded.format, decoded.mode, decoded.size) == ("JPEG", "RGB", (64, 48))
        # EXIF's character code "UNICODE" then UTF-16 big-endian: piexif's UserComment, which A1111 reads back
        assert user_comment(data) == b"UNICODE\0" + INFOTEXT.encode("utf-16-be")


def test_jpeg_quality_sets_the_compression():
    small, large = (len(image_bytes(picture(), encoding("jpg", quality=q))) for q in (20, 95))
    assert small < large / 2
    assert len(image_bytes(picture(), encoding("jpg"))) < large  # A1111's default 80


def test_webp_is_lossy_at_the_quality_or_lossless_when_asked():
    original = picture()
    lossy = image_bytes(original, encoding("webp"))
    lossless = image_bytes(original, encoding("webp", lossless=True))
    for data in (lossy, lossless):
        assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
        assert user_comment(data) == b"UNICODE\0" + INFOTEXT.encode("utf-16-be")
    assert Image.open(io.BytesIO(lossless)).convert("RGB").tobytes() == original.tobytes()
    assert Image.open(io.BytesIO(lossy)).convert("RGB").tobytes() != original.tobytes()


def test_an_image_without_infotext_gets_an_empty_comment():
    # a detect map, or an image of a job with enable_pnginfo false: A1111 writes an empty UserComment
    detect_map = picture("L", infotext=None)
    assert user_comment(image_bytes(detect_map, encoding("jpg"))) == b"UNICODE\0"
    assert Image.open(io.BytesIO(image_bytes(detect_map))).text == {}


def test_images_encoded_in_parallel_are_the_ones_encoded_one_by_one():
    images = [picture(), picture("L", infotext=None), picture(infotext="other")]
    webp = encoding("webp", quality=60)
    assert image_files(images, webp) == [image_bytes(image, webp) for image in images]
