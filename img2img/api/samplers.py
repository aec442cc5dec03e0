"""A1111 (1.9+) sampler and scheduler names, and how a request's names resolve to one pair.

This module only *names* things: which sampler and which schedule a request asks for, in A1111's own spelling.
The runner maps the resolved pair to a diffusers scheduler (``img2img_runner.samplers``).

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
