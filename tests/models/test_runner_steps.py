"""Executed denoising steps, counted with the pipeline's step callback, equal A1111's img2img rule.

A1111 (sd_samplers_common.setup_img2img_steps): t_enc = int(min(strength, 0.999) * steps); k-diffusion samplers
run t_enc + 1 steps, DDIM/PLMS/UniPC run t_enc. A 2nd-order sampler evaluates the model twice per step except on
its last step (k-diffusion takes an Euler step to sigma 0): 2 * steps - 1 evaluations. The expected counts below
are worked out by hand from those rules.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from model_samples import sd15_input


@pytest.mark.parametrize("sampler, scheduler, steps, strength, evaluations, first", [
    ("Euler", None, 10, 0.5, 6, 4),  # t_enc = 5 -> 6 steps, the last 6 of 10
    ("Euler a", None, 10, 0.75, 8, 2),  # t_enc = int(7.5) = 7 -> 8 steps
    ("Heun", None, 6, 0.5, 7, 4),  # t_enc = 3 -> 4 steps, 2nd order: 2 * 4 - 1 of 2 * 6 - 1
    ("DPM++ 2M", "karras", 8, 1.0, 8, 0),  # t_enc = int(0.999 * 8) = 7 -> all 8 steps
    ("DPM++ SDE", "karras", 6, 0.75, 9, 2),  # t_enc = int(4.5) = 4 -> 5 steps, 2nd order: 2 * 5 - 1
    ("LMS", None, 12, 0.3, 4, 8),  # t_enc = int(3.6) = 3 -> 4 steps
    ("DDIM", None, 10, 0.5, 5, 5),  # t_enc = 5, a timestep sampler runs t_enc
    ("UniPC", None, 9, 0.6, 5, 4),  # t_enc = int(5.4) = 5
])
def test_executed_steps_follow_a1111(run, sampler, scheduler, steps, strength, evaluations, first):
    result = run(sd15_input(sampler_name=sampler, scheduler=scheduler, steps=steps, denoising_strength=strength))
    (trace,) = result.trace["batches"]
    # contiguous, from the first img2img step (an index into the scheduler's timesteps, two per step for a
    # 2nd-order sampler) to the end of the schedule
    assert trace["base"] == list(range(first, first + evaluations))
    assert f"Steps: {steps}," in result.infotexts[0]  # info reports the requested steps


def test_the_refiner_starts_where_the_base_stopped(run):
    # SDXL without ControlNet, Euler: the base runs until the refiner's first index, the refiner from there on
    result = run(sd15_input(override_settings={"sd_model_checkpoint": "sd_xl_base_1.0"},
                            refiner_checkpoint="sd_xl_refiner_1.0", refiner_switch_at=0.7, steps=20,
                            denoising_strength=0.6))
    (trace,) = result.trace["batches"]
    assert trace["base"] and trace["refiner"]
    assert trace["refiner"][0] == trace["base"][-1] + 1 == trace["stop"]
    assert trace["base"] + trace["refiner"] == list(range(7, 20))  # t_enc = 12 -> 13 steps, the last 13 of 20
    assert "Refiner: sd_xl_refiner_1.0" in result.infotexts[0]


def test_a_switch_before_the_first_img2img_step_hands_everything_to_the_refiner(run):
    # strength 0.3 starts below timestep ~300; switching at 0.2 (t <= 800) is before that: refiner only
    result = run(sd15_input(override_settings={"sd_model_checkpoint": "sd_xl_base_1.0"},
                            refiner_checkpoint="sd_xl_refiner_1.0", refiner_switch_at=0.2, steps=10,
                            denoising_strength=0.3))
    (trace,) = result.trace["batches"]
    assert trace["base"] == [] and len(trace["refiner"]) == 4  # t_enc = int(3.0000000000000004) = 3 -> 4 steps
    assert "Refiner switch at: 0.2" in result.infotexts[0]


def test_a_switch_after_the_last_step_never_runs_the_refiner(run):
    result = run(sd15_input(override_settings={"sd_model_checkpoint": "sd_xl_base_1.0"},
                            refiner_checkpoint="sd_xl_refiner_1.0", refiner_switch_at=0.9999, steps=6,
                            denoising_strength=0.5))
    (trace,) = result.trace["batches"]
    assert trace.get("refiner") is None and len(trace["base"]) == 4  # t_enc = 3 -> 4 steps
    assert "Refiner" not in result.infotexts[0]


def test_strength_reproduces_the_count_for_every_steps_and_strength():
    """The plan's ``strength`` makes diffusers' img2img pipelines run exactly the plan's count (their own
    ``get_timesteps``): float rounding in int(steps * strength) never loses or adds a step, whatever the request."""
    import diffusers

    from img2img_runner.plan import img2img_steps

    pipelines = [diffusers.StableDiffusionImg2ImgPipeline, diffusers.StableDiffusionXLImg2ImgPipeline,
                 diffusers.StableDiffusionControlNetImg2ImgPipeline,
                 diffusers.StableDiffusionXLControlNetImg2ImgPipeline]
    for steps in range(1, 151):
        scheduler = diffusers.EulerDiscreteScheduler()
        scheduler.set_timesteps(steps)
        pipe = SimpleNamespace(scheduler=scheduler)
        for hundredth in range(0, 101):
            for timestep_sampler in (False, True):
                result = img2img_steps(steps, hundredth / 100, timestep_sampler=timestep_sampler)
                runs = {p.get_timesteps(pipe, steps, result.strength, "cpu")[1] for p in pipelines}
                assert runs == {result.executed}, (steps, hundredth, timestep_sampler, runs)
