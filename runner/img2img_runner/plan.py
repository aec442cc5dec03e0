"""Payload -> plan: every A1111 decision about a job, as data (pure; no torch, no I/O).

``make_plan`` takes the validated payload (img2img's or txt2img's), the models the catalog resolved, the sizes of the
decoded images and a random source for ``seed: -1``, and returns a ``Plan``: sizes, seeds per image, batches, the
scheduler, A1111's step count (img2img's, and the ``strength`` that makes diffusers run it; txt2img's), the refiner
switch, one ``UnitPlan`` per enabled ControlNet unit, and for txt2img's hires fix a ``HiresPlan`` (the second pass:
its upscaler, size, sampler, steps and prompts). ``Plan.passes`` lists the sampler runs of a batch. ``execute``
turns the plan into pipeline calls; ``info`` turns plan + results into A1111's answer.

A1111 sources (v1.9/1.10): modules/processing.py (seeds, prompts, batches, ``Processed``, txt2img's hires fix),
sd_samplers_common.py (``setup_img2img_steps``), sd_samplers_kdiffusion.py / sd_samplers_timesteps.py (executed
steps, "Schedule type"), images.py (``resize_image``); ControlNet: Mikubill/sd-webui-controlnet scripts/controlnet.py
(``choose_input_image``, ``get_control``, ``get_target_dimensions``), internal_controlnet/args.py and
external_code.py (``pixel_perfect_resolution``, ``HiResFixOption``), scripts/hook.py (control modes).
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from img2img.api import hires as hires_fix
from img2img.api.prompts import positive_text
from img2img.api.samplers import SAME_SAMPLER, SchedulerSpec, img2img_t_enc, scheduler_spec, timestep_grid
from img2img.api.txt2img import Txt2ImgPayload
from img2img_runner.catalog import Entry, Resolved
from img2img_runner.inpaint import Inpainting

if TYPE_CHECKING:  # the payload types are pydantic models from img2img.api (no torch either)
    from img2img.api.controlnet import ControlNetUnit
    from img2img.api.payload import ProcessingPayload

SEED_RANGE = 4294967294  # A1111 get_fixed_seed: random.randrange(4294967294) -> [0, 4294967293]
LATENT_FACTOR = 8  # pixels per latent cell (opt_f)
# A1111 img2img resize_mode -> the ControlNet resize mode CN uses when a unit takes the init image
I2I_TO_CN_RESIZE = {0: "Just Resize", 1: "Crop and Resize", 2: "Resize and Fill", 3: "Just Resize"}
# CN hook.py soft injection: residual k of 13 (SD 1.5: 12 encoder + middle) scaled by 0.825 ** (12 - k);
# SDXL's 10 residuals take the first 10 of these (CN zips the control list with the 13 scales)
SOFT_INJECTION_SCALES = tuple(0.825 ** float(12 - k) for k in range(13))


@dataclass(frozen=True)
class Steps:
    """A1111's img2img steps, and where they fall in the diffusers schedule.

    k-diffusion samplers run t_enc + 1 steps from ``sigmas[steps - t_enc - 1]``, the noise at that first sigma.
    DDIM and PLMS (sd_samplers_timesteps.py) noise the latent to ``timesteps[t_enc]`` and then loop over
    ``timesteps[:t_enc]`` from the top: t_enc - 1 steps, the first at ``timesteps[t_enc - 1]``, the last landing on
    ``timesteps[0]`` (no step from it). A1111's progress counts ``t_enc + 1`` in both cases.
    """

    requested: int  # A1111 p.steps: what info/infotext report
    schedule: int  # the sampler's schedule length: diffusers' num_inference_steps
    t_enc: int
    executed: int  # sampler steps A1111 runs
    strength: float  # the `strength` that makes diffusers start at `first_index`
    first_index: int  # schedule index (in steps) of the first executed step
    timestep_sampler: bool  # DDIM/PLMS: noised one schedule step above the first step; no step from the last
    order: int = 1  # model evaluations per step (diffusers' scheduler.order)
    double_first: bool = False  # PLMS: its first step evaluates the model twice

    @property
    def sampling_steps(self) -> int:
        """A1111's ``state.sampling_steps`` in img2img (``launch_sampling(t_enc + 1)``)."""
        return self.t_enc + 1

    def step_of(self, evaluation: int) -> int:
        """The sampler step (0-based) that the job's ``evaluation``-th model evaluation belongs to."""
        if self.double_first:
            return max(evaluation - 1, 0)
        return evaluation // self.order

    @property
    def evaluations(self) -> int:
        if self.double_first:
            return self.executed + 1
        return self.order * self.executed - (self.order - 1)  # a 2nd-order sampler's last step is an Euler step


@dataclass(frozen=True)
class Batch:
    index: int  # A1111's iteration n (0 .. n_iter - 1)
    seeds: tuple[int, ...]  # one per image of the batch
    subseeds: tuple[int, ...]
    prompts: tuple[str, ...]
    negative_prompts: tuple[str, ...]
    init_image_indices: tuple[int, ...]  # which init image each image of the batch starts from

    @property
    def size(self) -> int:
        return len(self.seeds)


@dataclass(frozen=True)
class UnitPlan:
    """One enabled ControlNet unit, as CN runs it."""

    index: int  # among enabled units: "ControlNet {index}" in infotext
    request_index: int  # position in alwayson_scripts.controlnet.args
    module: str  # canonical preprocessor name ("canny")
    module_as_sent: str
    model: str  # the unit's model as sent ("control_v11p_sd15_canny [hash]"), for infotext
    controlnet: Entry  # the catalog entry that runs
    annotator: Entry | None  # the catalog's annotator weights its preprocessor loads (None: it needs none)
    substituted_from: Entry | None  # the entry the unit named, when the catalog substituted another
    weight: float
    guidance_start: float
    guidance_end: float
    # per executed sampler step of the first (or only) pass: does the unit run (guidance_window); None: it sits the
    # pass out (txt2img's hires fix, hr_option "High res only")
    window: tuple[bool, ...] | None
    image: str | None  # the unit's own image field (None = the init image)
    resize_mode: str  # what the detect map is resized with (the init image case uses img2img's resize_mode)
    resize_mode_as_sent: str  # the unit's own value (infotext shows it)
    processor_res: int  # what the preprocessor runs at: after CN's bounds check and pixel perfect
    processor_res_info: int  # after the bounds check only: CN writes its infotext before pixel perfect
    pixel_perfect: bool
    threshold_a: float | None  # after CN's bounds check; None: the module has no such slider
    threshold_b: float | None
    threshold_a_info: float  # as CN's infotext shows them (modules without a slider: 0.5 for out-of-range)
    threshold_b_info: float
    control_mode: str
    soft_injection: bool  # per-residual scales 0.825 ** (12 - k)
    cfg_injection: bool  # control only on the conditional half of the CFG batch
    save_detected_map: bool
    sent: dict  # the unit's keys as sent, raw JSON values (the legacy infotext format shows them)
    hires_window: tuple[bool, ...] | None = None  # the same for the hires pass; None: no hires pass, or it sits out


@dataclass(frozen=True)
class LoraPlan:
    """One LoRA of the prompt, as it is applied: A1111's weights on the text encoders and on the UNet."""

    entry: Entry
    mentioned: str  # the name as the tag wrote it ("Lora hashes" lists it so)
    te: float
    unet: float


@dataclass(frozen=True)
class RefinerPlan:
    entry: Entry
    switch_at: float | None  # None: A1111 switches at the first step (the refiner does the whole job)


@dataclass(frozen=True)
class HiresPlan:
    """txt2img's hires fix: the second pass, an img2img pass over the upscaled first pass (A1111's
    ``sample_hr_pass``)."""

    upscaler: str | None  # hr_upscaler as sent (None: A1111's default latent upscale)
    latent_mode: tuple[str, bool] | None  # (interpolation mode, antialias) of a latent upscaler; None: an image one
    size: hires_fix.HiresSize  # the upscale target, the cut, the answer's size
    sampler: str
    schedule: str
    scheduler: SchedulerSpec
    steps: Steps  # img2img's arithmetic given a step count: n steps over int(n / denoising_strength)
    guidance_scale: float  # cfg_scale times the hires prompt's composable weight
    prompt_text: str
    negative_prompt: str


@dataclass(frozen=True)
class Pass:
    """One sampler run over a batch: img2img's only one, txt2img's first, or the hires fix's second."""

    name: str  # "base" (the first or only pass) or "hires"
    scheduler: SchedulerSpec
    steps: Steps
    run_width: int  # what the pass renders (multiples of 8)
    run_height: int
    size_condition: tuple[int, int]  # (width, height) SDXL is conditioned on: the size A1111 aims the pass at
    guidance_scale: float
    prompt_text: str
    negative_prompt: str
    units: tuple[tuple[UnitPlan, tuple[bool, ...]], ...]  # the ControlNet units that run, with their windows
    from_noise: bool  # txt2img's first pass: no image to start from
    refiner: bool  # the refiner may take over in this pass (the job's last: A1111's hires_fix_refiner_pass default)


@dataclass(frozen=True)
class Plan:
    # sizes: A1111 reports the requested size; latents are floor(size / 8)
    width: int
    height: int
    run_width: int  # multiple of 8, what the pipeline renders
    run_height: int
    resize_mode: int
    denoising_strength: float
    sampler: str  # canonical A1111 sampler ("DPM++ SDE")
    schedule: str  # schedule label as it runs ("Karras"; "Automatic" = the model's own)
    scheduler: SchedulerSpec
    steps: Steps
    cfg_scale: float  # as requested (info reports it)
    guidance_scale: float  # what guidance runs at: cfg_scale times the prompt's composable weight ("a cat:1.2")
    prompt_text: str  # the prompt the text encoders get: without that weight
    clip_skip_a1111: int  # CLIP_stop_at_last_layers (1 = last layer); SD 1.5 only, as in A1111
    seed: int
    subseed: int
    subseed_strength: float
    preprocessor_seed: int  # numpy's seed for random preprocessors (shuffle), as CN's set_numpy_seed
    all_seeds: tuple[int, ...]
    all_subseeds: tuple[int, ...]
    all_prompts: tuple[str, ...]
    all_negative_prompts: tuple[str, ...]
    batch_size: int
    n_iter: int
    batches: tuple[Batch, ...]
    noise_multiplier: float
    eta_noise_seed_delta: int
    models: Resolved
    refiner: RefinerPlan | None
    units: tuple[UnitPlan, ...]
    loras: tuple[LoraPlan, ...] = ()  # applied to the checkpoint for the job (not to the refiner's own UNet)
    extra_generation_params: dict = field(default_factory=dict)  # known before sampling, in A1111's order
    txt2img: bool = False  # /sdapi/v1/txt2img: the first pass starts from noise
    hires: HiresPlan | None = None
    inpainting: Inpainting | None = None  # the request sent a mask (img2img)

    @property
    def architecture(self) -> str:
        return self.models.architecture

    @property
    def passes(self) -> tuple[Pass, ...]:
        """The sampler runs of each batch, in order."""
        first = Pass("base", self.scheduler, self.steps, self.run_width, self.run_height, (self.width, self.height),
                     self.guidance_scale, self.prompt_text, self.all_negative_prompts[0],
                     tuple((u, u.window) for u in self.units if u.window is not None), from_noise=self.txt2img,
                     refiner=self.hires is None)
        if self.hires is None:
            return (first,)
        h = self.hires
        second = Pass("hires", h.scheduler, h.steps, h.size.width, h.size.height,
                      (h.size.target_width, h.size.target_height), h.guidance_scale, h.prompt_text, h.negative_prompt,
                      tuple((u, u.hires_window) for u in self.units if u.hires_window is not None),
                      from_noise=False, refiner=True)
        return first, second

    @property
    def images(self) -> int:
        return len(self.all_seeds)


@dataclass(frozen=True)
class ImageSizes:
    """(width, height) of the decoded init images, and of each unit's input image by request index where it is not
    the first init image as sent (the unit's own image; an input cut to an inpainting mask)."""

    init: tuple[tuple[int, int], ...]
    units: dict[int, tuple[int, int]] = field(default_factory=dict)


# --- decisions ---------------------------------------------------------------------------------------------


def fixed_seed(seed: int | None, rng: _random.Random | None = None) -> int:
    """A1111 get_fixed_seed: -1 (or None) -> a random seed in [0, 4294967293] from Python's random."""
    if seed is None or seed == -1:
        return int((rng or _random).randrange(SEED_RANGE))
    return int(seed)


def img2img_steps(steps: int, denoising_strength: float, spec: SchedulerSpec, *, fix_steps: bool = False) -> Steps:
    """A1111's img2img step count, and the diffusers ``strength`` that starts at A1111's first step.

    t_enc as A1111's ``setup_img2img_steps`` (``img2img_t_enc``). diffusers starts int(num_inference_steps *
    strength) steps before the end of its schedule, so strength = (that count + 0.5) / schedule (the half step keeps
    float rounding from losing one), at most 1.
    """
    schedule, t_enc = img2img_t_enc(steps, denoising_strength, fix_steps)
    if spec.timestep_sampler:
        executed, first = t_enc - 1, schedule - t_enc
    else:
        executed = min(t_enc + 1, schedule)
        first = schedule - executed
    strength = min(1.0, (schedule - first + 0.5) / schedule)
    assert min(int(schedule * strength), schedule) == schedule - first, (schedule, strength, first)
    return Steps(requested=steps, schedule=schedule, t_enc=t_enc, executed=executed, strength=strength,
                 first_index=first, timestep_sampler=spec.timestep_sampler, order=spec.order,
                 double_first=spec.class_name == "PNDMScheduler")


def txt2img_steps(steps: int, spec: SchedulerSpec) -> Steps:
    """A1111's txt2img pass, from noise alone (``launch_sampling(steps)``: ``t_enc`` counts as ``steps - 1``).
    k-diffusion samplers take every step of a ``steps`` schedule; DDIM and PLMS one from each timestep of A1111's
    grid but the lowest (``timestep_grid``: steps - 1 when ``steps`` divides 1000, else more, from higher up)."""
    executed = len(timestep_grid(steps)) - 1 if spec.timestep_sampler else steps
    return Steps(requested=steps, schedule=steps, t_enc=steps - 1, executed=executed, strength=1.0, first_index=0,
                 timestep_sampler=spec.timestep_sampler, order=spec.order,
                 double_first=spec.class_name == "PNDMScheduler")


def guidance_window(start: float, end: float, steps: Steps) -> tuple[bool, ...]:
    """Which of A1111's sampler steps a ControlNet unit runs in (sd-webui-controlnet hook.py): CN reads the progress
    as ``state.sampling_step / state.sampling_steps``, where the sampling step is the last finished step's index
    (0 while the first two steps run) and the total is t_enc + 1; the unit is off below ``start`` and above
    ``end``."""
    return tuple(start <= max(i - 1, 0) / steps.sampling_steps <= end for i in range(steps.executed))


def pixel_perfect_resolution(image_size: tuple[int, int], target: tuple[int, int], resize_mode: str) -> int:
    """CN external_code.pixel_perfect_resolution: the preprocessor resolution that maps the input 1:1 onto the
    target. ``image_size`` and ``target`` are (width, height)."""
    raw_w, raw_h = image_size
    target_w, target_h = target
    k0, k1 = target_h / raw_h, target_w / raw_w
    k = min(k0, k1) if resize_mode == "Resize and Fill" else max(k0, k1)
    return int(round(k * min(raw_h, raw_w)))


def unit_resize_mode(unit: "ControlNetUnit", init_resize_mode: int | None) -> str:
    """The resize mode CN applies to the unit's input: the unit's own, or img2img's ``init_resize_mode`` for the init
    image (``choose_input_image``)."""
    if unit.source_image is not None:
        return unit.resize_mode_name
    assert init_resize_mode is not None, "validation refuses a txt2img unit without its own image"
    return I2I_TO_CN_RESIZE[init_resize_mode]


def unit_plan(unit: "ControlNetUnit", index: int, request_index: int, resolved, init_resize_mode: int | None,
              target: tuple[int, int], sizes: ImageSizes, steps: Steps, hires_steps: Steps | None = None,
              sent: dict | None = None, annotator: Entry | None = None) -> UnitPlan:
    """One enabled unit. ``init_resize_mode``: img2img's resize_mode (a unit without its own image takes the init
    image, resized as the init image is); ``hires_steps``: the hires pass's, when txt2img has one (the unit runs in
    the passes its hr_option names); ``annotator``: the catalog entry of its preprocessor's weights, if it needs
    any."""
    pre = unit.preprocessor
    assert resolved is not None, "validation refuses an enabled unit without a model"
    image = unit.source_image
    resize_mode = unit_resize_mode(unit, init_resize_mode)
    source_size = sizes.units[request_index] if request_index in sizes.units else sizes.init[0]
    processor_res = processor_res_info = unit.effective_processor_res
    if unit.pixel_perfect:
        processor_res = pixel_perfect_resolution(source_size, target, resize_mode)
    thr_a, thr_b = unit.effective_thresholds
    control_mode = unit.control_mode_name
    start, end = float(unit.guidance_start), float(unit.effective_guidance_end)
    # CN: hr_option counts only with the hires fix ("Both" otherwise)
    hr_option = unit.hr_option_name if hires_steps is not None else "Both"
    return UnitPlan(
        index=index, request_index=request_index, module=pre.name, module_as_sent=unit.module, model=unit.model,
        controlnet=resolved.runs, annotator=annotator,
        substituted_from=resolved.requested if resolved.substituted else None,
        weight=float(unit.weight), guidance_start=start, guidance_end=end,
        window=guidance_window(start, end, steps) if hr_option != "High res only" else None, image=image,
        resize_mode=resize_mode,
        resize_mode_as_sent=unit.resize_mode_name, processor_res=processor_res, processor_res_info=processor_res_info,
        pixel_perfect=unit.pixel_perfect,
        threshold_a=thr_a, threshold_b=thr_b,
        threshold_a_info=_info_threshold(thr_a, unit.threshold_a),
        threshold_b_info=_info_threshold(thr_b, unit.threshold_b),
        control_mode=control_mode,
        soft_injection=control_mode in ("My prompt is more important", "ControlNet is more important"),
        cfg_injection=control_mode == "ControlNet is more important",
        save_detected_map=unit.save_detected_map, sent=dict(sent) if sent is not None else unit.sent(),
        hires_window=(guidance_window(start, end, hires_steps)
                      if hires_steps is not None and hr_option != "Low res only" else None),
    )


def _info_threshold(effective: float | None, sent: float) -> float:
    # CN bounds-checks every slider; a module without the slider has CN's hidden default slider (0..1, value 0.5)
    if effective is not None:
        return float(effective)
    return float(sent) if 0.0 <= sent <= 1.0 else 0.5


def make_plan(payload: "ProcessingPayload", models: Resolved, sizes: ImageSizes,
              rng: _random.Random | None = None, inpainting: Inpainting | None = None) -> Plan:
    """Every decision of the job. Raises FieldError for what the runner cannot do as asked. ``inpainting``: the
    decisions on img2img's mask (``inpaint.process_mask``)."""
    txt2img = isinstance(payload, Txt2ImgPayload)
    sampler, schedule = payload.effective_sampler()
    spec = scheduler_spec(sampler, schedule, payload.sampler_params)

    opts = payload.override_settings
    if txt2img:
        steps = txt2img_steps(payload.steps, spec)
    else:
        fix_steps = bool(opts and opts.img2img_fix_steps)
        steps = img2img_steps(payload.steps, payload.denoising_strength, spec, fix_steps=fix_steps)

    # A1111 img2img init: one init image is repeated for the batch; 2..batch_size images set the batch size
    n_init = len(sizes.init)
    batch_size = n_init if n_init > 1 else payload.batch_size
    n_iter = payload.n_iter
    total = batch_size * n_iter

    seed = fixed_seed(payload.seed, rng)
    subseed = fixed_seed(payload.subseed, rng)
    variation = payload.subseed_strength != 0
    all_seeds = tuple(seed + (0 if variation else i) for i in range(total))
    # CN set_numpy_seed: (seed + subseed), each the first image's seed when sent as -1 (the subseed too)
    preprocessor_seed = (seed + (seed if payload.subseed == -1 else payload.subseed)) & 0xFFFFFFFF
    all_subseeds = tuple(subseed + i for i in range(total))
    all_prompts = (payload.prompt,) * total
    all_negative = (payload.negative_prompt,) * total

    batches = tuple(
        Batch(index=n, seeds=all_seeds[n * batch_size:(n + 1) * batch_size],
              subseeds=all_subseeds[n * batch_size:(n + 1) * batch_size],
              prompts=all_prompts[n * batch_size:(n + 1) * batch_size],
              negative_prompts=all_negative[n * batch_size:(n + 1) * batch_size],
              init_image_indices=tuple(i % n_init for i in range(batch_size)) if n_init else ())
        for n in range(n_iter)
    )

    run_w = payload.width - payload.width % LATENT_FACTOR
    run_h = payload.height - payload.height % LATENT_FACTOR

    clip_stop = int(opts.CLIP_stop_at_last_layers) if opts and opts.CLIP_stop_at_last_layers else 1
    prompt_text, prompt_weight = positive_text(payload.prompt)
    tags = payload.loras
    if len(models.loras) != len(tags):
        raise ValueError("resolved LoRAs do not match the prompt's LoRA tags")
    loras = tuple(LoraPlan(entry=entry, mentioned=tag.name, te=tag.te, unet=tag.unet)
                  for tag, entry in zip(tags, models.loras))

    refiner = None
    if models.refiner is not None and models.refiner.name != models.checkpoint.name:
        switch_at = payload.refiner_switch_at
        # A1111 switches once (999 - t) / 1000 >= switch_at; that ratio never reaches 1, so 1 means "never"
        if switch_at is None or switch_at < 1.0:
            refiner = RefinerPlan(entry=models.refiner, switch_at=switch_at)

    hires = hires_plan(payload) if txt2img and payload.enable_hr else None

    units: list[UnitPlan] = []
    enabled = [(i, u) for i, u in enumerate(payload.controlnet_units) if u.enabled]
    if len(models.controlnets) != len(enabled):
        raise ValueError("resolved ControlNets do not match the enabled units")
    sent_units = _units_as_sent(payload)
    init_resize_mode = None if txt2img else payload.resize_mode
    for index, ((request_index, unit), resolved) in enumerate(zip(enabled, models.controlnets)):
        sent = sent_units[request_index] if request_index < len(sent_units) else None
        units.append(unit_plan(unit, index, request_index, resolved, init_resize_mode, (run_w, run_h), sizes, steps,
                               hires.steps if hires else None, sent, annotator=models.annotators.get(request_index)))

    # A1111: img2img takes the request's initial_noise_multiplier, else the option's (default 1); txt2img neither
    sent = () if txt2img else (payload.initial_noise_multiplier, opts.initial_noise_multiplier if opts else None)
    noise_multiplier = next((float(v) for v in sent if v is not None), 1.0)
    ensd = int(opts.eta_noise_seed_delta) if opts and opts.eta_noise_seed_delta else 0

    # extra_generation_params known before sampling, in the order A1111 writes them: ControlNet units (CN's
    # process()), then the endpoint's init (img2img: Denoising strength and the mask's; txt2img with the hires fix:
    # Denoising strength and the Hires keys), the LoRAs (extra networks activated per batch), then sampling (Noise
    # multiplier, Eta, Schedule type; the hires pass's sampler after them); the refiner's keys are added when it runs
    # (info.py)
    extra: dict = {}
    for u in units:
        extra[f"ControlNet {u.index}"] = None  # the value depends on the infotext format: filled by info.py
        if u.substituted_from is not None:
            extra[f"ControlNet {u.index} substitute"] = (
                f"{u.controlnet.name} (catalog substitute for {u.substituted_from.name} under {models.architecture})")
    if not txt2img or hires is not None:
        extra["Denoising strength"] = payload.denoising_strength
    if inpainting is not None:
        extra.update(inpainting.extra_generation_params())
    if hires is not None:
        extra.update(hires_generation_params(payload, hires, first_schedule_key(spec, schedule)))
    if loras:
        extra["Lora hashes"] = None  # the hashes are the files': filled by info.py once they are read
    if noise_multiplier != 1.0:
        extra["Noise multiplier"] = noise_multiplier
    if spec.eta_info is not None:
        extra[spec.eta_info[0]] = spec.eta_info[1]
    if first_schedule_key(spec, schedule):
        extra["Schedule type"] = schedule
    if hires is not None and hires.scheduler.eta_info is not None:
        extra.setdefault(*hires.scheduler.eta_info)

    return Plan(
        width=payload.width, height=payload.height, run_width=run_w, run_height=run_h,
        resize_mode=0 if txt2img else payload.resize_mode, denoising_strength=payload.denoising_strength,
        sampler=sampler, schedule=schedule, scheduler=spec, steps=steps, cfg_scale=float(payload.cfg_scale),
        guidance_scale=float(payload.cfg_scale) * prompt_weight, prompt_text=prompt_text, clip_skip_a1111=clip_stop,
        seed=seed, preprocessor_seed=preprocessor_seed, subseed=subseed,
        subseed_strength=float(payload.subseed_strength), all_seeds=all_seeds, all_subseeds=all_subseeds,
        all_prompts=all_prompts, all_negative_prompts=all_negative, batch_size=batch_size, n_iter=n_iter,
        batches=batches, noise_multiplier=noise_multiplier, eta_noise_seed_delta=ensd, models=models,
        refiner=refiner, units=tuple(units), loras=loras, extra_generation_params=extra, txt2img=txt2img,
        hires=hires, inpainting=inpainting,
    )


def first_schedule_key(spec: SchedulerSpec, schedule: str) -> bool:
    """Does A1111 write "Schedule type" for this pass: a k-diffusion sampler on a schedule other than the model's
    own (sd_samplers_kdiffusion.py ``get_sigmas``)."""
    return schedule != "Automatic" and not spec.timestep_sampler


def hires_plan(payload: Txt2ImgPayload) -> HiresPlan:
    """The hires fix's second pass (A1111 ``sample_hr_pass``): an img2img pass given a step count, so
    ``setup_img2img_steps`` runs it as with ``img2img_fix_steps``: n steps over int(n / denoising_strength)."""
    sampler, schedule = payload.hires_sampler()
    spec = scheduler_spec(sampler, schedule, payload.sampler_params)
    steps = img2img_steps(payload.hires_steps, payload.denoising_strength, spec, fix_steps=True)
    prompt, negative = payload.hires_prompts
    prompt_text, weight = positive_text(prompt)
    return HiresPlan(upscaler=payload.hr_upscaler, latent_mode=hires_fix.latent_mode(payload.hr_upscaler),
                     size=payload.hires_size, sampler=sampler, schedule=schedule, scheduler=spec, steps=steps,
                     guidance_scale=float(payload.cfg_scale) * weight, prompt_text=prompt_text,
                     negative_prompt=negative)


def hires_generation_params(payload: Txt2ImgPayload, hires: HiresPlan, first_schedule_written: bool) -> dict:
    """The hires fix's extra_generation_params, in the order A1111 1.10 writes them (txt2img ``init``, then
    ``calculate_target_resolution``). "Hires schedule type" has its place from ``init`` and its value from the second
    pass's sampling: the second pass's schedule, when it has one of its own that differs from the first pass's
    "Schedule type". "Hires prompt" and "Hires negative prompt" are functions of the image in A1111: the infotext
    shows their value when it differs from the first pass's, the info JSON null (info.py)."""
    extra: dict = {}
    if payload.hr_sampler_name not in (None, "", SAME_SAMPLER) and hires.sampler != payload.effective_sampler()[0]:
        extra["Hires sampler"] = hires.sampler
    prompt, negative = payload.hires_prompts
    extra["Hires prompt"] = prompt if prompt != payload.prompt else None
    extra["Hires negative prompt"] = negative if negative != payload.negative_prompt else None
    first_schedule = payload.effective_sampler()[1] if first_schedule_written else None
    own = first_schedule_key(hires.scheduler, hires.schedule)
    extra["Hires schedule type"] = hires.schedule if own and hires.schedule != first_schedule else None
    if payload.hr_resize_x == 0 and payload.hr_resize_y == 0:
        extra["Hires upscale"] = payload.hr_scale
    else:
        extra["Hires resize"] = f"{payload.hr_resize_x}x{payload.hr_resize_y}"
    if payload.hr_second_pass_steps:
        extra["Hires steps"] = payload.hr_second_pass_steps
    if payload.hr_upscaler is not None:
        extra["Hires upscaler"] = payload.hr_upscaler
    return extra


def _units_as_sent(payload: "ProcessingPayload") -> list[dict]:
    """The ControlNet units exactly as the request sent them (inline images nulled), by request index."""
    scripts = payload.parameters().get("alwayson_scripts") or {}
    for title, script in scripts.items():
        if isinstance(title, str) and title.lower() == "controlnet" and isinstance(script, dict):
            return [u if isinstance(u, dict) else {} for u in script.get("args") or []]
    return []


def soft_injection_scales(residuals: int) -> tuple[float, ...]:
    """CN's per-residual scales for "My prompt is more important": 0.825 ** (12 - k) for the first ``residuals``
    of 13 (SD 1.5 has 13 residuals, SDXL 10: CN zips the control list with the 13 scales)."""
    scales = SOFT_INJECTION_SCALES[:residuals]
    if residuals > len(SOFT_INJECTION_SCALES):
        scales = scales + (1.0,) * (residuals - len(SOFT_INJECTION_SCALES))
    return scales
