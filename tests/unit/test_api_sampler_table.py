"""What runs each A1111 sampler + schedule (a diffusers scheduler class and arguments), or why nothing does; and the
sampler parameters (eta, s_churn, s_tmin, s_tmax, s_noise) as A1111 1.10 reads them."""

from __future__ import annotations

import inspect

import pytest
from pydantic import ValidationError

from api_samples import seed_payload
from img2img.api import samplers as api_samplers
from img2img.api.errors import FieldError, problems
from img2img.api.payload import Img2ImgPayload
from img2img.api.samplers import SamplerParams, scheduler_spec, supported_pairs


@pytest.mark.parametrize("sampler, schedule, cls, kwargs", [
    ("DPM++ SDE", "Karras", "DPMSolverSDEScheduler", {"use_karras_sigmas": True, "timestep_spacing": "linspace"}),
    ("DPM++ 2M", "Karras", "DPMSolverMultistepScheduler",
     {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    ("DPM++ 2M SDE", "Exponential", "DPMSolverMultistepScheduler",
     {"algorithm_type": "sde-dpmsolver++", "use_exponential_sigmas": True}),
    ("DPM++ 2M SDE Heun", "Exponential", "DPMSolverMultistepScheduler", {"solver_type": "heun"}),
    ("Euler a", "Automatic", "EulerAncestralDiscreteScheduler", {"timestep_spacing": "linspace"}),
    ("Euler", "Automatic", "EulerDiscreteScheduler", {"timestep_spacing": "linspace"}),
    ("Euler", "SGM Uniform", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
    ("Euler", "Beta", "EulerDiscreteScheduler", {"use_beta_sigmas": True}),
    ("LMS", "Karras", "LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    ("Heun", "Automatic", "HeunDiscreteScheduler", {}),
    ("DDIM", "Karras", "DDIMScheduler", {"timestep_spacing": "leading", "steps_offset": 1,
                                        "set_alpha_to_one": False, "clip_sample": False}),
    ("PLMS", "Automatic", "PNDMScheduler", {"skip_prk_steps": True, "timestep_spacing": "leading"}),
])
def test_table(sampler, schedule, cls, kwargs):
    spec = scheduler_spec(sampler, schedule)
    assert spec.class_name == cls
    assert kwargs.items() <= spec.kwargs.items()


def test_second_order_timestep_and_brownian_samplers():
    assert scheduler_spec("DPM++ SDE", "Karras").order == 2
    assert scheduler_spec("Heun", "Automatic").order == 2
    assert scheduler_spec("Euler", "Automatic").order == 1
    assert scheduler_spec("DDIM", "Automatic").timestep_sampler and scheduler_spec("PLMS", "Automatic").timestep_sampler
    assert not scheduler_spec("Euler a", "Automatic").timestep_sampler
    # A1111's brownian_noise samplers: the noise is a Brownian tree seeded with the batch's seeds
    assert {s for s in ("DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "Euler a")
            if scheduler_spec(s, "Karras" if s != "Euler a" else "Automatic").brownian} == {
        "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun"}


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
    ("DDIM CFG++", "Automatic", "sampler_name"),
    ("DPM++ 2S a", "Karras", "sampler_name"),  # no ancestral single-step solver: no stand-in
    ("DPM2", "Karras", "sampler_name"),  # A1111 drops the next-to-last sigma
    ("DPM2 a", "Karras", "sampler_name"),
    ("DPM++ 3M SDE", "Exponential", "sampler_name"),
    ("UniPC", "Automatic", "sampler_name"),  # A1111's own time grid
    ("LCM", "Automatic", "sampler_name"),
    ("Euler a", "Karras", "scheduler"),  # diffusers' ancestral Euler has no Karras sigmas
    ("Euler", "KL Optimal", "scheduler"),
    ("Euler", "Align Your Steps", "scheduler"),
])
def test_what_cannot_run_is_refused_with_the_field(sampler, schedule, field):
    with pytest.raises(FieldError) as exc:
        scheduler_spec(sampler, schedule)
    assert exc.value.field == field
    assert sampler in str(exc.value) or schedule in str(exc.value)


def test_eta_as_a1111_reads_it():
    # eta 0 on an ancestral sampler: no noise step -> its deterministic counterpart, and "Eta: 0" in infotext
    spec = scheduler_spec("Euler a", "Automatic", SamplerParams(eta=0))
    assert spec.class_name == "EulerDiscreteScheduler" and spec.eta_info == ("Eta", 0)
    assert scheduler_spec("Euler a", "Automatic", SamplerParams(eta=1.0)).eta_info is None  # the default
    sde = scheduler_spec("DPM++ 2M SDE", "Karras", SamplerParams(eta=0))
    assert sde.kwargs["algorithm_type"] == "dpmsolver++" and not sde.stochastic and sde.eta_info == ("Eta", 0)
    heun = scheduler_spec("DPM++ 2M SDE Heun", "Karras", SamplerParams(eta=0))
    assert (heun.kwargs["algorithm_type"], heun.kwargs["solver_type"]) == ("dpmsolver++", "heun")
    for sampler, eta in (("Euler a", 0.5), ("DPM++ SDE", 0), ("DPM++ 2M SDE", 0.7)):
        with pytest.raises(FieldError) as exc:
            scheduler_spec(sampler, "Automatic", SamplerParams(eta=eta))
        assert exc.value.field == "eta"
    ddim = scheduler_spec("DDIM", "Automatic", SamplerParams(eta=0.3))
    assert ddim.eta == 0.3 and ddim.eta_info == ("Eta DDIM", 0.3)
    assert scheduler_spec("DDIM", "Automatic", SamplerParams(eta=0)).eta_info is None  # DDIM's default is 0
    assert scheduler_spec("Euler", "Automatic", SamplerParams(eta=0.3)).eta is None  # A1111 ignores eta for Euler


def test_churn_is_refused_and_what_only_shapes_churn_changes_nothing():
    with pytest.raises(FieldError) as exc:
        scheduler_spec("Euler", "Automatic", SamplerParams(s_churn=0.5))
    assert exc.value.field == "s_churn"
    plain = scheduler_spec("Euler", "Automatic")
    assert scheduler_spec("Euler", "Automatic", SamplerParams(s_churn=0, s_tmin=1, s_tmax=5, s_noise=0)) == plain
    assert scheduler_spec("Euler a", "Automatic", SamplerParams(s_churn=3)) == scheduler_spec("Euler a", "Automatic")


def test_s_noise_scales_the_noise_of_the_samplers_that_read_it():
    assert scheduler_spec("DPM++ SDE", "Karras", SamplerParams(s_noise=0)).s_noise == 0
    assert scheduler_spec("DPM++ 2M SDE", "Karras", SamplerParams(s_noise=0.5)).s_noise == 0.5
    assert scheduler_spec("Euler a", "Automatic", SamplerParams(s_noise=0)).s_noise == 1.0  # A1111 ignores it there
    # the RunPod worker's defaults: eta 0 and s_noise 0, on a sampler whose eta-0 twin has no noise at all
    spec = scheduler_spec("DPM++ 2M SDE", "Karras", SamplerParams(eta=0, s_noise=0))
    assert spec.s_noise == 1.0 and not spec.stochastic


# A1111 1.10's lists, as its UI and /sdapi/v1/samplers and /sdapi/v1/schedulers show them (modules/
# sd_samplers_kdiffusion.py `samplers_k_diffusion`, sd_samplers_timesteps.py, sd_samplers_lcm.py, sd_schedulers.py)
A1111_SAMPLERS = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
                  "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
                  "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM"]
A1111_SCHEDULES = ["Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
                   "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"]
# no diffusers scheduler draws them as A1111 does (see test_what_cannot_run_is_refused_with_the_field)
REFUSED = {"DPM fast", "DPM adaptive", "Restart", "DDIM CFG++", "DPM++ 2S a", "DPM2", "DPM2 a", "DPM++ 3M SDE",
           "UniPC", "LCM"}


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
    if sampler in REFUSED:
        assert set(outcomes.values()) == {"sampler_name"}  # whatever the schedule
    else:
        assert outcomes["Automatic"] == "mapped"  # what a request without a schedule gets


def test_every_kwarg_is_one_the_diffusers_class_takes():
    import diffusers

    pairs = supported_pairs()
    assert ("DPM++ SDE", "Karras") in pairs and len(pairs) > 60
    for sampler, schedule in pairs:
        spec = scheduler_spec(sampler, schedule)
        accepted = inspect.signature(getattr(diffusers, spec.class_name).__init__).parameters
        unknown = set(spec.kwargs) - set(accepted)
        assert not unknown, (sampler, schedule, unknown)


def test_validation_refuses_what_the_runner_would_refuse():
    def reasons(**changes) -> dict[str, str]:
        with pytest.raises(ValidationError) as info:
            Img2ImgPayload.model_validate(seed_payload(**changes))
        return {p.path: p.reason for p in problems(info.value, "input.payload")}

    assert "DPM2" in reasons(sampler_name="DPM2 Karras", scheduler=None)["input.payload.sampler_name"]
    assert "not supported" in reasons(sampler_name=None, sampler_index="UniPC")["input.payload.sampler_index"]
    assert "KL Optimal" in reasons(scheduler="kl_optimal")["input.payload.scheduler"]
    assert "eta 0.5" in reasons(eta=0.5)["input.payload.eta"]  # the seed's DPM++ SDE runs eta 1 only
    assert "s_churn" in reasons(sampler_name="Euler", s_churn=1)["input.payload.s_churn"]
    Img2ImgPayload.model_validate(seed_payload(sampler_name="DPM++ 2M SDE", eta=0, s_noise=0))
    # DDIM and PLMS: A1111 runs t_enc - 1 steps, and carries their loop across a refiner switch
    assert "0 steps" in reasons(sampler_name="DDIM", steps=2, denoising_strength=0.75)[
        "input.payload.denoising_strength"]
    assert "history" in reasons(sampler_name="PLMS")["input.payload.refiner_checkpoint"]
    Img2ImgPayload.model_validate(seed_payload(sampler_name="PLMS", steps=4, refiner_checkpoint=None))
    Img2ImgPayload.model_validate(seed_payload(sampler_name="DDIM", steps=6, scheduler="automatic"))
