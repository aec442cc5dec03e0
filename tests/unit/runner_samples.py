"""Sample requests and catalogs for the runner's pure tests (no torch)."""

from __future__ import annotations

import base64
import copy
import io
import json
import random
from pathlib import Path

import yaml
from PIL import Image, ImageDraw

DATA = Path(__file__).resolve().parents[1] / "data"


def png_b64(width: int = 64, height: int = 64) -> str:
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).rectangle((width // 4, height // 4, width * 3 // 4, height * 3 // 4), outline="black",
                                    width=3)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def seed_input(**payload_changes) -> dict:
    """The seed request's ``input`` with a real image, and ``payload_changes`` applied (None deletes a key)."""
    request = json.loads((DATA / "seed_request.json").read_text())["input"]
    request = copy.deepcopy(request)
    request["payload"]["init_images"] = [png_b64()]
    for key, value in payload_changes.items():
        if value is None:
            request["payload"].pop(key, None)
        else:
            request["payload"][key] = value
    return request


def seed_payload(**payload_changes):
    from img2img.api.envelope import RunPodInput

    return RunPodInput.model_validate(seed_input(**payload_changes)).payload


def txt2img_payload(**payload):
    """A /sdapi/v1/txt2img payload on the tiny SDXL base: the request's keys, A1111's defaults for the rest."""
    from img2img.api.envelope import RunPodInput

    payload = {"prompt": "a lighthouse at dusk", "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0"},
               **payload}
    return RunPodInput.model_validate({"api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"},
                                       "payload": payload}).payload


def tiny_catalog(**drop):
    """The tiny-model catalog as the builder writes it (fixed hashes), optionally without some keys per entry."""
    from img2img_runner.catalog import Catalog
    from img2img_runner.tiny_models import catalog_yaml

    names = ["sd_xl_base_1.0", "sd_xl_refiner_1.0", "sdxl_vae.safetensors", "diffusers_xl_canny_mid",
             "control_v11p_sd15_canny", "v1-5-pruned-emaonly", "deliberate_v2", "sdxl-vae-fp16-fix.safetensors",
             "sd-v1-5-inpainting", "sd_xl_base_1.0_inpainting_0.1"]
    hashes = {n: f"{i:02d}aabbccdd" for i, n in enumerate(names)}
    data = yaml.safe_load(catalog_yaml(hashes))
    for name, key in drop.items():
        data["models"][name.replace("__", ".")].pop(key)
    return Catalog.from_dict(data, base_dir="/models", cache_dir="/tmp/unused")


def plan_for(payload, catalog=None, *, seed: int = 1234, sizes=None, inpainting=None):
    from img2img_runner.plan import ImageSizes, make_plan

    catalog = catalog or tiny_catalog()
    models = catalog.resolve_payload(payload)
    sizes = sizes or ImageSizes(init=((64, 64),) * len(payload.init_images_sent),
                                units={i: (64, 64) for i, u in enumerate(payload.controlnet_units) if u.image})
    return make_plan(payload, models, sizes, random.Random(seed), inpainting)
