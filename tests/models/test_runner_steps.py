"""Executed denoising steps, counted with the pipeline's step callback, equal A1111's img2img rule.

A1111 (sd_samplers_common.setup_img2img_steps): t_enc = int(min(strength, 0.999) * steps); k-diffusion samplers
run t_enc + 1 steps; a 2nd-order sampler evaluates the model twice per step except on its last step (k-diffusion
takes an Euler step to sigma 0): 2 * steps - 1 evaluations. DDIM and PLMS (sd_samplers_timesteps.py) noise the
latent to timesteps[t_enc] and loop over timesteps[:t_enc] from the top, taking no step from timesteps[0]: t_enc - 1
steps, PLMS's first evaluating twice.
"""

from __future__ import annotations

import numpy as np
import pytest

from model_samples import canny_unit, sd15_input

SECOND_ORDER = {"Heun", "DPM++ SDE"}


def a1111_evaluations(sampler: str, steps: int, strength: float) -> int:
    t_enc = int(min(strength, 0.999) * steps)
    if sampler == "DDIM":
        return t_enc - 1
    if sampler == "PLMS":
        return t_enc
    return 2 * (t_enc + 1) - 1 if sampler in SECOND_ORDER else t_enc + 1


@pytest.mark.parametrize("sampler, scheduler, steps, strength", [
    ("Euler", None, 10, 0.5),
    ("Euler a", None, 10, 0.75),
    ("Heun", None, 6, 0.5),
    ("DPM++ 2M", "karras", 8, 1.0),
    ("DPM++ SDE", "karras", 6, 0.75),
    ("LMS", None, 12, 0.3),
    ("DDIM", None, 10, 0.5),
    ("PLMS", None, 9, 0.6),
])
def test_executed_steps_follow_a1111(run, sampler, scheduler, steps, strength):
    result = run(sd15_input(sampler_name=sampler, scheduler=scheduler, steps=steps, denoising_strength=strength))
    (trace,) = result.trace["batches"]
    evaluations = trace["base"]
    assert len(evaluations) == a1111_evaluations(sampler, steps, strength)
    # contiguous, from the first img2img step on
    assert evaluations == list(range(trace["first"], trace["first"] + len(evaluations)))
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
    t_enc = int(0.6 * 20)
    assert trace["base"] and trace["refiner"]
    assert trace["refiner"][0] == trace["base"][-1] + 1 == trace["stop"]
    assert trace["base"] + trace["refiner"] == list(range(20 - (t_enc + 1), 20))
    assert "Refiner: sd_xl_refiner_1.0" in result.infotexts[0]


def test_a_switch_before_the_first_img2img_step_hands_everything_to_the_refiner(run):
    # strength 0.3 starts below timestep ~300; switching at 0.2 (t <= 800) is before that: refiner only
    result = run(sd15_input(override_settings={"sd_model_checkpoint": "sd_xl_base_1.0"},
                            refiner_checkpoint="sd_xl_refiner_1.0", refiner_switch_at=0.2, steps=10,
                            denoising_strength=0.3))
    (trace,) = result.trace["batches"]
    assert trace["base"] == [] and len(trace["refiner"]) == int(0.3 * 10) + 1
    assert "Refiner switch at: 0.2" in result.infotexts[0]


def test_a_switch_after_the_last_step_never_runs_the_refiner(run):
    result = run(sd15_input(override_settings={"sd_model_checkpoint": "sd_xl_base_1.0"},
                            refiner_checkpoint="sd_xl_refiner_1.0", refiner_switch_at=0.9999, steps=6,
                            denoising_strength=0.5))
    (trace,) = result.trace["batches"]
    assert trace.get("refiner") is None and len(trace["base"]) == 4
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
