"""The seed request (RunPod's A1111 img2img + ControlNet example) on the tiny models, as users send it."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from model_samples import DATA, png_bytes, seed_input

CANNY = DATA / "canny"


def within_one_pixel(a: np.ndarray, b: np.ndarray) -> float:
    """The share of a's edge pixels that have one of b's edge pixels among their 8 neighbours (or on them)."""
    near_b = cv2.dilate((b > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return float((near_b & (a > 0)).sum() / (a > 0).sum())


def test_the_seed_request_at_full_size(run):
    init = Image.open(CANNY / "seed_480x640.png").convert("RGB")
    result = run(seed_input(480, 640, image=init, seed=3445164620))

    # the picture, then the detect map (A1111 order), both at the requested size
    assert [im.size for im in result.images] == [(480, 640), (480, 640)]
    detect = np.asarray(result.images[1])
    assert (detect[:, :, 0] == detect[:, :, 2]).all() and set(np.unique(detect)) == {0, 255}
    # every edge where sd-webui-controlnet puts it for this unit (canny, 512, 75/75, Crop and Resize), and the other
    # way round; CN's map is thinner still (tests/unit/test_runner_canny.py)
    expected = np.asarray(Image.open(CANNY / "seed_480x640_canny_512_75_75.png"))
    assert within_one_pixel(detect[:, :, 0], expected) == 1.0 and within_one_pixel(expected, detect[:, :, 0]) == 1.0

    info = json.loads(result.info)
    assert info["seed"] == 3445164620 and (info["width"], info["height"]) == (480, 640)
    extra = info["extra_generation_params"]
    assert "diffusers_xl_canny_mid" in extra["ControlNet 0 substitute"]  # the mapping is said in the answer
    assert extra["Refiner"].startswith("sd_xl_refiner_1.0 [") and extra["Refiner switch at"] == 0.8
    assert result.parameters["init_images"] is None
    assert result.parameters["seed"] == -1 or result.parameters["seed"] == 3445164620

    # A1111's step count: t_enc = int(0.75 * 30) = 22 -> 23 DPM++ SDE steps = 45 model evaluations (2nd order),
    # the base up to the refiner's first index, the refiner from there to the end, nothing run twice
    (trace,) = result.trace["batches"]
    assert trace["order"] == 2 and trace["first"] == (30 - 23) * 2
    assert trace["base"] and trace["refiner"]
    assert trace["refiner"][0] == trace["stop"] == trace["base"][-1] + 1
    assert trace["base"] + trace["refiner"] == list(range(trace["first"], trace["first"] + 2 * 23 - 1))
    assert trace["controlnet_calls"] == [len(trace["base"])]  # ControlNet on every base evaluation, not the refiner

    # the PNG carries the infotext, as A1111 saves it
    png = Image.open(io.BytesIO(png_bytes(result.images[0])))
    assert png.text["parameters"] == info["infotexts"][0]
    assert "Seed: 3445164620" in png.text["parameters"]


def test_same_seed_same_bytes_other_seed_differs(run):
    request = seed_input(64, 64, seed=77, steps=12)
    first = png_bytes(run(request).images[0])
    again = png_bytes(run(request).images[0])
    other = png_bytes(run(seed_input(64, 64, seed=78, steps=12)).images[0])
    assert first == again
    assert other != first


def test_random_seed_is_reported(run):
    result = run(seed_input(64, 64, seed=-1, steps=4))
    info = json.loads(result.info)
    assert 0 <= info["seed"] <= 4294967293
    assert f"Seed: {info['seed']}," in info["infotexts"][0]
    assert result.parameters["seed"] == -1  # parameters echo the request as received


def test_without_the_catalog_mapping_the_seed_fails_naming_both_models(tiny_catalog_path, tmp_path):
    import yaml

    from img2img_runner.catalog import Catalog
    from img2img_runner.errors import classify
    from img2img_runner.execute import execute
    from img2img.api.exitcodes import ExitCode

    data = yaml.safe_load(tiny_catalog_path.read_text())
    del data["models"]["control_v11p_sd15_canny"]["substitutes"]
    catalog = Catalog.from_dict(data, base_dir=tiny_catalog_path.parent)
    with pytest.raises(Exception) as exc:
        execute(seed_input(64, 64), catalog)
    failure = classify(exc.value)
    assert failure.code == ExitCode.MODEL
    assert failure.field == "input.payload.alwayson_scripts.controlnet.args[0].model"
    assert "control_v11p_sd15_canny" in failure.message and "sd_xl_base_1.0" in failure.message
