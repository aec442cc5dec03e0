"""The input budget (img2img.api.limits) as users meet it: each hostile input is refused at validation, naming the
field and the reason, before it costs anything (an image's header decides before a pixel is decoded)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import EpsImagePlugin, Image
from pydantic import ValidationError

from api_samples import seed_payload
from img2img.api.errors import problems
from img2img.api.images import ImageError, decode_image
from img2img.api.payload import Img2ImgPayload

INIT = "input.payload.init_images[0]"


def refusals(payload: dict) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        Img2ImgPayload.model_validate(payload)
    return {p.path: p.reason for p in problems(info.value, "input.payload")}


def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def header_only(width: int, height: int) -> bytes:
    """A PNG of this size cut just after its pixel data begins: decoding the pixels would fail (truncated data)."""
    data = encoded(Image.new("L", (width, height)), "PNG")
    return data[:data.index(b"IDAT") + 12]


# ---- images ----------------------------------------------------------------------------------------------------
def test_the_22_kb_png_of_64_by_262144_is_refused_for_its_aspect_ratio_and_8_to_1_is_accepted():
    tall = encoded(Image.new("L", (64, 262144)), "PNG", optimize=True)
    assert len(tall) < 30_000
    reason = refusals(seed_payload(init_images=[b64(tall)]))[INIT]
    assert "64x262144" in reason and "aspect ratio of 4096:1" in reason and "8:1" in reason
    wide = b64(encoded(Image.new("RGB", (512, 64), "white"), "PNG"))
    assert Img2ImgPayload.model_validate(seed_payload(init_images=[wide])).init_images == [wide]


@pytest.mark.parametrize("size, words", [((64, 262144), "aspect ratio"), ((4100, 4100), "larger than 16777216")])
def test_the_header_decides_before_any_pixel_is_decoded(size, words):
    with pytest.raises(ImageError, match=words):
        decode_image(header_only(*size))
    # the same cut file within the budget is only found broken when its pixels are decoded
    with pytest.raises(ImageError, match="not a decodable image"):
        decode_image(header_only(64, 64))


@pytest.mark.parametrize("fmt, params, accepted", [
    ("PNG", {}, True), ("JPEG", {}, True), ("WEBP", {}, True),
    ("GIF", {"save_all": True, "append_images": [Image.new("RGB", (32, 32), "blue")]}, True),  # animated
    ("TIFF", {}, False), ("BMP", {}, False), ("ICO", {"sizes": [(32, 32)]}, False)])
def test_png_jpeg_webp_and_the_first_frame_of_a_gif_are_accepted_other_formats_refused_by_name(fmt, params, accepted):
    data = encoded(Image.new("RGB", (32, 32), "red"), fmt, **params)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself reads every one of them
    if accepted:
        red, green, blue = decode_image(data).convert("RGB").getpixel((0, 0))
        assert red > 200 and blue < 50  # the first frame (lossy formats shift the colour a little)
        Img2ImgPayload.model_validate(seed_payload(init_images=[b64(data)]))
    else:
        reason = refusals(seed_payload(init_images=[b64(data)]))[INIT]
        assert reason == f"{fmt} images are not accepted; send PNG, JPEG, WebP or GIF (its first frame)"


def test_eps_is_refused_and_never_reaches_ghostscript(monkeypatch):
    ran = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: ran.append(args))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nnewpath 0 0 moveto 32 32 lineto stroke\nshowpage\n"
    reason = refusals(seed_payload(init_images=[b64(eps)]))[INIT]
    assert reason.startswith("EPS images are not accepted")
    assert ran == []


def test_a_control_image_is_held_to_the_same_budget():
    tiff = b64(encoded(Image.new("RGB", (32, 32)), "TIFF"))
    unit = seed_payload()["alwayson_scripts"]["controlnet"]["args"][0]
    payload = seed_payload(alwayson_scripts={"controlnet": {"args": [{**unit, "image": tiff}]}})
    found = refusals(payload)
    assert "TIFF images are not accepted" in found["input.payload.alwayson_scripts.controlnet.args[0].image"]


# ---- nesting ---------------------------------------------------------------------------------------------------
def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("field, value", [
    ("script_args", [nested(600)]),
    ("comments", {"note": nested(20)}),
    ("override_settings", {"quicksettings_list": nested(20)}),  # an option whose value the runner ignores
])
def test_deep_nesting_is_refused_naming_the_field(field, value):
    assert refusals(seed_payload(**{field: value})) == {
        f"input.payload.{field}": "is nested more than 16 levels deep (lists and objects inside each other)"}
    # 16 levels in all (the script_args list itself is one) are accepted and echoed back as sent
    payload = Img2ImgPayload.model_validate(seed_payload(script_args=[nested(15)]))
    assert payload.parameters()["script_args"] == [nested(15)]


# ---- prompts ---------------------------------------------------------------------------------------------------
def test_a_prompt_longer_than_8192_characters_is_refused():
    assert refusals(seed_payload(negative_prompt="blurry, " * 1100)) == {
        "input.payload.negative_prompt": "is too long (at most 8192 characters)"}


def test_more_than_32_breaks_are_refused_and_32_accepted():
    assert refusals(seed_payload(prompt="a cat BREAK " * 33))["input.payload.prompt"].startswith(
        "has 33 BREAKs; at most 32")
    Img2ImgPayload.model_validate(seed_payload(prompt="a cat BREAK " * 32))


# ---- compute ---------------------------------------------------------------------------------------------------
def test_800_images_at_2048_squared_and_150_steps_are_refused_naming_the_payload():
    found = refusals(seed_payload(width=2048, height=2048, steps=150, batch_size=8, n_iter=100))
    assert found == {"input.payload": "asks for 503,316 megapixel-steps (2048x2048 pixels x 150 steps x 800 images), "
                                      "more than 10,000, the most one job may ask for; ask for fewer images, steps "
                                      "or pixels"}
    # 1024 x 1024 x 50 steps x 8 x 23 images = 9647 megapixel-steps: within
    Img2ImgPayload.model_validate(seed_payload(width=1024, height=1024, steps=50, batch_size=8, n_iter=23))
