"""A1111 sampler + schedule -> diffusers scheduler class and arguments."""

from __future__ import annotations

import inspect

import pytest

from img2img.api import samplers as api_samplers
from img2img.api.errors import FieldError
from img2img_runner.samplers import scheduler_spec, supported_pairs


@pytest.mark.parametrize("sampler, schedule, cls, kwargs", [
    ("DPM++ SDE", "Karras", "DPMSolverSDEScheduler", {"use_karras_sigmas": True, "timestep_spacing": "linspace"}),
    ("DPM++ 2M", "Karras", "DPMSolverMultistepScheduler",
     {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    ("DPM++ 2M SDE", "Exponential", "DPMSolverMultistepScheduler",
     {"algorithm_type": "sde-dpmsolver++", "use_exponential_sigmas": True}),
    ("DPM++ 2M SDE Heun", "Exponential", "DPMSolverMultistepScheduler", {"solver_type": "heun"}),
    ("DPM++ 3M SDE", "Karras", "DPMSolverMultistepScheduler", {"solver_order": 3, "use_karras_sigmas": True}),
    ("Euler a", "Automatic", "EulerAncestralDiscreteScheduler", {"timestep_spacing": "linspace"}),
    ("Euler", "Automatic", "EulerDiscreteScheduler", {"timestep_spacing": "linspace"}),
    ("Euler", "SGM Uniform", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
    ("Euler", "Beta", "EulerDiscreteScheduler", {"use_beta_sigmas": True}),
    ("LMS", "Karras", "LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    ("Heun", "Automatic", "HeunDiscreteScheduler", {}),
    ("DPM2", "Karras", "KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
    ("DPM2 a", "Karras", "KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
    ("DPM++ 2S a", "Karras", "DPMSolverSinglestepScheduler", {"solver_order": 2, "use_karras_sigmas": True}),
    ("DDIM", "Automatic", "DDIMScheduler", {"timestep_spacing": "leading", "steps_offset": 1,
                                            "set_alpha_to_one": False}),
    ("PLMS", "Automatic", "PNDMScheduler", {"skip_prk_steps": True}),
    ("UniPC", "Automatic", "UniPCMultistepScheduler", {"solver_type": "bh1", "solver_order": 3}),
    ("LCM", "Automatic", "LCMScheduler", {}),
])
def test_table(sampler, schedule, cls, kwargs):
    spec = scheduler_spec(sampler, schedule)
    assert spec.class_name == cls
    assert kwargs.items() <= spec.kwargs.items()


def test_second_order_and_timestep_samplers():
    assert scheduler_spec("DPM++ SDE", "Karras").order == 2
    assert scheduler_spec("Heun", "Automatic").order == 2
    assert scheduler_spec("Euler", "Automatic").order == 1
    assert scheduler_spec("DDIM", "Automatic").timestep_sampler
    assert not scheduler_spec("Euler a", "Automatic").timestep_sampler


def test_dpmpp_sde_is_brownian():
    spec = scheduler_spec("DPM++ SDE", "Karras")
    assert spec.brownian and spec.stochastic  # the runner must set noise_sampler_seed per call


@pytest.mark.parametrize("legacy, cls, karras", [
    ("DPM++ 2M Karras", "DPMSolverMultistepScheduler", True),
    ("DPM++ SDE Karras", "DPMSolverSDEScheduler", True),
    ("Euler a", "EulerAncestralDiscreteScheduler", False),
    ("DPM++ 2M", "DPMSolverMultistepScheduler", True),  # 1.9+: its Automatic schedule is Karras
])
def test_legacy_names_through_the_api_resolution(legacy, cls, karras):
    spec = scheduler_spec(*api_samplers.resolve(legacy, None, None).pair())
    assert spec.class_name == cls
    assert spec.kwargs.get("use_karras_sigmas", False) == karras


@pytest.mark.parametrize("sampler, schedule, field", [
    ("DPM fast", "Automatic", "sampler_name"),
    ("DPM adaptive", "Automatic", "sampler_name"),
    ("Restart", "Karras", "sampler_name"),
    ("Euler a", "Karras", "scheduler"),  # diffusers' ancestral Euler has no Karras sigmas
    ("Euler", "KL Optimal", "scheduler"),
    ("Euler", "Align Your Steps", "scheduler"),
])
def test_what_cannot_run_is_refused_with_the_field(sampler, schedule, field):
    with pytest.raises(FieldError) as exc:
        scheduler_spec(sampler, schedule)
    assert exc.value.field == field
    assert sampler in str(exc.value) or schedule in str(exc.value)


def test_eta():
    # eta 0 on an ancestral sampler: no noise step -> its deterministic counterpart, and "Eta: 0" in infotext
    spec = scheduler_spec("Euler a", "Automatic", eta=0)
    assert spec.class_name == "EulerDiscreteScheduler" and spec.eta_info == ("Eta", 0)
    assert scheduler_spec("Euler a", "Automatic", eta=1.0).class_name == "EulerAncestralDiscreteScheduler"
    with pytest.raises(FieldError) as exc:
        scheduler_spec("Euler a", "Automatic", eta=0.5)
    assert exc.value.field == "eta"
    ddim = scheduler_spec("DDIM", "Automatic", eta=0.3)
    assert ddim.eta == 0.3 and ddim.eta_info == ("Eta DDIM", 0.3)
    assert scheduler_spec("Euler", "Automatic", eta=0.3).eta is None  # A1111 ignores eta for Euler


# A1111 1.10's lists, as its UI and /sdapi/v1/samplers and /sdapi/v1/schedulers show them (modules/
# sd_samplers_kdiffusion.py `samplers_k_diffusion`, sd_samplers_timesteps.py, sd_samplers_lcm.py, sd_schedulers.py)
A1111_SAMPLERS = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
                  "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
                  "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM"]
A1111_SCHEDULES = ["Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
                   "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"]
NO_DIFFUSERS_COUNTERPART = {"DPM fast", "DPM adaptive", "Restart", "DDIM CFG++"}


@pytest.mark.parametrize("sampler", A1111_SAMPLERS)
def test_every_a1111_sampler_is_mapped_or_refused(sampler):
    import diffusers

    assert api_samplers.find_sampler(sampler) is not None  # the API accepts every name A1111 offers
    outcomes = {}
    for schedule in A1111_SCHEDULES:
        try:
            spec = scheduler_spec(sampler, schedule)
        except FieldError as exc:
            # refused on purpose, naming the field and why: never "unknown" for a name A1111 offers
            assert exc.field in ("sampler_name", "scheduler"), (sampler, schedule, exc.field)
            assert "unknown" not in str(exc), str(exc)
            assert (sampler if exc.field == "sampler_name" else schedule) in str(exc), str(exc)
            outcomes[schedule] = exc.field
        else:
            assert spec.sampler == sampler and issubclass(getattr(diffusers, spec.class_name),
                                                          diffusers.SchedulerMixin)
            outcomes[schedule] = "mapped"
    if sampler in NO_DIFFUSERS_COUNTERPART:
        assert set(outcomes.values()) == {"sampler_name"}  # whatever the schedule
    else:
        assert outcomes["Automatic"] == "mapped"  # what a request without a schedule gets


def test_every_kwarg_is_one_the_diffusers_class_takes():
    import diffusers

    pairs = supported_pairs()
    assert ("DPM++ SDE", "Karras") in pairs and len(pairs) > 100
    for sampler, schedule in pairs:
        spec = scheduler_spec(sampler, schedule)
        accepted = inspect.signature(getattr(diffusers, spec.class_name).__init__).parameters
        unknown = set(spec.kwargs) - set(accepted)
        assert not unknown, (sampler, schedule, unknown)
