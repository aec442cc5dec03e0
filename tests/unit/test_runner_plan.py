"""The runner's plan: A1111's decisions (seeds, batches, step counts, refiner, ControlNet units) as data."""

from __future__ import annotations

import random

import pytest

from runner_samples import plan_for, seed_payload, tiny_catalog

from img2img.api.errors import FieldError
from img2img_runner.plan import (
    SEED_RANGE,
    ImageSizes,
    fixed_seed,
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


@pytest.mark.parametrize("steps, ds, timestep_sampler, executed", [
    (30, 0.75, False, 23),  # t_enc = 22, k-diffusion runs t_enc + 1 (diffusers alone would run 22)
    (30, 0.75, True, 22),  # DDIM/PLMS/UniPC run t_enc
    (20, 0.5, False, 11),
    (30, 1.0, False, 30),  # min(ds, 0.999): t_enc = 29
    (10, 0.0, False, 1),  # k-diffusion still runs one step at the lowest sigma
    (7, 0.33, False, 3),
])
def test_a1111_img2img_step_count(steps, ds, timestep_sampler, executed):
    result = img2img_steps(steps, ds, timestep_sampler=timestep_sampler)
    assert result.executed == executed
    assert result.schedule == steps
    assert result.first_index == steps - executed


def test_img2img_fix_steps_stretches_the_schedule():
    result = img2img_steps(20, 0.5, timestep_sampler=False, fix_steps=True)
    assert (result.schedule, result.executed) == (40, 20)


def test_plan_uses_the_samplers_rule():
    assert plan_for(seed_payload(sampler_name="DDIM", scheduler=None, steps=30)).steps.executed == 22
    assert plan_for(seed_payload(sampler_name="Euler", scheduler=None, steps=30)).steps.executed == 23


# --- sizes, clip skip, sampler -------------------------------------------------------------------------------


def test_size_is_reported_as_requested_and_rendered_at_a_multiple_of_8():
    plan = plan_for(seed_payload(width=484, height=643))
    assert (plan.width, plan.height) == (484, 643)
    assert (plan.run_width, plan.run_height) == (480, 640)


def test_clip_skip_applies_to_sd15_only():
    sd = seed_payload(override_settings={"sd_model_checkpoint": "v1-5-pruned-emaonly", "CLIP_stop_at_last_layers": 2},
                      refiner_checkpoint=None, alwayson_scripts={})
    plan = plan_for(sd)
    assert (plan.clip_skip_a1111, plan.clip_skip) == (2, 1)
    xl = plan_for(seed_payload(override_settings={"sd_model_checkpoint": "sd_xl_base_1.0",
                                                  "CLIP_stop_at_last_layers": 2}))
    assert (xl.clip_skip_a1111, xl.clip_skip) == (2, None)


def test_seed_request_sampler_and_schedule():
    plan = plan_for(seed_payload())
    assert (plan.sampler, plan.schedule) == ("DPM++ SDE", "Karras")
    assert plan.scheduler.class_name == "DPMSolverSDEScheduler"
    assert list(plan.extra_generation_params) == ["ControlNet 0", "ControlNet 0 substitute", "Denoising strength",
                                                   "Schedule type"]


def test_an_unsupported_sampler_is_refused_naming_the_field():
    with pytest.raises(FieldError) as exc:
        plan_for(seed_payload(sampler_name="DPM adaptive", scheduler=None))
    assert exc.value.field == "sampler_name"
    with pytest.raises(FieldError) as exc:
        plan_for(seed_payload(sampler_name="Euler a", scheduler="karras"))
    assert exc.value.field == "scheduler"


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


def test_disabled_units_are_skipped_and_indices_count_enabled_ones():
    plan = plan_for(seed_payload(alwayson_scripts=_units(
        _unit(enabled=False), _unit(module="invert"), _unit(module="canny", control_mode="Balanced"))))
    assert [(u.index, u.request_index, u.module) for u in plan.units] == [(0, 1, "invert"), (1, 2, "canny")]


def test_a_unit_without_a_model_is_refused():
    with pytest.raises(FieldError) as exc:
        plan_for(seed_payload(alwayson_scripts=_units(_unit(model="None"))))
    assert exc.value.field == "alwayson_scripts.controlnet.args[0].model"


def test_reference_only_is_refused():
    with pytest.raises(FieldError, match="reference"):
        plan_for(seed_payload(alwayson_scripts=_units(_unit(module="reference_only"))))


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
