"""The runner's plan: A1111's decisions (seeds, batches, step counts, refiner, ControlNet units) as data."""

from __future__ import annotations

import random

import pytest

from runner_samples import plan_for, png_b64, seed_payload, tiny_catalog, txt2img_payload

from img2img.api.samplers import scheduler_spec
from img2img_runner.plan import (
    SEED_RANGE,
    ImageSizes,
    fixed_seed,
    guidance_window,
    img2img_steps,
    pixel_perfect_resolution,
    soft_injection_scales,
)


# --- seeds and batches -------------------------------------------------------------------------------------


def test_seed_minus_one_draws_from_a1111s_range_with_pythons_random():
    rng = random.Random(7)
    expected = random.Random(7).randrange(4294967294)
    assert fixed_seed(-1, rng) == expected
    assert SEED_RANGE == 4294967294  # randrange excludes it: the largest seed is 4294967293
    draws = [fixed_seed(-1, random.Random(i)) for i in range(200)]
    assert all(0 <= d <= 4294967293 for d in draws)
    assert fixed_seed(5, rng) == 5


def test_batch_size_times_n_iter_images_with_consecutive_seeds():
    plan = plan_for(seed_payload(seed=1000, subseed=50, batch_size=2, n_iter=2))
    assert plan.all_seeds == (1000, 1001, 1002, 1003)
    assert plan.all_subseeds == (50, 51, 52, 53)
    assert [b.seeds for b in plan.batches] == [(1000, 1001), (1002, 1003)]
    assert [b.index for b in plan.batches] == [0, 1]
    assert plan.all_prompts == ("an astronaut riding a horse",) * 4
    assert plan.images == 4


def test_random_seed_and_subseed_are_drawn_once_per_job():
    plan = plan_for(seed_payload(seed=-1, batch_size=3), seed=99)
    rng = random.Random(99)
    seed, subseed = rng.randrange(SEED_RANGE), rng.randrange(SEED_RANGE)
    assert plan.seed == seed and plan.all_seeds == (seed, seed + 1, seed + 2)
    assert plan.subseed == subseed


def test_several_init_images_set_the_batch_size_as_a1111_does():
    payload = seed_payload(batch_size=3, n_iter=1)
    payload.init_images.append(payload.init_images[0])
    plan = plan_for(payload, sizes=ImageSizes(init=((64, 64), (64, 64))))
    assert plan.batch_size == 2
    assert plan.batches[0].init_image_indices == (0, 1)


# --- steps ---------------------------------------------------------------------------------------------------


EULER, DDIM, PLMS, HEUN = (scheduler_spec(name, "Automatic") for name in ("Euler", "DDIM", "PLMS", "Heun"))


@pytest.mark.parametrize("steps, ds, spec, executed, first", [
    (30, 0.75, EULER, 23, 7),  # t_enc = 22, k-diffusion runs t_enc + 1 from sigmas[30 - 23]
    (20, 0.5, EULER, 11, 9),
    (30, 1.0, EULER, 30, 0),  # min(ds, 0.999): t_enc = 29
    (10, 0.0, EULER, 1, 9),  # k-diffusion still runs one step at the lowest sigma
    (7, 0.33, EULER, 3, 4),
    # DDIM/PLMS: noised to timesteps[t_enc], steps from timesteps[t_enc - 1] down to timesteps[1]: t_enc - 1 steps
    (30, 0.75, DDIM, 21, 8),
    (6, 0.75, DDIM, 3, 2),  # timesteps 1, 167, 333, 499, 665, 831: noise at 665, steps at 499, 333, 167
    (6, 0.75, PLMS, 3, 2),
])
def test_a1111_img2img_step_count(steps, ds, spec, executed, first):
    result = img2img_steps(steps, ds, spec)
    assert result.executed == executed
    assert result.schedule == steps
    assert result.first_index == first


def test_model_evaluations_and_the_step_each_belongs_to():
    heun = img2img_steps(10, 0.5, HEUN)  # 6 steps, the last an Euler step: 11 evaluations
    assert heun.evaluations == 11 and [heun.step_of(j) for j in (0, 1, 2, 10)] == [0, 0, 1, 5]
    plms = img2img_steps(6, 0.75, PLMS)  # 3 steps, the first evaluating twice
    assert plms.evaluations == 4 and [plms.step_of(j) for j in range(4)] == [0, 0, 1, 2]
    assert img2img_steps(6, 0.75, DDIM).evaluations == 3


def test_img2img_fix_steps_stretches_the_schedule():
    result = img2img_steps(20, 0.5, EULER, fix_steps=True)
    assert (result.schedule, result.executed, result.first_index) == (40, 20, 20)


def test_plan_uses_the_samplers_rule():
    assert plan_for(seed_payload(sampler_name="DDIM", scheduler=None, steps=30, refiner_checkpoint=None)
                    ).steps.executed == 21
    assert plan_for(seed_payload(sampler_name="Euler", scheduler=None, steps=30)).steps.executed == 23


@pytest.mark.parametrize("steps, ds, start, end, window", [
    # 10 steps at 0.5: t_enc 5, 6 steps; CN's progress while step i runs: max(i - 1, 0) / 6
    (10, 0.5, 0.0, 1.0, (True,) * 6),
    (10, 0.5, 0.0, 0.5, (True, True, True, True, True, False)),  # progress 0, 0, 1/6, 2/6, 3/6, then 4/6 > 0.5
    (10, 0.5, 0.2, 1.0, (False, False, False, True, True, True)),  # 2/6 is the first at or past 0.2
    (10, 0.5, 0.0, 0.0, (True, True, False, False, False, False)),  # the first two steps both read progress 0
])
def test_controlnet_guidance_window_as_sd_webui_controlnet_reads_it(steps, ds, start, end, window):
    assert guidance_window(start, end, img2img_steps(steps, ds, EULER)) == window


# --- sizes, clip skip, sampler -------------------------------------------------------------------------------


def test_size_is_reported_as_requested_and_rendered_at_a_multiple_of_8():
    plan = plan_for(seed_payload(width=484, height=643))
    assert (plan.width, plan.height) == (484, 643)
    assert (plan.run_width, plan.run_height) == (480, 640)


def test_a_trailing_prompt_weight_multiplies_the_guidance_and_leaves_the_text():
    # A1111's composable prompt weight: "a cat:1.5" is the text "a cat" at 1.5 x CFG (info keeps both as sent)
    plan = plan_for(seed_payload(prompt="an astronaut riding a horse:1.5", cfg_scale=6))
    assert (plan.prompt_text, plan.guidance_scale, plan.cfg_scale) == ("an astronaut riding a horse", 9.0, 6.0)
    assert plan.all_prompts[0] == "an astronaut riding a horse:1.5"
    plain = plan_for(seed_payload(prompt="an (astronaut:1.5)", cfg_scale=6))
    assert (plain.prompt_text, plain.guidance_scale) == ("an (astronaut:1.5)", 6.0)


def test_seed_request_sampler_and_schedule():
    plan = plan_for(seed_payload())
    assert (plan.sampler, plan.schedule) == ("DPM++ SDE", "Karras")
    assert plan.scheduler.class_name == "DPMSolverSDEScheduler"
    assert list(plan.extra_generation_params) == ["ControlNet 0", "ControlNet 0 substitute", "Denoising strength",
                                                   "Schedule type"]


# --- refiner ------------------------------------------------------------------------------------------------


def test_refiner_switch():
    assert plan_for(seed_payload()).refiner.switch_at == 0.8
    assert plan_for(seed_payload(refiner_switch_at=None)).refiner.switch_at is None  # A1111: refiner from step 1
    assert plan_for(seed_payload(refiner_switch_at=1.0)).refiner is None  # the ratio never reaches 1: no switch
    assert plan_for(seed_payload(refiner_checkpoint="None")).refiner is None
    assert plan_for(seed_payload(refiner_checkpoint="sd_xl_base_1.0")).refiner is None  # already that model


# --- ControlNet units ----------------------------------------------------------------------------------------


def _unit(**changes):
    unit = {"module": "canny", "model": "diffusers_xl_canny_mid", "weight": 1, "resize_mode": "Crop and Resize",
            "processor_res": 512, "threshold_a": 75, "threshold_b": 75, "guidance_start": 0, "guidance_end": 1,
            "control_mode": "Balanced", "pixel_perfect": False}
    unit.update(changes)
    return unit


def _units(*units):
    return {"controlnet": {"args": list(units)}}


@pytest.mark.parametrize("mode, soft, cfg", [
    ("Balanced", False, False),
    ("My prompt is more important", True, False),
    ("ControlNet is more important", True, True),
    (2, True, True),  # pre-2024 CN integers
])
def test_control_modes(mode, soft, cfg):
    (unit,) = plan_for(seed_payload(alwayson_scripts=_units(_unit(control_mode=mode)))).units
    assert (unit.soft_injection, unit.cfg_injection) == (soft, cfg)


def test_out_of_range_values_take_the_preprocessors_defaults():
    (unit,) = plan_for(seed_payload(alwayson_scripts=_units(
        _unit(processor_res=-1, threshold_a=-1, threshold_b=300)))).units
    assert unit.processor_res == 512
    assert (unit.threshold_a, unit.threshold_b) == (100, 200)  # canny defaults


def test_units_without_an_image_use_the_init_image_and_img2img_resize_mode():
    (unit,) = plan_for(seed_payload(resize_mode=2, alwayson_scripts=_units(_unit()))).units
    assert unit.image is None
    assert unit.resize_mode == "Resize and Fill"  # what the detect map is resized with
    assert unit.resize_mode_as_sent == "Crop and Resize"  # what the infotext shows


def test_pixel_perfect_resolution():
    # CN external_code: max of the scale factors (min for Resize and Fill) times the short side
    assert pixel_perfect_resolution((512, 512), (480, 640), "Crop and Resize") == 640
    assert pixel_perfect_resolution((512, 512), (480, 640), "Resize and Fill") == 480
    assert pixel_perfect_resolution((1000, 500), (512, 512), "Just Resize") == 512
    plan = plan_for(seed_payload(alwayson_scripts=_units(_unit(pixel_perfect=True))),
                    sizes=ImageSizes(init=((240, 320),)))
    (unit,) = plan.units
    assert unit.processor_res == 480 and unit.processor_res_info == 512


def test_pixel_perfect_reads_the_input_cut_to_the_inpainting_mask():
    # the init image is 1000x1000; cut to the mask it is 480x640, the generation's size: a 1:1 map
    payload = seed_payload(alwayson_scripts=_units(_unit(pixel_perfect=True)))
    whole = plan_for(payload, sizes=ImageSizes(init=((1000, 1000),)))
    cut = plan_for(payload, sizes=ImageSizes(init=((1000, 1000),), units={0: (480, 640)}))
    assert whole.units[0].processor_res == 640 and cut.units[0].processor_res == 480


def test_the_masks_infotext_entries_follow_the_denoising_strength():
    from img2img_runner.inpaint import Inpainting, MaskSettings

    mask = MaskSettings(blur_x=4, blur_y=4, round=True, fill=2, full_res=True, padding=32, invert=True)
    plan = plan_for(seed_payload(initial_noise_multiplier=0.9), inpainting=Inpainting(mask, crop=(0, 0, 480, 640)))
    assert list(plan.extra_generation_params.items())[2:] == [
        ("Denoising strength", 0.75), ("Mask mode", "Inpaint not masked"), ("Mask blur", 4),
        ("Inpaint area", "Only masked"), ("Masked area padding", 32), ("Masked content", "latent noise"),
        ("Noise multiplier", 0.9), ("Schedule type", "Karras")]


def test_disabled_units_are_skipped_and_indices_count_enabled_ones():
    plan = plan_for(seed_payload(alwayson_scripts=_units(
        _unit(enabled=False), _unit(module="invert"), _unit(module="canny", control_mode="Balanced"))))
    assert [(u.index, u.request_index, u.module) for u in plan.units] == [(0, 1, "invert"), (1, 2, "canny")]


def test_the_seed_units_sdxl_substitute_is_in_the_plan():
    (unit,) = plan_for(seed_payload()).units
    assert unit.controlnet.name == "diffusers_xl_canny_mid"
    assert unit.substituted_from.name == "control_v11p_sd15_canny"
    assert unit.model == "control_v11p_sd15_canny"
    assert unit.sent["weight"] == 1 and isinstance(unit.sent["weight"], int)  # as sent, for the legacy format


def test_soft_injection_scales_follow_cn():
    sd15 = soft_injection_scales(13)
    assert sd15[0] == pytest.approx(0.825 ** 12) and sd15[-1] == 1.0
    assert soft_injection_scales(10) == sd15[:10]  # SDXL: CN zips 10 residuals with the 13 scales
    assert len(soft_injection_scales(7)) == 7


def test_catalog_without_the_mapping_cannot_plan_the_seed():
    from img2img_runner.catalog import ModelError

    with pytest.raises(ModelError) as exc:
        plan_for(seed_payload(), tiny_catalog(control_v11p_sd15_canny="substitutes"))
    assert "control_v11p_sd15_canny" in str(exc.value) and "sd_xl_base_1.0" in str(exc.value)


@pytest.mark.parametrize("seed, subseed, expected", [
    (5, -1, 10),  # CN set_numpy_seed: seed + subseed, a subseed of -1 counting as the first image's seed
    (5, 7, 12),
    (4294967290, 10, (4294967290 + 10) & 0xFFFFFFFF),
])
def test_random_preprocessors_are_seeded_as_controlnet_seeds_numpy(seed, subseed, expected):
    assert plan_for(seed_payload(seed=seed, subseed=subseed)).preprocessor_seed == expected


# --- txt2img and its hires fix --------------------------------------------------------------------------------


def _image_unit(**changes):
    return _unit(image=png_b64(), **changes)


def test_txt2img_without_hires_is_one_pass_from_noise():
    plan = plan_for(txt2img_payload(steps=20, width=100, height=64, batch_size=3, n_iter=2, seed=7))
    (only,) = plan.passes
    assert only.from_noise and only.refiner and plan.hires is None
    assert (only.steps.executed, only.steps.first_index) == (20, 0)
    assert (only.run_width, only.run_height, only.size_condition) == (96, 64, (100, 64))
    assert plan.batch_size == 3 and plan.all_seeds == (7, 8, 9, 10, 11, 12)
    assert all(b.init_image_indices == () for b in plan.batches)
    assert plan.noise_multiplier == 1.0
    assert "Denoising strength" not in plan.extra_generation_params  # A1111 writes it for txt2img's hires fix only


def test_the_hires_pass_of_a_plan():
    plan = plan_for(txt2img_payload(steps=20, width=512, height=512, enable_hr=True, hr_resize_x=1024,
                                    hr_resize_y=768, hr_second_pass_steps=12, denoising_strength=0.35,
                                    hr_upscaler="Lanczos", hr_prompt="a lighthouse, storm:1.5", cfg_scale=4))
    first, second = plan.passes
    assert not first.refiner and second.refiner and not second.from_noise
    assert (first.run_width, first.run_height) == (512, 512)
    # 1024 x 1024 upscaled, 32 latent cells of height cut: 1024 x 768, conditioned on the upscale target
    assert (second.run_width, second.run_height, second.size_condition) == (1024, 768, (1024, 1024))
    # 12 steps over int(12 / 0.35) = 34: from index 22
    assert (second.steps.schedule, second.steps.executed, second.steps.first_index) == (34, 12, 22)
    assert plan.hires.latent_mode is None and plan.hires.upscaler == "Lanczos"
    assert (second.prompt_text, second.guidance_scale, first.guidance_scale) == ("a lighthouse, storm", 6.0, 4.0)
    assert (plan.width, plan.height) == (512, 512)  # A1111 reports the first pass's size


def test_hires_generation_params_in_a1111s_order():
    plan = plan_for(txt2img_payload(enable_hr=True, sampler_name="DDIM", hr_sampler_name="DPM++ 2M",
                                    hr_prompt="a lighthouse in fog", hr_second_pass_steps=10,
                                    hr_upscaler="Latent (nearest)", alwayson_scripts=_units(_image_unit())))
    extra = plan.extra_generation_params
    assert list(extra) == ["ControlNet 0", "Denoising strength", "Hires sampler", "Hires prompt",
                           "Hires negative prompt", "Hires schedule type", "Hires upscale", "Hires steps",
                           "Hires upscaler"]
    assert extra["Hires sampler"] == "DPM++ 2M" and extra["Hires prompt"] == "a lighthouse in fog"
    assert extra["Hires negative prompt"] is None  # the first pass's: A1111's function returns None
    assert extra["Hires schedule type"] == "Karras"  # DPM++ 2M's own; DDIM's pass wrote no "Schedule type"
    assert (extra["Hires upscale"], extra["Hires steps"], extra["Hires upscaler"]) == (2.0, 10, "Latent (nearest)")
    assert plan.hires.latent_mode == ("nearest", False)


def test_the_same_schedule_in_both_passes_is_written_once():
    extra = plan_for(txt2img_payload(enable_hr=True, sampler_name="DPM++ 2M", hr_resize_x=640)
                     ).extra_generation_params
    assert extra["Hires schedule type"] is None and extra["Schedule type"] == "Karras"
    assert extra["Hires resize"] == "640x0" and "Hires upscale" not in extra
    assert "Hires sampler" not in extra and "Hires steps" not in extra and "Hires upscaler" not in extra
    assert list(extra).index("Hires resize") < list(extra).index("Schedule type")


@pytest.mark.parametrize("option, first, hires", [
    ("Both", (True,) * 8, (True,) * 6),
    ("Low res only", (True,) * 8, None),
    ("High res only", None, (True,) * 6),
])
def test_controlnet_hr_option_picks_the_passes(option, first, hires):
    # 8 first-pass steps; the second pass: 6 steps (t_enc 5) over int(6 / 0.75) = 8
    plan = plan_for(txt2img_payload(steps=8, enable_hr=True, hr_second_pass_steps=6,
                                    alwayson_scripts=_units(_image_unit(hr_option=option))))
    (unit,) = plan.units
    assert (unit.window, unit.hires_window) == (first, hires)
    assert [len(p.units) for p in plan.passes] == [first is not None, hires is not None]


def test_hr_option_counts_only_with_the_hires_fix():
    plan = plan_for(txt2img_payload(steps=4, alwayson_scripts=_units(_image_unit(hr_option="High res only"))))
    (unit,) = plan.units
    assert unit.window == (True,) * 4 and unit.hires_window is None


def test_a_txt2img_units_pixel_perfect_target_is_the_first_pass():
    plan = plan_for(txt2img_payload(width=480, height=640, enable_hr=True,
                                    alwayson_scripts=_units(_image_unit(pixel_perfect=True))),
                    sizes=ImageSizes(init=(), units={0: (240, 320)}))
    # CN's get_target_dimensions: max(640 / 320, 480 / 240) * min(320, 240) = 480; at the second pass's 960 x 1280
    # it would be 960
    assert plan.units[0].processor_res == 480


def test_the_refiner_runs_in_the_hires_pass_only():
    plan = plan_for(txt2img_payload(enable_hr=True, refiner_checkpoint="sd_xl_refiner_1.0", refiner_switch_at=0.5))
    assert [p.refiner for p in plan.passes] == [False, True] and plan.refiner.switch_at == 0.5
