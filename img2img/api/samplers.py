"""A1111 (1.9+) samplers and schedules: their names, how a request's names resolve to one pair, and what runs each
pair (a diffusers scheduler and its arguments) or why it cannot run. One table for validation and the runner: a
request ``img2img validate`` accepts is one the runner runs.

Resolution follows A1111's ``sd_samplers.get_sampler_and_scheduler`` (modules/sd_samplers.py, v1.9/1.10):

1. the sampler name is ``sampler_name or sampler_index``;
2. the schedule starts as the request's ``scheduler`` (name or label), Automatic when unset;
3. a legacy combined name ("DPM++ 2M Karras", "DPM++ SDE Karras", "DPM++ 2M SDE Exponential") ending in
   ``" " + <label | name | alias>`` of a schedule is split, and that suffix *overrides* an explicit ``scheduler``;
4. the remaining name is looked up.

We are stricter than A1111 in one respect, on purpose: A1111 silently falls back to "DPM++ 2M" for an unknown
sampler and to Automatic for an unknown scheduler, so a typo changes the picture without a word. Here an unknown
name is refused, with the list of valid ones. We are more lenient in another: a sampler may also be given by an
alias (``k_euler_a``) or in any letter case ("euler a"), as A1111's infotext parser accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from img2img.api.errors import FieldError


@dataclass(frozen=True)
class Sampler:
    name: str  # canonical A1111 name, as it appears in info/infotext ("DPM++ SDE")
    aliases: tuple[str, ...] = ()
    # the schedule "Automatic" means for this sampler; None = the model's own schedule (A1111 "model default")
    default_scheduler: str | None = None


@dataclass(frozen=True)
class Scheduler:
    name: str  # "karras"
    label: str  # "Karras": what info/infotext show as "Schedule type"
    aliases: tuple[str, ...] = field(default=())


# A1111 modules/sd_samplers_kdiffusion.py `samplers_k_diffusion`, sd_samplers_timesteps.py, sd_samplers_lcm.py.
# Order matters: it is A1111's order (the UI list, and /sdapi/v1/samplers).
SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DPM++ 2M", ("k_dpmpp_2m",), "karras"),
    Sampler("DPM++ SDE", ("k_dpmpp_sde",), "karras"),
    Sampler("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "exponential"),
    Sampler("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), "exponential"),
    Sampler("DPM++ 2S a", ("k_dpmpp_2s_a",), "karras"),
    Sampler("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), "exponential"),
    Sampler("Euler a", ("k_euler_a", "k_euler_ancestral")),
    Sampler("Euler", ("k_euler",)),
    Sampler("LMS", ("k_lms",)),
    Sampler("Heun", ("k_heun",)),
    Sampler("DPM2", ("k_dpm_2",), "karras"),
    Sampler("DPM2 a", ("k_dpm_2_a",), "karras"),
    Sampler("DPM fast", ("k_dpm_fast",)),
    Sampler("DPM adaptive", ("k_dpm_ad",)),
    Sampler("Restart", ("restart",), "karras"),
    Sampler("DDIM", ("ddim",)),
    Sampler("DDIM CFG++", ("ddim_cfgpp",)),
    Sampler("PLMS", ("plms",)),
    Sampler("UniPC", ("unipc",)),
    Sampler("LCM", ("k_lcm",)),
)

# A1111 modules/sd_schedulers.py `schedulers`, in A1111's order (suffix matching walks it in this order).
SCHEDULERS: tuple[Scheduler, ...] = (
    Scheduler("automatic", "Automatic"),
    Scheduler("uniform", "Uniform"),
    Scheduler("karras", "Karras"),
    Scheduler("exponential", "Exponential"),
    Scheduler("polyexponential", "Polyexponential"),
    Scheduler("sgm_uniform", "SGM Uniform", ("SGMUniform",)),
    Scheduler("kl_optimal", "KL Optimal"),
    Scheduler("align_your_steps", "Align Your Steps"),
    Scheduler("simple", "Simple"),
    Scheduler("normal", "Normal"),
    Scheduler("ddim", "DDIM"),
    Scheduler("beta", "Beta"),
)

AUTOMATIC = SCHEDULERS[0]

_SAMPLER_BY_NAME = {s.name: s for s in SAMPLERS}
_SAMPLER_BY_LOWER = {key.lower(): s for s in SAMPLERS for key in (s.name, *s.aliases)}
_SCHEDULER_BY_KEY = {key: s for s in SCHEDULERS for key in (s.name, s.label, *s.aliases)}
_SCHEDULER_BY_NAME = {s.name: s for s in SCHEDULERS}

SAMPLER_NAMES: tuple[str, ...] = tuple(s.name for s in SAMPLERS)
SCHEDULER_LABELS: tuple[str, ...] = tuple(s.label for s in SCHEDULERS)


def find_sampler(name: str) -> Sampler | None:
    """A sampler by canonical name, alias or any letter case; None when unknown."""
    return _SAMPLER_BY_NAME.get(name) or _SAMPLER_BY_LOWER.get(name.lower())


def find_scheduler(key: str) -> Scheduler | None:
    """A scheduler by name, label or alias ("karras", "Karras", "SGMUniform"); None when unknown."""
    return _SCHEDULER_BY_KEY.get(key) or _SCHEDULER_BY_KEY.get(key.lower())


def split_schedule_suffix(name: str) -> tuple[str, Scheduler | None]:
    """Split a legacy combined name: "DPM++ 2M Karras" -> ("DPM++ 2M", karras); no suffix -> (name, None).

    Suffixes are schedule labels, names and aliases, case-sensitive as in A1111. Where several match, the longest
    that leaves a known sampler wins: "Euler SGM Uniform" is Euler + SGM Uniform. (A1111 takes the first schedule in
    its list, strips " Uniform", finds no sampler "Euler SGM" and silently runs DPM++ 2M.)
    """
    matches = [(option, scheduler) for scheduler in SCHEDULERS
               for option in (scheduler.label, scheduler.name, *scheduler.aliases) if name.endswith(" " + option)]
    for option, scheduler in sorted(matches, key=lambda m: -len(m[0])):
        base = name[: -len(option) - 1]
        if find_sampler(base):
            return base, scheduler
    return name, None


def valid_sampler_list() -> str:
    return ", ".join(SAMPLER_NAMES)


def valid_scheduler_list() -> str:
    return ", ".join(f"{s.name} ({s.label})" for s in SCHEDULERS)


@dataclass(frozen=True)
class Resolved:
    sampler: Sampler
    # the schedule A1111 runs: Automatic is replaced by the sampler's default when it has one
    # (so "DPM++ SDE" + automatic -> karras); stays Automatic for samplers using the model's own schedule
    scheduler: Scheduler

    def pair(self) -> tuple[str, str]:
        return self.sampler.name, self.scheduler.label


def resolve(sampler_name: str | None, sampler_index: str | None, scheduler: str | None) -> Resolved:
    """Resolve a request's sampler fields as A1111 1.9+ does; raise FieldError for a name we do not know."""
    requested = sampler_name or sampler_index or SAMPLERS[0].name
    sampler_field = "sampler_name" if sampler_name or not sampler_index else "sampler_index"

    explicit = None
    if scheduler:  # "" and None both mean Automatic, as in A1111 (`schedulers_map.get(x, Automatic)` + `or`)
        explicit = find_scheduler(scheduler)
        if explicit is None:
            raise FieldError("scheduler", f"unknown scheduler {scheduler!r}; valid: {valid_scheduler_list()}")

    sampler, parsed = find_sampler(requested), None
    if sampler is None:
        base, parsed = split_schedule_suffix(requested)
        sampler = find_sampler(base) if parsed else None
    if sampler is None:
        raise FieldError(sampler_field, f"unknown sampler {requested!r}; valid: {valid_sampler_list()} "
                                        "(optionally followed by a schedule, e.g. 'DPM++ 2M Karras')")

    chosen = parsed or explicit or AUTOMATIC
    if chosen is AUTOMATIC and sampler.default_scheduler:
        chosen = _SCHEDULER_BY_NAME[sampler.default_scheduler]
    return Resolved(sampler=sampler, scheduler=chosen)


# --- what runs each sampler -----------------------------------------------------------------------------------
#
# Schedules: A1111 samples k-diffusion schedules over the model's *whole* sigma range (timesteps 999 -> 0);
# diffusers' SDXL/SD configs say ``timestep_spacing="leading"``, which shrinks the range. So every k-diffusion
# schedule sets ``timestep_spacing="linspace"`` unless the schedule itself is a spacing ("SGM Uniform"/"Simple" ->
# "trailing", "DDIM" -> "leading" + offset 1).
#
# Step counts (A1111 ``setup_img2img_steps``): k-diffusion samplers run ``t_enc + 1`` steps in img2img; DDIM and
# PLMS run A1111's own timestep loop (``SchedulerSpec.timestep_sampler``, see the runner's plan).


@dataclass(frozen=True)
class SamplerParams:
    """The request's sampler parameters; None = not sent (A1111's option default applies)."""

    eta: float | None = None
    s_churn: float | None = None
    s_tmin: float | None = None
    s_tmax: float | None = None
    s_noise: float | None = None


@dataclass(frozen=True)
class SchedulerSpec:
    sampler: str  # A1111's canonical sampler name
    schedule: str  # A1111's schedule label, as it runs ("Karras"; "Automatic" = the model's own)
    class_name: str  # a diffusers scheduler class
    kwargs: dict[str, Any] = field(default_factory=dict)
    # 2 for samplers that evaluate the model twice per step (Heun, DPM++ SDE): diffusers' `scheduler.order`
    order: int = 1
    # DDIM/PLMS: A1111's own timestep loop (its step count and noise level; see the runner's plan)
    timestep_sampler: bool = False
    # A1111's Brownian-tree noise, seeded with the batch's seeds (DPM++ SDE, DPM++ 2M SDE)
    brownian: bool = False
    # ancestral / SDE samplers draw fresh noise every step (A1111's ENSD applies to them)
    stochastic: bool = False
    # `eta` for the pipeline call (DDIM only); None = the pipeline's default
    eta: float | None = None
    # A1111's extra_generation_params entry for a non-default eta: ("Eta", 0.5) / ("Eta DDIM", 0.3)
    eta_info: tuple[str, float] | None = None
    # the factor on the sampler's fresh noise (A1111's s_noise), for the samplers that take it
    s_noise: float = 1.0
    # A1111 writes ENSD into the infotext (is_sampler_using_eta_noise_seed_delta)
    uses_ensd: bool = False


@dataclass(frozen=True)
class _Runs:
    class_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    order: int = 1
    timestep_sampler: bool = False
    brownian: bool = False
    stochastic: bool = False
    schedules: frozenset[str] = frozenset({"uniform", "karras", "exponential", "beta", "trailing", "leading"})
    eta_zero: "_Runs | None" = None  # what eta 0 runs: the same steps without the noise


_SPACING_ONLY = frozenset({"uniform", "trailing", "leading"})
_TIMESTEPS_ONLY = frozenset({"leading"})
_EULER = _Runs("EulerDiscreteScheduler")
_DPMPP_2M = _Runs("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2})
_DPMPP_2M_HEUN = _Runs("DPMSolverMultistepScheduler",
                       {"algorithm_type": "dpmsolver++", "solver_order": 2, "solver_type": "heun"})

_RUNS: dict[str, _Runs] = {
    "Euler a": _Runs("EulerAncestralDiscreteScheduler", stochastic=True, schedules=_SPACING_ONLY, eta_zero=_EULER),
    "Euler": _EULER,
    "LMS": _Runs("LMSDiscreteScheduler"),
    "Heun": _Runs("HeunDiscreteScheduler", order=2),
    "DPM++ 2M": _DPMPP_2M,
    "DPM++ SDE": _Runs("DPMSolverSDEScheduler", order=2, brownian=True, stochastic=True),
    # k-diffusion's 2M SDE at eta 0 is exactly DPM++ 2M (midpoint / Heun correction alike)
    "DPM++ 2M SDE": _Runs("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
                          brownian=True, stochastic=True, eta_zero=_DPMPP_2M),
    "DPM++ 2M SDE Heun": _Runs("DPMSolverMultistepScheduler",
                               {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"},
                               brownian=True, stochastic=True, eta_zero=_DPMPP_2M_HEUN),
    "DDIM": _Runs("DDIMScheduler", {"set_alpha_to_one": False, "clip_sample": False, "thresholding": False},
                  timestep_sampler=True, schedules=_TIMESTEPS_ONLY),
    "PLMS": _Runs("PNDMScheduler", {"skip_prk_steps": True, "set_alpha_to_one": False}, timestep_sampler=True,
                  schedules=_TIMESTEPS_ONLY),
}

# A1111 samplers no diffusers scheduler draws as A1111 does: refused rather than replaced, so a job never returns a
# different sampler's picture under the requested name.
_REFUSED = {
    "DPM fast": "k-diffusion's DPM-Solver-fast has no diffusers scheduler",
    "DPM adaptive": "k-diffusion's adaptive DPM-Solver has no diffusers scheduler",
    "Restart": "the Restart sampler has no diffusers scheduler",
    "DDIM CFG++": "DDIM CFG++ has no diffusers scheduler",
    "DPM++ 2S a": "diffusers has no ancestral single-step DPM-Solver++",
    "DPM2": "A1111 drops the schedule's next-to-last sigma for DPM2, which diffusers' KDPM2 cannot",
    "DPM2 a": "A1111 drops the schedule's next-to-last sigma for DPM2 a, which diffusers' KDPM2 cannot",
    "DPM++ 3M SDE": "A1111 drops the schedule's next-to-last sigma for DPM++ 3M SDE, which diffusers cannot",
    "UniPC": "A1111's UniPC runs on its own time grid (from t_enc/1000), not diffusers' timesteps",
    "LCM": "A1111's LCM sampler steps on k-diffusion sigmas, diffusers' LCMScheduler on its own timesteps",
}
_ALTERNATIVE = "use 'DPM++ 2M', 'Euler a', 'DPM++ SDE' or 'DDIM'"

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
# the schedule A1111's DDIM and PLMS always use (they ignore the schedule type)
_TIMESTEP_SCHEDULE = ("leading", {"timestep_spacing": "leading", "steps_offset": 1})

# Which request parameters each A1111 1.10 sampler reads (sd_samplers_kdiffusion.py `sampler_extra_params`, and
# the sampler functions that take `eta`); every other sampler ignores them, as A1111 does.
ETA_DEFAULTS = {**dict.fromkeys(("Euler a", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun",
                                 "DPM++ 3M SDE", "DPM fast", "DPM adaptive"), 1.0),  # opts eta_ancestral
                **dict.fromkeys(("DDIM", "DDIM CFG++"), 0.0)}  # opts eta_ddim
CHURN_SAMPLERS = frozenset({"Euler", "Heun", "DPM2"})  # s_churn, s_tmin, s_tmax, s_noise
# A1111's "uses_ensd" samplers: the infotext shows ENSD for them unless eta is 0 (ENSD re-seeds every image's noise
# after its first draw whatever the sampler; the flag only decides what the infotext says)
USES_ENSD = frozenset({"Euler a", "DPM2 a", "DPM++ 2S a", "DPM fast", "DPM adaptive"})
S_NOISE_SAMPLERS = CHURN_SAMPLERS | {"DPM fast", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE",
                                     "DPM++ 2M SDE Heun", "DPM++ 3M SDE"}


def scheduler_spec(sampler: str, schedule: str, params: SamplerParams = SamplerParams()) -> SchedulerSpec:
    """What runs an A1111 (sampler, schedule label) pair with the request's sampler parameters; FieldError (on the
    field to change) where nothing draws what A1111 would.

    Parameters, as A1111 1.10 reads them: ``eta`` (None = 1 for ancestral/SDE samplers, 0 for DDIM) goes to the
    samplers that take one; diffusers' ancestral/SDE schedulers run eta 1, and eta 0 runs the same steps without
    noise where diffusers has them (Euler a -> Euler, DPM++ 2M SDE -> DPM++ 2M); DDIM takes any eta. ``s_churn``
    adds noise before Euler/Heun/DPM2 steps (diffusers adds it after the model call: refused); ``s_tmin`` /
    ``s_tmax`` / ``s_noise`` only shape that churn, so they change nothing at churn 0. ``s_noise`` scales the
    fresh noise of DPM++ SDE and DPM++ 2M SDE.
    """
    if sampler in _REFUSED:
        raise FieldError("sampler_name", f"sampler {sampler!r} is not supported: {_REFUSED[sampler]}; "
                                         f"{_ALTERNATIVE}")
    runs = _RUNS.get(sampler)
    if runs is None:
        raise FieldError("sampler_name", f"unknown sampler {sampler!r}")
    if runs.timestep_sampler:
        group, schedule_kwargs = _TIMESTEP_SCHEDULE  # A1111's DDIM/PLMS build their own timesteps
    else:
        if schedule in _UNSUPPORTED_SCHEDULES:
            raise FieldError("scheduler", f"schedule type {schedule!r} is not supported: "
                                          f"{_UNSUPPORTED_SCHEDULES[schedule]}")
        if schedule not in _SCHEDULES:
            raise FieldError("scheduler", f"unknown schedule type {schedule!r}")
        group, schedule_kwargs = _SCHEDULES[schedule]
    if group not in runs.schedules:
        raise FieldError("scheduler", f"schedule type {schedule!r} is not available for sampler "
                                      f"{sampler!r} in diffusers ({runs.class_name})")

    eta_param, eta_info, ran = None, None, runs
    default_eta = ETA_DEFAULTS.get(sampler)
    eta = params.eta
    if default_eta is not None and eta is not None and eta != default_eta:
        eta_info = ("Eta DDIM" if sampler == "DDIM" else "Eta", eta)
        if sampler == "DDIM":
            eta_param = eta
        elif eta == 0 and runs.eta_zero is not None:
            ran = runs.eta_zero
        else:
            raise FieldError("eta", f"eta {eta:g} is not supported for sampler {sampler!r}: diffusers runs it with "
                                    "eta 1" + (" (or 0)" if runs.eta_zero else ""))
    if sampler in CHURN_SAMPLERS and params.s_churn:
        raise FieldError("s_churn", f"s_churn {params.s_churn:g} is not supported for sampler {sampler!r}: "
                                    "diffusers adds the churn noise after the model call, A1111 before it; use 0")
    s_noise = 1.0
    if sampler in S_NOISE_SAMPLERS - CHURN_SAMPLERS and params.s_noise is not None and ran.stochastic:
        s_noise = float(params.s_noise)

    kwargs = {**ran.kwargs, **schedule_kwargs}
    return SchedulerSpec(
        sampler=sampler, schedule=schedule, class_name=ran.class_name, kwargs=kwargs, order=ran.order,
        timestep_sampler=ran.timestep_sampler, brownian=ran.brownian, stochastic=ran.stochastic,
        eta=eta_param, eta_info=eta_info, s_noise=s_noise,
        uses_ensd=sampler in USES_ENSD and (eta if eta is not None else default_eta) != 0,
    )


def img2img_t_enc(steps: int, denoising_strength: float, fix_steps: bool = False) -> tuple[int, int]:
    """(schedule length, t_enc) as A1111's ``setup_img2img_steps``: t_enc = int(min(ds, 0.999) * steps) on a
    ``steps`` schedule; with the ``img2img_fix_steps`` option the schedule is int(steps / min(ds, 0.999)) long and
    t_enc = steps - 1."""
    ds = min(denoising_strength, 0.999)
    if fix_steps:
        return (int(steps / ds) if ds > 0 else steps), steps - 1
    return steps, int(ds * steps)


def timestep_sampler_refusals(spec: SchedulerSpec, t_enc: int | None, refiner: bool) -> dict[str, str]:
    """DDIM/PLMS requests that A1111 runs in a way the runner does not: field -> reason. ``t_enc``: the img2img
    pass's (None for a pass from noise, txt2img's first); ``refiner``: the request switches to a refiner while this
    sampler runs."""
    if not spec.timestep_sampler:
        return {}
    found = {}
    if t_enc is not None and t_enc < 2:
        found["denoising_strength"] = (f"{spec.sampler} runs t_enc - 1 = {t_enc - 1} steps here (t_enc = "
                                       "denoising_strength x steps, rounded down): A1111 returns the noised image "
                                       "unsampled; raise steps or denoising_strength")
    if refiner and spec.class_name == "PNDMScheduler":
        found["refiner_checkpoint"] = ("PLMS with a refiner is not supported: A1111 carries PLMS's multistep "
                                       "history across the switch; use DDIM, a k-diffusion sampler or no refiner")
    return found


def timestep_grid(steps: int) -> tuple[int, ...]:
    """The timesteps A1111's DDIM and PLMS step over for a ``steps`` schedule, ascending (sd_samplers_timesteps.py
    ``get_timesteps``): range(0, 1000, 1000 // steps) + 1, clipped to 999. That is ``steps`` timesteps when
    ``steps`` divides 1000, else more at the top (30 steps: 1, 34, …, 991, thirty-one). A1111's loop takes a step
    from every one but the first (timesteps[0] = 1)."""
    return tuple(min(t + 1, 999) for t in range(0, 1000, 1000 // steps))


def txt2img_timestep_refusal(spec: SchedulerSpec, steps: int) -> str | None:
    """Why a DDIM/PLMS pass from noise (txt2img's first) cannot run as A1111 runs it; None when it can. At 1 step
    A1111 takes none (it never steps from timestep 1) and returns the noise. Where A1111 clips its top timestep to
    999 (steps = 3, 9, 27, 36, 37, 101 to 111), its first step goes to the next timestep of its list, which is not
    the one diffusers steps to (999 - 1000 // steps)."""
    grid = timestep_grid(steps)
    if not spec.timestep_sampler:
        return None
    if len(grid) < 2:
        return f"{spec.sampler} at 1 step: A1111 takes no step and returns the noise; use 2 or more"
    if grid[-1] - grid[-2] != 1000 // steps:
        return (f"{spec.sampler} at {steps} steps: A1111 clips its first timestep to 999 and steps from there to "
                f"{grid[-2]}, which diffusers' {spec.class_name} cannot do; use another step count")
    return None


SAME_SAMPLER = "Use same sampler"  # A1111's UI choice for "the first pass's sampler" (hr_sampler_name)
SAME_SCHEDULER = "Use same scheduler"


def hires_resolve(sampler_name: str | None, sampler_index: str | None, scheduler: str | None,
                  hr_sampler_name: str | None, hr_scheduler: str | None) -> Resolved:
    """The hires fix's second-pass sampler and schedule, as A1111 1.10 picks them; FieldError for unknown names.

    The sampler is ``hr_sampler_name``, else the first pass's. The schedule is ``hr_scheduler``, else the first
    pass's as A1111's API keeps it: the request's ``scheduler``, or a legacy name's suffix unless that suffix is the
    sampler's own default ("DPM++ 2M Karras" keeps none: its Automatic is Karras). Automatic then means the
    second-pass sampler's default. The UI's "Use same sampler" / "Use same scheduler" mean absent.
    """
    first = resolve(sampler_name, sampler_index, scheduler)
    kept = scheduler or None
    requested = sampler_name or sampler_index or SAMPLERS[0].name
    if kept is None and find_sampler(requested) is None:
        suffix = split_schedule_suffix(requested)[1]
        if suffix is not None and suffix.name != first.sampler.default_scheduler:
            kept = suffix.label
    sampler = hr_sampler_name if hr_sampler_name not in (None, "", SAME_SAMPLER) else first.sampler.name
    schedule = hr_scheduler if hr_scheduler not in (None, "", SAME_SCHEDULER) else kept
    try:
        return resolve(sampler, None, schedule)
    except FieldError as exc:  # the first pass's names resolved above: a hires name is at fault
        raise FieldError({"sampler_name": "hr_sampler_name", "scheduler": "hr_scheduler"}[exc.field],
                         str(exc)) from None


def supported_pairs() -> list[tuple[str, str]]:
    """Every (sampler, schedule label) pair the runner can run: for docs and tests."""
    pairs = []
    for sampler in SAMPLER_NAMES:
        for schedule in SCHEDULER_LABELS:
            try:
                scheduler_spec(sampler, schedule)
            except FieldError:
                continue
            pairs.append((sampler, schedule))
    return pairs
