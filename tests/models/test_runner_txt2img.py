"""``/sdapi/v1/txt2img`` on the tiny models through the runner's real path: sizes and counts with and without the
hires fix, the steps each pass runs (A1111's arithmetic, worked out by hand in the comments), the answer's shape,
determinism, ControlNet and the refiner.

The first pass runs ``steps`` steps from noise (DDIM/PLMS: one from each timestep of A1111's grid range(0, 1000,
1000 // steps) + 1 but the lowest). The hires pass is img2img given a step count n (hr_second_pass_steps, else
steps): A1111's setup_img2img_steps runs n steps (t_enc = n - 1) over a schedule of int(n / denoising_strength).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_samples import b64, canny_unit, picture, png_bytes

SDXL = {"sd_model_checkpoint": "sd_xl_base_1.0"}
SD15 = {"sd_model_checkpoint": "v1-5-pruned-emaonly"}


def txt2img(width: int = 64, height: int = 64, **payload) -> dict:
    return {"api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"},
            "payload": {"prompt": "a lighthouse at dusk", "steps": 4, "width": width, "height": height, "seed": 3,
                        "override_settings": SDXL, **payload}}


def unit_with_image(**changes) -> dict:
    return canny_unit(image=b64(picture(64, 64)), **changes)


def sizes(result) -> list[tuple[int, int]]:
    return [im.size for im in result.images]


@pytest.mark.parametrize("width, height, hires, expected", [
    (96, 64, {}, (96, 64)),
    (64, 64, dict(hr_scale=1.5), (96, 96)),  # int(64 * 1.5) = 96
    # 128 x 96 from 64 x 64: full width, 128 high, 32 // 8 = 4 cells cut: 96
    (64, 64, dict(hr_resize_x=128, hr_resize_y=96), (128, 96)),
    # 128 x 104: 24 // 8 = 3 cells cut, one at the top and two at the bottom
    (64, 64, dict(hr_resize_x=128, hr_resize_y=104), (128, 104)),
    (96, 64, dict(hr_resize_y=128), (192, 128)),  # only the height: 128 * 96 // 64 = 192 wide
    (64, 64, dict(hr_scale=1.5, hr_upscaler="Lanczos"), (96, 96)),  # decoded, resized, encoded again
    (64, 64, dict(hr_scale=1.5, hr_upscaler="Latent (nearest-exact)"), (96, 96)),
])
def test_sizes_and_counts_with_and_without_hires(run, width, height, hires, expected):
    enable = {"enable_hr": True, **hires} if hires else {}
    result = run(txt2img(width, height, batch_size=2, n_iter=2, **enable))
    assert result.generated == 4 and sizes(result) == [expected] * 4
    info = json.loads(result.info)
    assert (info["width"], info["height"]) == (width, height)  # A1111 reports the first pass's size
    assert all(f"Size: {width}x{height}," in text for text in info["infotexts"])


@pytest.mark.parametrize("payload, first, hires", [
    (dict(steps=6), list(range(6)), None),
    # second pass: 6 steps over int(6 / 0.5) = 12: indices 6..11
    (dict(steps=6, enable_hr=True, denoising_strength=0.5), list(range(6)), list(range(6, 12))),
    # Heun, 3 steps: 2 evaluations a step, the last an Euler step: 5; hr 2 steps at 0.6: int(2 / 0.6) = 3,
    # from index 1 of 3, 3 evaluations from 2 * 1
    (dict(sampler_name="Heun", steps=3, enable_hr=True, hr_second_pass_steps=2, denoising_strength=0.6),
     list(range(5)), [2, 3, 4]),
    # DDIM 5 steps: 1, 201, 401, 601, 801: 4 steps; hr 4 at 0.5: 8 steps, t_enc 3, 2 steps from index 8 - 3 = 5
    (dict(sampler_name="DDIM", steps=5, enable_hr=True, hr_second_pass_steps=4, denoising_strength=0.5),
     list(range(4)), [5, 6]),
    # DDIM 6 steps: 1, 167, ..., 831, 997: 6 steps, from 997
    (dict(sampler_name="DDIM", steps=6), list(range(6)), None),
    # PLMS 4 steps: 1, 251, 501, 751: 3 steps, the first evaluating twice
    (dict(sampler_name="PLMS", steps=4), list(range(4)), None),
    # another sampler for the second pass: DPM++ 2M, 5 steps at 0.75: int(5 / 0.75) = 6, from index 1
    (dict(steps=4, enable_hr=True, hr_sampler_name="DPM++ 2M", hr_second_pass_steps=5), list(range(4)),
     [1, 2, 3, 4, 5]),
])
def test_executed_steps_follow_a1111(run, payload, first, hires):
    progress = []
    result = run(txt2img(**payload), on_step=lambda k, n: progress.append((k, n)))
    (trace,) = result.trace["batches"]
    assert trace["base"] == first
    assert (trace.get("hires") or {}).get("base") == hires
    total = progress[-1][1]
    assert progress[-1] == (total, total) and f"Steps: {payload['steps']}," in result.infotexts[0]


def test_ddim_runs_a1111s_timesteps_from_the_top_of_its_grid(run, catalog, model_cache):
    entry = catalog.resolve(checkpoint="v1-5-pruned-emaonly", vae=None, refiner=None, controlnets=[]).checkpoint
    unet = model_cache.checkpoint(entry)["unet"]
    seen: list[int] = []
    handle = unet.register_forward_pre_hook(lambda module, args, kwargs: seen.append(int(args[1])), with_kwargs=True)
    try:
        run(txt2img(sampler_name="DDIM", steps=6, cfg_scale=1, override_settings=SD15))
    finally:
        handle.remove()
    assert seen == [997, 831, 665, 499, 333, 167]  # none from 1: A1111's loop stops above it


def test_the_answer_is_a1111_shaped(run):
    result = run(txt2img(enable_hr=True, hr_scale=1.5, hr_second_pass_steps=3, hr_prompt="a lighthouse in fog",
                         denoising_strength=0.6))
    info = json.loads(result.info)
    assert info["seed"] == 3 and info["all_seeds"] == [3] and info["steps"] == 4
    assert info["denoising_strength"] == 0.6 and info["sampler_name"] == "Euler"
    assert list(info["extra_generation_params"]) == ["Denoising strength", "Hires prompt", "Hires negative prompt",
                                                     "Hires schedule type", "Hires upscale", "Hires steps"]
    (text,) = info["infotexts"]
    assert ("Denoising strength: 0.6, RNG: CPU, Hires prompt: a lighthouse in fog, Hires upscale: 1.5, "
            "Hires steps: 3, Version: v1.10.1") in text
    assert result.images[0].info["parameters"] == text
    assert "init_images" not in result.parameters and result.parameters["enable_hr"] is True


@pytest.mark.parametrize("payload", [dict(), dict(enable_hr=True, hr_upscaler="Nearest", sampler_name="Euler a")])
def test_the_same_seed_gives_the_same_bytes(run, payload):
    first = run(txt2img(**payload))
    again = run(txt2img(**payload))
    other = run(txt2img(**{**payload, "seed": 4}))
    assert png_bytes(first.images[0]) == png_bytes(again.images[0])
    assert not np.array_equal(np.asarray(first.images[0]), np.asarray(other.images[0]))


def test_a_batch_image_is_the_picture_of_its_seed_alone(run):
    batch = run(txt2img(batch_size=2, seed=10, enable_hr=True))
    alone = run(txt2img(seed=11, enable_hr=True))
    assert np.abs(np.asarray(batch.images[1]).astype(int) - np.asarray(alone.images[0]).astype(int)).max() <= 2


def test_controlnet_on_txt2img_takes_the_units_own_image(run):
    plain = run(txt2img(steps=3))
    controlled = run(txt2img(steps=3, alwayson_scripts={"controlnet": {"args": [unit_with_image()]}}))
    assert sizes(controlled) == [(64, 64), (64, 64)]  # the picture, then the unit's detect map
    detect = np.asarray(controlled.images[1])
    assert set(np.unique(detect)) <= {0, 255} and detect.mean() > 2  # the canny map of the unit's image
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(controlled.images[0]))
    assert controlled.trace["batches"][0]["controlnet_calls"] == [3]
    assert "ControlNet 0: " in controlled.infotexts[0]


def test_controlnet_with_hires_runs_in_the_passes_hr_option_names_and_returns_both_maps(run):
    units = [unit_with_image(), unit_with_image(hr_option="Low res only")]
    result = run(txt2img(steps=3, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2, override_settings=SD15,
                         alwayson_scripts={"controlnet": {"args": units}}))
    # the picture, then per unit the second pass's map and the first's (sd-webui-controlnet's order)
    assert sizes(result) == [(96, 96), (96, 96), (64, 64), (96, 96), (64, 64)]
    (trace,) = result.trace["batches"]
    assert trace["controlnet_calls"] == [3, 3] and trace["hires"]["controlnet_calls"] == [2]


def test_the_refiner_takes_over_txt2img_where_it_switches(run):
    result = run(txt2img(steps=6, refiner_checkpoint="sd_xl_refiner_1.0", refiner_switch_at=0.5))
    (trace,) = result.trace["batches"]
    assert trace["base"] and trace["refiner"] and trace["refiner"][0] == trace["base"][-1] + 1 == trace["stop"]
    assert trace["base"] + trace["refiner"] == list(range(6))  # one schedule, split between the two
    assert "Refiner: sd_xl_refiner_1.0" in result.infotexts[0] and "Refiner switch at: 0.5" in result.infotexts[0]


def test_with_hires_the_refiner_runs_in_the_second_pass_only(run):
    result = run(txt2img(steps=4, enable_hr=True, hr_second_pass_steps=4, refiner_checkpoint="sd_xl_refiner_1.0",
                         refiner_switch_at=0.5))
    (trace,) = result.trace["batches"]
    assert trace["base"] == [0, 1, 2, 3] and "refiner" not in trace
    hires = trace["hires"]
    # 4 steps over int(4 / 0.75) = 5, from index 1; the refiner from the switch on
    assert hires["base"] + hires["refiner"] == [1, 2, 3, 4] and hires["refiner"]
    assert sizes(result) == [(128, 128)] and "Refiner: sd_xl_refiner_1.0" in result.infotexts[0]


@pytest.mark.parametrize("checkpoint", ["sd-v1-5-inpainting", "sd_xl_base_1.0_inpainting_0.1"])
def test_an_inpainting_checkpoint_is_refused_by_name(run, checkpoint):
    from img2img_runner.catalog import ModelError

    with pytest.raises(ModelError) as exc:
        run(txt2img(override_settings={"sd_model_checkpoint": checkpoint}))
    assert exc.value.field == "override_settings.sd_model_checkpoint"
    assert f"{checkpoint!r} is an inpainting checkpoint" in str(exc.value) and "txt2img" in str(exc.value)


def test_upscalers_are_different_paths(run):
    # (at 1.5x "Lanczos" is "None": one LANCZOS resize from 64 to 96 either way, as in A1111)
    pictures = [np.asarray(run(txt2img(enable_hr=True, hr_scale=1.5, hr_upscaler=name)).images[0])
                for name in ("Latent", "Latent (nearest)", "None", "Nearest")]
    assert all(not np.array_equal(a, b) for i, a in enumerate(pictures) for b in pictures[i + 1:])


def test_with_hires_the_prompts_lora_runs_and_its_tags_are_no_text_in_either_pass(run):
    hires = dict(enable_hr=True, hr_scale=1.5, hr_second_pass_steps=3)
    plain = run(txt2img(prompt="a lighthouse", hr_prompt="a lighthouse in a storm", **hires))
    zero = run(txt2img(prompt="a lighthouse<lora:tiny_lora:0>", hr_prompt="a lighthouse in a storm<lora:tiny_lora:0>",
                       **hires))
    assert zero.images[0].tobytes() == plain.images[0].tobytes()
    lora = run(txt2img(prompt="a lighthouse<lora:tiny_lora:1>", hr_prompt="a lighthouse in a storm<lora:tiny_lora:1>",
                       **hires))
    difference = np.abs(np.asarray(lora.images[0], dtype=np.int16) - np.asarray(plain.images[0], dtype=np.int16))
    assert difference.mean() > 1 and 'Lora hashes: "tiny_lora: ' in lora.infotexts[0]
