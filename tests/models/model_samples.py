"""Requests for the model tests: the seed request with a real picture, at a small size unless asked otherwise."""

from __future__ import annotations

import base64
import copy
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DATA = Path(__file__).resolve().parents[1] / "data"


def picture(width: int, height: int) -> Image.Image:
    """Shapes with hard edges (Canny finds them) and some texture."""
    image = Image.new("RGB", (width, height), (200, 220, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 5, height // 4, width * 3 // 5, height * 3 // 4), fill=(150, 90, 40))
    draw.ellipse((width // 2, height // 8, width * 9 // 10, height // 2), fill=(240, 240, 90))
    draw.line((0, height - 5, width, height // 2), fill=(20, 20, 20), width=max(1, width // 40))
    noise = np.random.default_rng(0).integers(0, 12, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(np.clip(np.asarray(image).astype(int) + noise, 0, 255).astype(np.uint8))


def b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def seed_input(width: int = 64, height: int = 64, image: Image.Image | None = None, **changes) -> dict:
    """The seed request's ``input`` (verbatim but for the image and ``changes``; None deletes a key)."""
    request = copy.deepcopy(json.loads((DATA / "seed_request.json").read_text())["input"])
    payload = request["payload"]
    payload["init_images"] = [b64(image or picture(width, height))]
    payload["width"], payload["height"] = width, height
    for key, value in changes.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return request


def sd15_input(width: int = 64, height: int = 64, **changes) -> dict:
    """An SD 1.5 request without ControlNet or refiner, few steps."""
    base = dict(override_settings={"sd_model_checkpoint": "v1-5-pruned-emaonly"}, refiner_checkpoint=None,
                refiner_switch_at=None, alwayson_scripts={}, steps=8, sampler_name="Euler", sampler_index=None,
                scheduler=None, seed=1)
    base.update(changes)
    return seed_input(width, height, **base)


def canny_unit(**changes) -> dict:
    unit = {"module": "canny", "model": "control_v11p_sd15_canny", "weight": 1, "resize_mode": "Crop and Resize",
            "processor_res": 64, "threshold_a": 75, "threshold_b": 75, "guidance_start": 0, "guidance_end": 1,
            "control_mode": "Balanced", "pixel_perfect": False}
    unit.update(changes)
    return unit


def png_bytes(image: Image.Image) -> bytes:
    from img2img_runner.storage import image_bytes as encode

    return encode(image)
