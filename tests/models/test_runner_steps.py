"""Executed denoising steps, counted with the pipeline's step callback, equal A1111's img2img rule.

A1111 (sd_samplers_common.setup_img2img_steps): t_enc = int(min(strength, 0.999) * steps); k-diffusion samplers
run t_enc + 1 steps, DDIM/PLMS/UniPC run t_enc. A 2nd-order sampler evaluates the model twice per step except on
its last step (k-diffusion takes an Euler step to sigma 0): 2 * steps - 1 evaluations.
"""

from __future__ import annotations

import pytest

from model_samples import sd15_input

SECOND_ORDER = {"Heun", "DPM2", "DPM++ SDE"}
TIMESTEP = {"DDIM", "PLMS", "UniPC"}


def a1111_evaluations(sampler: str, steps: int, strength: float) -> int:
    t_enc = int(min(strength, 0.999) * steps)
    executed = t_enc if sampler in TIMESTEP else t_enc + 1
    return 2 * executed - 1 if sampler in SECOND_ORDER else executed


@pytest.mark.parametrize("sampler, scheduler, steps, strength", [
    ("Euler", None, 10, 0.5),
    ("Euler a", None, 10, 0.75),
    ("Heun", None, 6, 0.5),
    ("DPM++ 2M", "karras", 8, 1.0),
    ("DPM++ SDE", "karras", 6, 0.75),
    ("LMS", None, 12, 0.3),
    ("DDIM", None, 10, 0.5),
    ("UniPC", None, 9, 0.6),
])
def test_executed_steps_follow_a1111(run, sampler, scheduler, steps, strength):
    result = run(sd15_input(sampler_name=sampler, scheduler=scheduler, steps=steps, denoising_strength=strength))
    (trace,) = result.trace["batches"]
    evaluations = trace["base"]
    assert len(evaluations) == a1111_evaluations(sampler, steps, strength)
    # contiguous, from the first img2img step to the end of the schedule
    assert evaluations == list(range(trace["first"], trace["first"] + len(evaluations)))
    assert f"Steps: {steps}," in result.infotexts[0]  # info reports the requested steps


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
