"""Sample jobs for the job-API tests: the seed request (verbatim) with a real image in place of its placeholder."""

from __future__ import annotations

import base64
import copy
import io
import json
from pathlib import Path

from PIL import Image, ImageDraw

DATA = Path(__file__).resolve().parents[1] / "data"
SEED_PLACEHOLDER = "base64 encoded image content"


def png_b64(width: int = 64, height: int = 64) -> str:
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).ellipse((width // 6, height // 6, width * 5 // 6, height * 5 // 6), outline="black",
                                  width=3)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


PNG = png_b64()


def seed_request_verbatim() -> dict:
    return json.loads((DATA / "seed_request.json").read_text())


def seed_request(image: str = PNG) -> dict:
    """The seed request exactly as users send it, the placeholder string replaced by a real 64x64 PNG."""
    request = seed_request_verbatim()
    assert request["input"]["payload"]["init_images"] == [SEED_PLACEHOLDER]
    request["input"]["payload"]["init_images"] = [image]
    return request


def seed_payload(**changes) -> dict:
    payload = copy.deepcopy(seed_request()["input"]["payload"])
    payload.update(changes)
    return payload


def seed_unit(**changes) -> dict:
    unit = dict(seed_request()["input"]["payload"]["alwayson_scripts"]["controlnet"]["args"][0])
    unit.update(changes)
    return unit


def manifest(spec_changes: dict | None = None, name: str = "seed") -> dict:
    return {"apiVersion": "img2img.dev/v1alpha1", "kind": "Img2ImgJob", "metadata": {"name": name},
            "spec": {"input": seed_request()["input"], **(spec_changes or {})}}
