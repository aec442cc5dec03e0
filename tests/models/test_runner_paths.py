"""The paths a request can take through the runner, on the tiny models: batches, SDXL/SD 1.5 with and without
ControlNet, several units, preprocessors other than canny, and the ones that cannot run here."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from model_samples import canny_unit, picture, png_bytes, sd15_input

FAST = dict(steps=4, denoising_strength=0.5)  # Euler: int(0.5 * 4) + 1 = 3 evaluations


def failure_of(run, job_input):
    from img2img_runner.errors import classify

    with pytest.raises(Exception) as exc:
        run(job_input)
    return classify(exc.value)


def png_text(image: Image.Image) -> dict[str, str]:
    return dict(Image.open(io.BytesIO(png_bytes(image))).text)


def distinct(arrays) -> bool:
    return all(not np.array_equal(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:])


def test_batch_size_times_n_iter_gives_every_image_with_consecutive_seeds_then_the_detect_map(run):
    canny = {"controlnet": {"args": [canny_unit()]}}
    result = run(sd15_input(batch_size=2, n_iter=2, seed=1000, alwayson_scripts=canny, **FAST))

    assert len(result.images) == 5 and result.generated == 4  # 2 x 2 pictures, then the one unit's detect map
    assert all(im.size == (64, 64) for im in result.images)
    pictures = [np.asarray(im) for im in result.images[:4]]
    assert distinct(pictures)  # four samplings, not one picture repeated
    detect = np.asarray(result.images[4])
    assert set(np.unique(detect)) <= {0, 255} and detect.mean() > 2  # a canny map, not a fifth picture

    info = json.loads(result.info)
    assert info["seed"] == 1000 and info["all_seeds"] == [1000, 1001, 1002, 1003]
    assert info["batch_size"] == 2 and len(info["infotexts"]) == 4
    for i, (image, text) in enumerate(zip(result.images, info["infotexts"])):
        assert f"Seed: {1000 + i}," in text
        assert png_text(image)["parameters"] == text  # each PNG carries its own infotext
    assert "parameters" not in png_text(result.images[4])  # the detect map has none, as in A1111

    # the same seed alone gives the same picture as its place in the batch: seeds are per image, not per batch
    alone = run(sd15_input(seed=1002, alwayson_scripts=canny, **FAST))
    assert np.abs(np.asarray(alone.images[0]).astype(int) - pictures[2]).max() <= 2


def test_enable_pnginfo_false_leaves_the_infotext_out_of_the_file_but_not_out_of_info(run):
    result = run(sd15_input(override_settings={"sd_model_checkpoint": "v1-5-pruned-emaonly", "enable_pnginfo": False},
                            **FAST))
    assert "parameters" not in png_text(result.images[0])
    assert json.loads(result.info)["infotexts"][0].startswith(result.plan.all_prompts[0])


def test_sdxl_without_controlnet_or_refiner_gives_width_by_height(run):
    result = run(sd15_input(96, 64, image=picture(80, 80), override_settings={"sd_model_checkpoint": "sd_xl_base_1.0"},
                            **FAST))

    assert [im.size for im in result.images] == [(96, 64)]
    info = json.loads(result.info)
    assert (info["width"], info["height"]) == (96, 64) and info["sd_model_name"] == "sd_xl_base_1.0"
    text = result.infotexts[0]
    assert "Size: 96x64," in text and "Model: sd_xl_base_1.0," in text
    assert "Refiner" not in text and "ControlNet" not in text
    assert result.trace["batches"][0].get("refiner") is None
    assert png_text(result.images[0])["parameters"] == text


def test_sd15_runs_with_and_without_a_controlnet_and_the_controlnet_changes_the_picture(run):
    plain = run(sd15_input(seed=5, **FAST))
    controlled = run(sd15_input(seed=5, alwayson_scripts={"controlnet": {"args": [canny_unit()]}}, **FAST))

    assert [im.size for im in plain.images] == [(64, 64)]
    assert "ControlNet" not in plain.infotexts[0]
    assert [im.size for im in controlled.images] == [(64, 64), (64, 64)]
    extra = json.loads(controlled.info)["extra_generation_params"]
    assert "Model: control_v11p_sd15_canny" in extra["ControlNet 0"] and "Module: canny" in extra["ControlNet 0"]
    assert "ControlNet 0 substitute" not in extra  # an SD 1.5 ControlNet under SD 1.5 runs as named
    assert "Model: v1-5-pruned-emaonly," in controlled.infotexts[0]
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(controlled.images[0]))


def test_two_units_give_two_detect_maps_in_unit_order(run):
    init = picture(64, 64)
    units = [canny_unit(), {"enabled": False, "module": "canny", "model": "control_v11p_sd15_canny"},
             canny_unit(module="invert", weight=0.5)]
    result = run(sd15_input(image=init, seed=9, alwayson_scripts={"controlnet": {"args": units}}, **FAST))

    # the picture, then one map per *enabled* unit, in the order the units were sent
    assert len(result.images) == 3 and result.generated == 1
    canny_map, invert_map = (np.asarray(im) for im in result.images[1:])
    assert set(np.unique(canny_map)) <= {0, 255} and canny_map.mean() > 2
    assert np.array_equal(invert_map, 255 - np.asarray(init))
    extra = json.loads(result.info)["extra_generation_params"]
    units_said = [v for k, v in extra.items() if k.startswith("ControlNet ")]
    assert len(units_said) == 2
    assert "Module: canny" in units_said[0] and "Module: invert" in units_said[1]


@pytest.mark.parametrize("module", ["lineart_standard", "shuffle", "scribble_xdog", "threshold"])
def test_a_preprocessor_without_weights_makes_its_own_detect_map(run, module):
    init = picture(64, 64)
    unit = canny_unit(module=module, threshold_a=100 if module == "threshold" else 32)
    result = run(sd15_input(image=init, seed=4, alwayson_scripts={"controlnet": {"args": [unit]}}, **FAST))
    reference = run(sd15_input(image=init, seed=4, alwayson_scripts={"controlnet": {"args": [canny_unit()]}}, **FAST))

    detect = np.asarray(result.images[1])
    assert detect.shape == (64, 64, 3) and detect.std() > 5  # a map with structure, not a blank
    assert not np.array_equal(detect, np.asarray(reference.images[1]))  # not canny's map
    assert not np.array_equal(detect, np.asarray(init))  # not the input passed through
    assert f"Module: {module}" in json.loads(result.info)["extra_generation_params"]["ControlNet 0"]


def test_a_preprocessor_needing_weights_the_catalog_lacks_fails_naming_module_and_file(run):
    from img2img.api.exitcodes import ExitCode

    unit = canny_unit(module="depth", model="control_v11p_sd15_canny")
    failure = failure_of(run, sd15_input(alwayson_scripts={"controlnet": {"args": [canny_unit(), unit]}}, **FAST))

    assert failure.code == ExitCode.MODEL
    assert failure.field == "input.payload.alwayson_scripts.controlnet.args[1].module"
    assert "'depth'" in failure.message and "dpt_hybrid-midas-501f0c75.pt" in failure.message
    assert "annotator" in failure.message


@pytest.mark.parametrize("module, reason", [
    ("depth_anything", "no controlnet-aux detector"),
    ("reference_only", "not supported"),
    ("no_such_preprocessor", "unknown preprocessor"),
])
def test_a_preprocessor_the_runner_cannot_run_is_bad_input(run, module, reason):
    from img2img.api.exitcodes import ExitCode

    failure = failure_of(run, sd15_input(alwayson_scripts={"controlnet": {"args": [canny_unit(module=module)]}},
                                         **FAST))
    assert failure.code == ExitCode.BAD_INPUT
    assert failure.field == "input.payload.alwayson_scripts.controlnet.args[0].module"
    assert module in failure.message and reason in failure.message
