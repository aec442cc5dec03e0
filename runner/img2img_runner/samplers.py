"""A1111 sampler + schedule type -> a diffusers scheduler class and its keyword arguments (pure; no torch).

The pair comes from ``img2img.api.samplers.resolve`` (A1111 1.9+ names: ("DPM++ SDE", "Karras")). The table starts
from diffusers' own A1111 mapping (the scheduler overview in diffusers' documentation), corrected where a diffusers
class follows k-diffusion's sampler more faithfully, e.g. "DPM++ SDE" -> ``DPMSolverSDEScheduler``, which needs
``torchsde``.

Schedules: A1111 samples k-diffusion schedules over the model's *whole* sigma range (timesteps 999 -> 0); diffusers'
SDXL/SD configs say ``timestep_spacing="leading"``, which shrinks the range (Karras [0.041, 11.5] instead of A1111's
[0.029, 14.6]). So every k-diffusion schedule sets ``timestep_spacing="linspace"`` unless the schedule itself is a
spacing ("SGM Uniform"/"Simple" -> "trailing", "DDIM" -> "leading" + offset 1).

Step counts (A1111 ``setup_img2img_steps``): k-diffusion samplers run ``t_enc + 1`` steps in img2img, timestep
samplers (DDIM, PLMS, UniPC) run ``t_enc``; ``SchedulerSpec.timestep_sampler`` says which rule applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from img2img.api.errors import FieldError


@dataclass(frozen=True)
class SchedulerSpec:
    sampler: str  # A1111's canonical sampler name
    schedule: str  # A1111's schedule label, as it runs ("Karras"; "Automatic" = the model's own)
    class_name: str  # a diffusers scheduler class
    kwargs: dict[str, Any] = field(default_factory=dict)
    # 2 for samplers that evaluate the model twice per step (Heun, DPM2, DPM++ SDE): diffusers' `scheduler.order`
    order: int = 1
    # DDIM/PLMS/UniPC: A1111 runs t_enc img2img steps, not t_enc + 1
    timestep_sampler: bool = False
    # DPMSolverSDEScheduler: its Brownian noise ignores `generator`; set `noise_sampler_seed` per call
    brownian: bool = False
    # ancestral / SDE samplers draw fresh noise every step (A1111's ENSD applies to them)
    stochastic: bool = False
    # set when an approximation stands in for A1111's sampler; shown in the answer's info
    note: str | None = None
    # `eta` for the pipeline call (DDIM only); None = the pipeline's default
    eta: float | None = None
    # A1111's extra_generation_params entry for a non-default eta: ("Eta", 0.5) / ("Eta DDIM", 0.3)
    eta_info: tuple[str, float] | None = None


@dataclass(frozen=True)
class _Sampler:
    class_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    order: int = 1
    timestep_sampler: bool = False
    brownian: bool = False
    stochastic: bool = False
    # ancestral samplers with eta = 0 take no noise step: exactly their deterministic counterpart
    eta_zero: str | None = None
    # which schedule flags the class has (diffusers raises on unknown config keys only silently: check here)
    schedules: frozenset[str] = frozenset({"uniform", "karras", "exponential", "beta", "trailing", "leading"})
    note: str | None = None


_SPACING_ONLY = frozenset({"uniform", "trailing", "leading"})

_SAMPLERS: dict[str, _Sampler] = {
    "Euler a": _Sampler("EulerAncestralDiscreteScheduler", stochastic=True, schedules=_SPACING_ONLY, eta_zero="Euler"),
    "Euler": _Sampler("EulerDiscreteScheduler"),
    "LMS": _Sampler("LMSDiscreteScheduler"),
    "Heun": _Sampler("HeunDiscreteScheduler", order=2),
    "DPM2": _Sampler("KDPM2DiscreteScheduler", order=2,
                     note="diffusers' DPM2 keeps the penultimate sigma that A1111 discards"),
    "DPM2 a": _Sampler("KDPM2AncestralDiscreteScheduler", order=2, stochastic=True, eta_zero="DPM2",
                       note="diffusers' DPM2 a keeps the penultimate sigma that A1111 discards"),
    "DPM++ 2M": _Sampler("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "DPM++ SDE": _Sampler("DPMSolverSDEScheduler", order=2, brownian=True, stochastic=True),
    "DPM++ 2M SDE": _Sampler("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
                             stochastic=True),
    "DPM++ 2M SDE Heun": _Sampler("DPMSolverMultistepScheduler",
                                  {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"},
                                  stochastic=True),
    "DPM++ 3M SDE": _Sampler("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
                             stochastic=True,
                             note="diffusers' DPM++ 3M SDE keeps the penultimate sigma that A1111 discards"),
    # no ancestral single-step solver in diffusers; the deterministic one is the documented stand-in
    "DPM++ 2S a": _Sampler("DPMSolverSinglestepScheduler", {"solver_order": 2}, schedules=frozenset(
        {"uniform", "karras", "exponential", "beta"}),
        note="approximated by diffusers' DPMSolverSinglestepScheduler (order 2, not ancestral)"),
    "DDIM": _Sampler("DDIMScheduler", {"set_alpha_to_one": False}, timestep_sampler=True,
                     schedules=frozenset({"leading"})),
    "PLMS": _Sampler("PNDMScheduler", {"skip_prk_steps": True, "set_alpha_to_one": False}, timestep_sampler=True,
                     schedules=frozenset({"leading"})),
    "UniPC": _Sampler("UniPCMultistepScheduler", {"solver_type": "bh1", "solver_order": 3, "lower_order_final": True},
                      timestep_sampler=True, schedules=frozenset({"leading"})),
    "LCM": _Sampler("LCMScheduler", schedules=_SPACING_ONLY),
}

# A1111 samplers diffusers has no counterpart for: refused rather than silently replaced, so a job never returns a
# different sampler's picture under the requested name.
_MISSING = {
    "DPM fast": "k-diffusion's DPM-Solver-fast has no diffusers scheduler; use 'DPM++ 2M'",
    "DPM adaptive": "k-diffusion's adaptive DPM-Solver has no diffusers scheduler; use 'DPM++ 2M'",
    "Restart": "the Restart sampler has no diffusers scheduler; use 'DPM++ 2M' or 'DPM++ SDE'",
    "DDIM CFG++": "DDIM CFG++ has no diffusers scheduler; use 'DDIM'",
}

# A1111 schedule label -> (flag group, kwargs). "Automatic" reaching here means "the model's own schedule":
# k-diffusion's DiscreteSchedule.get_sigmas(n), timesteps linearly spaced 999 -> 0.
_SCHEDULES: dict[str, tuple[str, dict[str, Any]]] = {
    "Automatic": ("uniform", {"timestep_spacing": "linspace"}),
    "Uniform": ("uniform", {"timestep_spacing": "linspace"}),
    # A1111's "normal" schedule spaces timesteps linearly from t(sigma_max) to t(sigma_min): the same sigmas
    "Normal": ("uniform", {"timestep_spacing": "linspace"}),
    "Karras": ("karras", {"timestep_spacing": "linspace", "use_karras_sigmas": True}),
    "Exponential": ("exponential", {"timestep_spacing": "linspace", "use_exponential_sigmas": True}),
    # polyexponential with A1111's rho = 1 is the exponential schedule
    "Polyexponential": ("exponential", {"timestep_spacing": "linspace", "use_exponential_sigmas": True}),
    "Beta": ("beta", {"timestep_spacing": "linspace", "use_beta_sigmas": True}),
    "SGM Uniform": ("trailing", {"timestep_spacing": "trailing"}),
    "Simple": ("trailing", {"timestep_spacing": "trailing"}),
    # A1111's ddim schedule: range(0, 1000, 1000 // n) + 1
    "DDIM": ("leading", {"timestep_spacing": "leading", "steps_offset": 1}),
}
_UNSUPPORTED_SCHEDULES = {
    "KL Optimal": "the KL Optimal schedule needs custom sigmas, which the img2img ControlNet pipelines do not take",
    "Align Your Steps": "Align Your Steps needs custom sigmas, which the img2img ControlNet pipelines do not take",
}
# the schedule a timestep sampler always uses (A1111 ignores the schedule type for them)
_TIMESTEP_SCHEDULE = ("leading", {"timestep_spacing": "leading", "steps_offset": 1})


def scheduler_spec(sampler: str, schedule: str, eta: float | None = None) -> SchedulerSpec:
    """The diffusers scheduler for an A1111 (sampler, schedule label) pair; raise FieldError if none fits.

    ``eta`` is the request's (None = A1111's option defaults: 1.0 for ancestral/SDE samplers, 0 for DDIM). A1111
    passes it to samplers that take one; diffusers' ancestral schedulers have eta fixed at 1, so 0 (the RunPod
    worker's default) runs the sampler's deterministic counterpart, which is what eta 0 means, and any other value
    is refused.
    """
    if sampler in _MISSING:
        raise FieldError("sampler_name", f"sampler {sampler!r} is not supported: {_MISSING[sampler]}")
    entry = _SAMPLERS.get(sampler)
    if entry is None:
        raise FieldError("sampler_name", f"unknown sampler {sampler!r}")
    if entry.timestep_sampler:
        # A1111's DDIM/PLMS/UniPC build their own timesteps; the schedule type does not apply to them
        group, schedule_kwargs = _TIMESTEP_SCHEDULE
    else:
        if schedule in _UNSUPPORTED_SCHEDULES:
            raise FieldError("scheduler", f"schedule type {schedule!r} is not supported: "
                                          f"{_UNSUPPORTED_SCHEDULES[schedule]}")
        if schedule not in _SCHEDULES:
            raise FieldError("scheduler", f"unknown schedule type {schedule!r}")
        group, schedule_kwargs = _SCHEDULES[schedule]
    if group not in entry.schedules:
        raise FieldError("scheduler", f"schedule type {schedule!r} is not available for sampler "
                                      f"{sampler!r} in diffusers ({entry.class_name})")
    eta_param, eta_info, runs = None, None, entry
    if sampler == "DDIM":
        if eta is not None and eta != 0:
            eta_param, eta_info = eta, ("Eta DDIM", eta)
    elif eta is not None and entry.stochastic and eta != 1:
        if eta == 0 and entry.eta_zero:
            runs, eta_info = _SAMPLERS[entry.eta_zero], ("Eta", eta)
        else:
            raise FieldError("eta", f"eta {eta} is not supported for sampler {sampler!r}: diffusers runs it "
                                    "with eta 1" + (" (or 0)" if entry.eta_zero else ""))
    kwargs = {**runs.kwargs, **schedule_kwargs}
    if runs.class_name == "DPMSolverSinglestepScheduler":
        kwargs.pop("timestep_spacing", None)  # the class spaces its own timesteps
    return SchedulerSpec(
        sampler=sampler, schedule=schedule, class_name=runs.class_name, kwargs=kwargs, order=runs.order,
        timestep_sampler=runs.timestep_sampler, brownian=runs.brownian, stochastic=runs.stochastic,
        note=entry.note, eta=eta_param, eta_info=eta_info,
    )


def supported_pairs() -> list[tuple[str, str]]:
    """Every (sampler, schedule label) pair the runner can run: for docs and tests."""
    pairs = []
    for sampler in _SAMPLERS:
        for schedule in (*_SCHEDULES, *_UNSUPPORTED_SCHEDULES):
            try:
                scheduler_spec(sampler, schedule)
            except FieldError:
                continue
            pairs.append((sampler, schedule))
    return pairs
