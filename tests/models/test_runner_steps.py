"""Executed denoising steps, counted with the pipeline's step callback, equal A1111's img2img rule.

A1111 (sd_samplers_common.setup_img2img_steps): t_enc = int(min(strength, 0.999) * steps); k-diffusion samplers
run t_enc + 1 steps; a 2nd-order sampler evaluates the model twice per step except on its last step (k-diffusion
takes an Euler step to sigma 0): 2 * steps - 1 evaluations. DDIM and PLMS (sd_samplers_timesteps.py) noise the
latent to timesteps[t_enc] and loop over timesteps[:t_enc] from the top, taking no step from timesteps[0]: t_enc - 1
steps, PLMS's first evaluating twice. The expected counts below are worked out by hand from those rules.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from model_samples import canny_unit, sd15_input


@pytest.mark.parametrize("sampler, scheduler, steps, strength, evaluations, first", [
    ("Euler", None, 10, 0.5, 6, 4),  # t_enc = 5 -> 6 steps, the last 6 of 10
    ("Euler a", None, 10, 0.75, 8, 2),  # t_enc = int(7.5) = 7 -> 8 steps
    ("Heun", None, 6, 0.5, 7, 4),  # t_enc = 3 -> 4 steps, 2nd order: 2 * 4 - 1 of 2 * 6 - 1
    ("DPM++ 2M", "karras", 8, 1.0, 8, 0),  # t_enc = int(0.999 * 8) = 7 -> all 8 steps
    ("DPM++ SDE", "karras", 6, 0.75, 9, 2),  # t_enc = int(4.5) = 4 -> 5 steps, 2nd order: 2 * 5 - 1
    ("LMS", None, 12, 0.3, 4, 8),  # t_enc = int(3.6) = 3 -> 4 steps
    ("DDIM", None, 10, 0.5, 4, 5),  # t_enc = 5: from timesteps[4] (index 5 from the top), 4 steps
    ("PLMS", None, 9, 0.6, 5, 4),  # t_enc = int(5.4) = 5: 4 steps, the first evaluating twice
])
def test_executed_steps_follow_a1111(run, sampler, scheduler, steps, strength, evaluations, first):
    result = run(sd15_input(sampler_name=sampler, scheduler=scheduler, steps=steps, denoising_strength=strength))
    (trace,) = result.trace["batches"]
    # contiguous, from the first img2img step (an index into the scheduler's timesteps, two per step for a
    # 2nd-order sampler)
    assert trace["base"] == list(range(first, first + evaluations))
    assert f"Steps: {steps}," in result.infotexts[0]  # info reports the requested steps


class Spy:
    """Records the timesteps the UNet is called at and the one the init latents are noised to."""

    def __init__(self, monkeypatch, unet, scheduler_class):
        self.unet_timesteps: list[int] = []
        self.noised_at: list[int] = []
        handle = unet.register_forward_pre_hook(
            lambda module, args, kwargs: self.unet_timesteps.append(int(args[1])), with_kwargs=True)
        self.remove = handle.remove
        add_noise = scheduler_class.add_noise

        def spied(scheduler, original, noise, timesteps):
            self.noised_at.append(int(timesteps[0]))
            return add_noise(scheduler, original, noise, timesteps)

        monkeypatch.setattr(scheduler_class, "add_noise", spied)


@pytest.mark.parametrize("sampler, unet_timesteps", [
    # 6 steps: timesteps 1, 167, 333, 499, 665, 831; strength 0.75: t_enc 4, noised to 665
    ("DDIM", [499, 333, 167]),
    ("PLMS", [499, 333, 333, 167]),  # the first step's second evaluation is at the next timestep
])
def test_ddim_and_plms_run_a1111s_timesteps(run, catalog, model_cache, monkeypatch, sampler, unet_timesteps):
    import diffusers

    entry = catalog.resolve(checkpoint="v1-5-pruned-emaonly", vae=None, refiner=None, controlnets=[]).checkpoint
    unet = model_cache.checkpoint(entry)["unet"]
    spy = Spy(monkeypatch, unet, diffusers.PNDMScheduler if sampler == "PLMS" else diffusers.DDIMScheduler)
    try:
        run(sd15_input(sampler_name=sampler, scheduler="automatic", steps=6, denoising_strength=0.75, cfg_scale=1))
    finally:
        spy.remove()
    assert spy.unet_timesteps == unet_timesteps and spy.noised_at == [665]


def test_ddim_with_the_sdxl_refiner_hands_over_at_the_switch(run):
    # the seed request with DDIM, as a new user tries it: 64x64, 6 steps, automatic schedule, ControlNet, refiner
    result = run(sd15_input(override_settings={"sd_model_checkpoint": "sd_xl_base_1.0"},
                            refiner_checkpoint="sd_xl_refiner_1.0", refiner_switch_at=0.6, sampler_name="DDIM",
                            scheduler="automatic", steps=6, denoising_strength=0.75,
                            alwayson_scripts={"controlnet": {"args": [canny_unit()]}}))
    (trace,) = result.trace["batches"]
    # timesteps 499, 333, 167 (indices 2, 3, 4); A1111 switches once (999 - t) / 1000 >= 0.6: at t = 333
    assert trace["base"] == [2] and trace["refiner"] == [3, 4]
    assert "Refiner: sd_xl_refiner_1.0" in result.infotexts[0]


@pytest.mark.parametrize("start, end, calls", [
    # 10 steps at 0.5: 6 Euler steps; CN reads the progress max(i - 1, 0) / 6 while step i runs
    (0.0, 1.0, 6),
    (0.0, 0.5, 5),  # off once the progress passes 0.5: at 4/6 (diffusers' own rule would stop after 3)
    (0.2, 1.0, 3),  # on from 2/6
])
def test_controlnet_runs_in_sd_webui_controlnets_guidance_window(run, start, end, calls):
    unit = canny_unit(guidance_start=start, guidance_end=end)
    result = run(sd15_input(steps=10, denoising_strength=0.5, alwayson_scripts={"controlnet": {"args": [unit]}}))
    assert result.trace["batches"][0]["controlnet_calls"] == [calls]


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


def test_lms_starts_img2img_at_first_order(run):
    # k-diffusion's LMS: order min(step + 1, 4) counted from the first img2img step; one step is an Euler step
    one_step = dict(steps=10, denoising_strength=0.05)  # t_enc = 0: one step
    lms = run(sd15_input(sampler_name="LMS", **one_step)).images[0]
    euler = run(sd15_input(sampler_name="Euler", **one_step)).images[0]
    assert np.abs(np.asarray(lms).astype(int) - np.asarray(euler).astype(int)).max() <= 1


def test_a_multistep_sampler_keeps_its_history_across_the_refiner_switch(run, monkeypatch):
    # A1111 swaps the model inside one DPM++ 2M loop: first order on the first step and the last only
    import diffusers

    first_order = []
    update = diffusers.DPMSolverMultistepScheduler.dpm_solver_first_order_update

    def counted(self, *args, **kwargs):
        first_order.append(self.step_index)
        return update(self, *args, **kwargs)

    monkeypatch.setattr(diffusers.DPMSolverMultistepScheduler, "dpm_solver_first_order_update", counted)
    result = run(sd15_input(override_settings={"sd_model_checkpoint": "sd_xl_base_1.0"},
                            refiner_checkpoint="sd_xl_refiner_1.0", refiner_switch_at=0.5, sampler_name="DPM++ 2M",
                            scheduler="karras", steps=8, denoising_strength=1.0))
    (trace,) = result.trace["batches"]
    assert trace["base"] and trace["refiner"]
    assert first_order == [0, 7]


def test_strength_reproduces_the_count_for_every_steps_and_strength():
    """The plan's ``strength`` makes diffusers' img2img pipelines start exactly at the plan's first step (their own
    ``get_timesteps``): float rounding in int(steps * strength) never loses or adds a step, whatever the request."""
    import diffusers

    from img2img.api.samplers import scheduler_spec
    from img2img_runner.plan import img2img_steps

    pipelines = [diffusers.StableDiffusionImg2ImgPipeline, diffusers.StableDiffusionXLImg2ImgPipeline,
                 diffusers.StableDiffusionControlNetImg2ImgPipeline,
                 diffusers.StableDiffusionXLControlNetImg2ImgPipeline]
    for steps in range(1, 151):
        scheduler = diffusers.EulerDiscreteScheduler()
        scheduler.set_timesteps(steps)
        pipe = SimpleNamespace(scheduler=scheduler)
        for hundredth in range(0, 101):
            for sampler in ("Euler", "DDIM"):
                result = img2img_steps(steps, hundredth / 100, scheduler_spec(sampler, "Automatic"))
                runs = {p.get_timesteps(pipe, steps, result.strength, "cpu")[1] for p in pipelines}
                assert runs == {steps - result.first_index}, (steps, hundredth, sampler, runs)
