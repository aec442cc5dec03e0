"""One job, in process: RunPod ``input`` -> images, A1111 ``info`` and ``parameters``.

The steps, each in its own module: validate the payload (img2img.api) -> resolve the models (catalog) -> fetch and
decode the images (fetch) -> img2img's inpainting mask, and the ControlNet inputs cut to it (inpaint) -> plan every
A1111 decision (plan) -> load the models (pipelines, cached) -> ControlNet detect maps (preprocess) -> the prompt's
LoRAs on the checkpoint (loras), for the prompts' encoding and per batch, each pass of ``Plan.passes``: the base
pipeline (img2img's from the init images, blending with the mask (inpaint_sampling); txt2img's from noise), handing
over to the refiner at ``refiner_switch_at`` in the last pass; with txt2img's hires fix, the first pass's latents
upscaled (or its images upscaled and encoded again) start the second; the LoRAs off again -> the init image over the
unmasked pixels (inpaint) -> info and infotexts (info). ``main`` (the one-shot pod), ``worker`` (a pool's runner) and
``local_run`` (``img2img run``) all call ``execute``.

Progress: ``on_step(k, n)`` is called as sampling goes, ``k`` of ``n`` sampler steps over all batches and passes
(A1111's count: a second-order sampler's two model evaluations are one step), with ``k = 0`` once the plan is made
and once the models are loaded. It may raise to stop the job; the exception leaves ``execute`` as it is.
"""

from __future__ import annotations

import datetime as _dt
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from PIL import Image

from img2img.api.controlnet import RESIZE_MODES
from img2img.api.image_formats import ImageEncoding
from img2img_runner import inpaint, preprocess
from img2img_runner.catalog import Catalog, ModelError
from img2img_runner.errors import BadInput
from img2img_runner.fetch import FetchPolicy, load_image
from img2img_runner.images import flatten, hires_resize, resize_init_image
from img2img_runner.info import Outcome, info as make_info
from img2img_runner.plan import LATENT_FACTOR, Batch, ImageSizes, Pass, Plan, make_plan, unit_resize_mode

log = logging.getLogger(__name__)

# the VAE posterior is sampled from its own stream, so it is not the same numbers as the initial noise
VAE_SEED_OFFSET = 0x5EED_1111


@dataclass
class Result:
    images: list[Image.Image]  # generated images (infotext in .info["parameters"] with enable_pnginfo), detect maps
    info: str  # A1111's info JSON string
    parameters: dict[str, Any]  # the request, A1111-shaped (img2img: init_images null)
    infotexts: list[str]
    encoding: ImageEncoding = ImageEncoding()  # how the images are written (samples_format, jpeg_quality, …)
    timings: dict[str, int] = field(default_factory=dict)  # ms: modelLoad, preprocess, inference, total
    trace: dict[str, Any] = field(default_factory=dict)  # what ran: schedule indices per stage, per batch
    plan: Plan | None = None

    @property
    def generated(self) -> int:
        return len(self.infotexts)


def parse_input(job_input: dict[str, Any]):
    """The RunPod ``input`` validated; BadInput with every problem (field paths under ``input``)."""
    from pydantic import ValidationError

    from img2img.api.envelope import RunPodInput
    from img2img.api.errors import problems

    try:
        return RunPodInput.model_validate(job_input)
    except ValidationError as exc:
        found = problems(exc, "input")
        message = "; ".join(str(p) for p in found) or str(exc)
        raise BadInput(message, found[0].path if found else "input", absolute=True) from None


def execute(job_input: dict[str, Any], catalog: Catalog, *, cache=None, policy: FetchPolicy | None = None,
            rng: random.Random | None = None, on_models_loaded: Callable[[], None] | None = None,
            s3_client=None, presigned: Mapping[str, str] | None = None,
            on_step: Callable[[int, int], None] | None = None) -> Result:
    """Run one job. ``presigned``: ``s3://`` image reference -> presigned GET (a pool runner's assignment; see
    ``fetch.load_image``)."""
    started = time.monotonic()
    job_timestamp = _dt.datetime.now().strftime("%Y%m%d%H%M%S")
    request = parse_input(job_input)
    payload = request.payload

    models = catalog.resolve_payload(payload)

    policy = policy or FetchPolicy.from_env()
    init_images = [load_image(v, f"init_images[{i}]", policy, s3_client=s3_client, presigned=presigned)
                   for i, v in enumerate(payload.init_images_sent)]
    mask = (load_image(payload.mask_sent, "mask", policy, s3_client=s3_client, presigned=presigned)
            if payload.mask_sent is not None else None)
    inpainting, masks = (inpaint.process_mask(mask, inpaint.MaskSettings.of(payload), payload.width, payload.height,
                                              payload.resize_mode) if mask is not None else (None, None))
    unit_images: dict[int, Image.Image] = {}  # request index -> the unit's input, where not the first init image
    for i, unit in enumerate(payload.controlnet_units):
        if unit.enabled and unit.source_image is not None:
            key = "image" if unit.image is not None else "input_image"
            unit_images[i] = load_image(unit.source_image, f"alwayson_scripts.controlnet.args[{i}].{key}", policy,
                                        s3_client=s3_client, presigned=presigned)
    if mask is not None:
        unit_images.update(_controlnet_inputs_cut(payload, mask, init_images[0], unit_images))
    sizes = ImageSizes(init=tuple(flatten(im).size for im in init_images),
                       units={i: flatten(im).size for i, im in unit_images.items()})
    plan = make_plan(payload, models, sizes, rng, inpainting)
    progress = _Progress(plan, on_step)
    progress.tell()

    from img2img_runner import loras, pipelines

    for unit in plan.units:
        preprocess.check_supported(unit)

    # --- models --------------------------------------------------------------------------------------------
    from img2img_runner.pipelines import ModelCache

    t0 = time.monotonic()
    cache = cache or ModelCache(catalog)
    loaded = _load_models(plan, cache)
    model_load_ms = int((time.monotonic() - t0) * 1000)
    if on_models_loaded is not None:
        on_models_loaded()
    progress.tell()

    # --- ControlNet detect maps: one per unit and pass, at the pass's size ----------------------------------
    t1 = time.monotonic()
    passes = plan.passes
    control: list[list[Image.Image]] = []  # by unit, then pass
    for unit in plan.units:
        # the unit's own image, or its input cut to the mask; else the first init image (txt2img has none)
        source = unit_images[unit.request_index] if unit.request_index in unit_images else init_images[0]
        maps = preprocess.detect_maps(unit, source, [(p.run_width, p.run_height) for p in passes], cache=cache,
                                      seed=plan.preprocessor_seed)
        control.append([Image.fromarray(m) for m in maps])
    preprocess_ms = int((time.monotonic() - t1) * 1000)

    # --- sampling ------------------------------------------------------------------------------------------
    t2 = time.monotonic()
    overlays: list[Image.Image] = []
    if masks is not None:
        ready = inpaint.init_images(init_images, plan.inpainting, masks, plan.width, plan.height, plan.resize_mode)
        prepared = [(r.image, r.image) for r in ready]
        overlays = [r.overlay for r in ready]
    else:
        prepared = [_prepare_init(im, plan) for im in init_images]
    generated: list[Image.Image] = []
    traces = []
    refiner_ran = False
    weighted = [(lora, p.te, p.unet) for lora, p in zip(loaded.loras, plan.loras)]
    host = pipelines.base_pipeline(loaded.base, loaded.vae, loaded.base["scheduler"], None) if weighted else None
    # the refiner's prompts first, without the LoRAs: it shares the base's CLIP-G, and in A1111 the LoRAs (their key
    # names the base's modules) reach no module of an SDXL refiner. Both passes of the hires fix run the same LoRAs
    # (validation refuses an hr_prompt that names others)
    refiner_prompts = [_encode(plan, p, loaded.refiner, loaded.runtime)
                       if p.refiner and loaded.refiner is not None else None for p in passes]
    with loras.applied(host, weighted):
        prompts = [_Prompts(base=_encode(plan, p, loaded.base, loaded.runtime), refiner=refiner)
                   for p, refiner in zip(passes, refiner_prompts)]
        for batch in plan.batches:
            images, trace = _run_batch(plan, batch, loaded, prompts, prepared, control, progress, masks)
            if overlays:  # A1111 apply_overlay: the init image's pixels wherever the mask leaves them out
                images = [inpaint.apply_overlay(image, plan.inpainting.paste_to, overlays[i])
                          for image, i in zip(images, batch.init_image_indices)]
            generated.extend(images)
            traces.append(trace)
            refiner_ran = refiner_ran or bool(trace.get("refiner") or (trace.get("hires") or {}).get("refiner"))
    inference_ms = int((time.monotonic() - t2) * 1000)

    from img2img_runner.inpaint_sampling import takes_mask

    outcome = Outcome(refiner_ran=refiner_ran, job_timestamp=job_timestamp,
                      lora_hashes={lora.entry.name: lora.shorthash for lora in loaded.loras},
                      inpainting_conditioning=takes_mask(loaded.base["unet"]))
    info_json, infotexts = make_info(plan, outcome, restore_faces=bool(payload.restore_faces),
                                     styles=payload.styles or [],
                                     seed_resize_from=(payload.seed_resize_from_w, payload.seed_resize_from_h))
    encoding = payload.image_encoding
    if encoding.infotext:  # A1111 puts it on the image only with enable_pnginfo
        for image, text in zip(generated, infotexts):
            image.info["parameters"] = text
    # sd-webui-controlnet returns each saved map per pass, the hires fix's first
    maps = [m for maps_, u in zip(control, plan.units) if u.save_detected_map for m in reversed(maps_)]
    images = generated + maps if payload.send_images else []
    return Result(
        images=images, info=info_json, parameters=payload.parameters(), infotexts=infotexts, encoding=encoding,
        timings={"modelLoad": model_load_ms, "preprocess": preprocess_ms, "inference": inference_ms,
                 "total": int((time.monotonic() - started) * 1000)},
        trace={"batches": traces, "runtime": cache.runtime.name}, plan=plan,
    )


def _controlnet_inputs_cut(payload, mask: Image.Image, init_image: Image.Image,
                           unit_images: dict[int, Image.Image]) -> dict[int, Image.Image]:
    """The enabled units' input images that sd-webui-controlnet cuts to the inpainting mask ("Only masked"), by
    request index, at the generation size."""
    settings = inpaint.MaskSettings.of(payload)
    units = [(i, u) for i, u in enumerate(payload.controlnet_units)
             if u.enabled and inpaint.controlnet_crops(settings, u.inpaint_crop_input_image)]
    if not units:
        return {}
    cn_mask = inpaint.controlnet_mask(mask, settings)
    region = inpaint.controlnet_crop_region(cn_mask, settings, payload.width, payload.height)
    if region is None:
        raise BadInput(f"sd-webui-controlnet finds nothing masked in it (it reads the mask's grey levels, not its "
                       f"alpha) and fails to cut ControlNet unit {units[0][0]}'s input to it; send a mask with "
                       "white where to inpaint, or set the unit's inpaint_crop_input_image to false", "mask")
    return {i: inpaint.control_input(unit_images.get(i, init_image), region, cn_mask.size,
                                     RESIZE_MODES.index(unit_resize_mode(unit, payload.resize_mode)), payload.width,
                                     payload.height)
            for i, unit in units}


@dataclass
class _Loaded:
    base: Any  # Components
    vae: Any
    refiner: Any | None  # Components
    controlnets: list[Any]
    runtime: Any
    loras: list[Any]  # loras.Lora, in the plan's order


class _Progress:
    """Sampler step k of n over the whole job, from the schedule indices the step callbacks see."""

    def __init__(self, plan: Plan, on_step: Callable[[int, int], None] | None):
        self.on_step = on_step
        self.passes = plan.passes
        self.per_batch = sum(p.steps.executed for p in self.passes)
        self.steps = self.per_batch * len(plan.batches)

    def tell(self, step: int = 0) -> None:
        if self.on_step is not None:
            self.on_step(step, self.steps)

    def callback(self, batch: Batch, pass_: Pass) -> Callable[[int], None]:
        """The callback for one pass of one batch: called with each executed schedule index."""
        index = self.passes.index(pass_)
        done_before = batch.index * self.per_batch + sum(p.steps.executed for p in self.passes[:index])
        steps = pass_.steps
        first = steps.first_index * steps.order
        return lambda i: self.tell(done_before + steps.step_of(i - first) + 1)


def _load_models(plan: Plan, cache) -> _Loaded:
    models = plan.models
    cache.begin_job()
    for unit in plan.units:  # first: a folder lacking a file fails the job before the checkpoint loads
        preprocess.detector(unit, cache)
    base = cache.checkpoint(models.checkpoint)
    from img2img_runner.inpaint_sampling import takes_mask

    if plan.txt2img and takes_mask(base["unet"]):  # A1111 would feed it a mask of ones over a grey image
        raise ModelError("override_settings.sd_model_checkpoint",
                         f"{models.checkpoint.name!r} is an inpainting checkpoint (its UNet takes a mask); txt2img on "
                         "it is not supported: use it with /sdapi/v1/img2img")
    vae = cache.vae(models.vae) if models.vae is not None else base["vae"]
    refiner = cache.refiner(plan.refiner.entry, base, vae, models.vae) if plan.refiner is not None else None
    if refiner is not None and takes_mask(refiner["unet"]):
        raise ModelError("refiner_checkpoint", f"{plan.refiner.entry.name!r} is an inpainting checkpoint (its UNet "
                                               "takes a mask); it cannot be a refiner")
    controlnets = [cache.controlnet(u.controlnet) for u in plan.units]
    loras = [cache.lora(p.entry) for p in plan.loras]
    return _Loaded(base=base, vae=vae, refiner=refiner, controlnets=controlnets, runtime=cache.runtime, loras=loras)


@dataclass
class _Prompts:
    """The job's text conditioning, per model that samples (a batch's images share one prompt)."""

    base: Any  # conditioning.PromptPair
    refiner: Any | None


def _encode(plan: Plan, pass_: Pass, components: Any, runtime: Any) -> Any:
    """The batch conditioning (``conditioning.PromptPair``) of one pass's prompts for the model ``components`` (a
    checkpoint, a refiner)."""
    from img2img_runner import conditioning as C

    encoders = C.text_encoders(components.modules, components.entry.architecture, plan.clip_skip_a1111)
    return C.prompt_pair(pass_.prompt_text, pass_.negative_prompt, encoders,
                         architecture=components.entry.architecture, batch_size=plan.batch_size,
                         device=runtime.device)


def _prepare_init(image: Image.Image, plan: Plan) -> tuple[Image.Image, Image.Image]:
    """(the image the pipeline is given, the image that is VAE-encoded). resize_mode 3 encodes the original
    (at a multiple of 8) and interpolates the latents; 0-2 resize the pixels as A1111 does."""
    if plan.resize_mode == 3:
        flat = flatten(image)
        w, h = flat.width - flat.width % 8, flat.height - flat.height % 8
        original = flat if (w, h) == flat.size else flat.crop((0, 0, w, h))
        return resize_init_image(image, 0, plan.run_width, plan.run_height), original
    resized = resize_init_image(image, plan.resize_mode, plan.run_width, plan.run_height)
    return resized, resized


def _mask_sampling(plan: Plan, masks: inpaint.Masks | None, latent_shape: tuple[int, int, int]) -> Any:
    """What sampling does for the mask (``inpaint_sampling.Inpaint``): the batch's latent blend when the job has an
    active mask, nothing otherwise."""
    from img2img_runner import inpaint_sampling as S
    from img2img_runner import pipelines as P

    if masks is None:
        return S.Inpaint()
    assert plan.inpainting is not None
    settings = plan.inpainting.settings
    noise = None
    if settings.fill == inpaint.LATENT_NOISE:  # A1111 draws it from the first batch's seeds, for every batch
        noise = P.a1111_noise(plan.all_seeds[:plan.batch_size], latent_shape)[0]
    nmask = inpaint.latent_mask(masks.mask, latent_shape[2], latent_shape[1], settings.round)
    return S.Inpaint(blend=S.latent_blend(nmask, settings.fill, noise))


def _run_batch(plan: Plan, batch: Batch, loaded: _Loaded, prompts: list[_Prompts], prepared,
               control: list[list[Image.Image]], progress: _Progress,
               masks: inpaint.Masks | None = None) -> tuple[list, dict]:
    """One batch through the plan's passes: (its images, what ran). img2img's mask blends into its one pass; with the
    hires fix, the first pass's latents (or images) are upscaled to start the second, and the second's trace is under
    "hires"."""
    import torch

    from img2img_runner import inpaint_sampling as S
    from img2img_runner import pipelines as P

    import torch

    from img2img_runner import inpaint_sampling as S
    from img2img_runner import pipelines as P

    first, *rest = plan.passes
    vae_seeds = [(int(s) + VAE_SEED_OFFSET) & 0xFFFFFFFFFFFF for s in batch.seeds]
    shape = _latent_shape(first, loaded)
    noise, generators = _noise(plan, batch, shape)
    steps = first.steps
    if first.from_noise:
        sampling = S.Inpaint()
        zeros = torch.zeros(noise.shape)
        init = P.InitialLatents(images=[], noise=noise, noise_multiplier=plan.noise_multiplier, vae_seeds=vae_seeds,
                                latent_size=None, latents=zeros, noise_only=steps.timestep_sampler)
        image_in: Any = zeros  # what an img2img pipeline is handed (the refiner, when it does the whole pass)
    else:
        sampling = _mask_sampling(plan, masks, shape)
        init = P.InitialLatents(
            images=[prepared[i][1] for i in batch.init_image_indices], noise=noise,
            noise_multiplier=plan.noise_multiplier, vae_seeds=vae_seeds,
            latent_size=(plan.run_height // 8, plan.run_width // 8) if plan.resize_mode == 3 else None,
            noise_index=steps.first_index - 1 if steps.timestep_sampler else None, transform=sampling.transform)
        image_in = [prepared[i][0] for i in batch.init_image_indices]
    hires = plan.hires
    output = "pil" if hires is None or hires.latent_mode is None else "latent"
    out, trace = _sample(plan, first, batch, loaded, prompts[0], init, generators, image_in,
                         [maps[0] for maps in control], progress.callback(batch, first), output, sampling,
                         masks.mask if masks else None)
    if hires is None:
        return out, trace

    second = rest[0]
    size = hires.size
    target = (size.target_height // LATENT_FACTOR, size.target_width // LATENT_FACTOR)
    if hires.latent_mode is not None:
        latents, upscaled = P.upscale_latents(out, target, *hires.latent_mode), []
        image_in = latents
    else:  # decoded, resized as A1111 does, encoded again (the pixels the latents cover: multiples of 8)
        upscaled = [hires_resize(im, hires.upscaler, size.target_width, size.target_height)
                    .crop((0, 0, target[1] * LATENT_FACTOR, target[0] * LATENT_FACTOR)) for im in out]
        latents, image_in = None, upscaled
    noise, generators = _noise(plan, batch, _latent_shape(second, loaded))
    init = P.InitialLatents(images=upscaled, noise=noise, noise_multiplier=1.0, vae_seeds=vae_seeds, latent_size=None,
                            noise_index=second.steps.first_index - 1 if second.steps.timestep_sampler else None,
                            latents=latents, cut=(size.cut_x, size.cut_y))
    images, trace["hires"] = _sample(plan, second, batch, loaded, prompts[1], init, generators, image_in,
                                     [maps[1] for maps in control], progress.callback(batch, second), "pil",
                                     S.Inpaint(), None)
    return images, trace


def _latent_shape(pass_: Pass, loaded: _Loaded) -> tuple[int, int, int]:
    """(channels, height, width) of a pass's latents: the VAE's channels (an inpainting UNet takes more)."""
    return loaded.vae.config.latent_channels, pass_.run_height // 8, pass_.run_width // 8


def _noise(plan: Plan, batch: Batch, shape: tuple[int, int, int]) -> tuple[Any, list]:
    """A1111's noise for a pass's latent ``shape``, and the generators its sampler draws on from (ENSD: re-seeded
    after the first draw)."""
    import torch

    from img2img_runner import pipelines as P

    noise, generators = P.a1111_noise(batch.seeds, shape)
    if plan.eta_noise_seed_delta:  # A1111: ENSD re-seeds the per-step noise (ancestral/SDE samplers)
        generators = [torch.Generator("cpu").manual_seed(int(s) + plan.eta_noise_seed_delta) for s in batch.seeds]
    return noise, generators


def _sample(plan: Plan, pass_: Pass, batch: Batch, loaded: _Loaded, prompts: _Prompts, init, generators: list,
            image_in: Any, control_images: list[Image.Image], on_index: Callable[[int], None],
            output_type: str, sampling: Any, mask: Image.Image | None) -> tuple[Any, dict]:
    """One pass of one batch: the base pipeline, handing over to the refiner where the plan says, with what
    ``sampling`` (``inpaint_sampling.Inpaint``) does for img2img's ``mask``. Returns the pass's images (PIL), or its
    latents for ``output_type="latent"``, and what ran."""
    from img2img_runner import inpaint_sampling as S
    from img2img_runner import pipelines as P

    spec = pass_.scheduler
    steps = pass_.steps
    base = loaded.base
    cfg_on = pass_.guidance_scale > 1
    dtype = loaded.runtime.dtype
    common = dict(num_inference_steps=steps.schedule, guidance_scale=pass_.guidance_scale, generator=generators)
    if plan.architecture == "sdxl":  # A1111's size conditioning: the size the pass aims at, not the rendered one
        width, height = pass_.size_condition
        common.update(original_size=(height, width), target_size=(height, width))
    if spec.eta is not None:
        common["eta"] = spec.eta
    first = steps.first_index * spec.order  # index in scheduler.timesteps of the first executed evaluation
    trace: dict[str, Any] = {"seeds": list(batch.seeds), "order": spec.order, "first": first}

    # DDIM/PLMS end before the schedule's last timestep (A1111 takes no step from it); the others run to the end
    last = first + steps.evaluations if steps.timestep_sampler else None
    # where the refiner takes over (None: no refiner; 0 evaluations on the base: the refiner does it all)
    stop = None
    refiner = loaded.refiner if pass_.refiner else None
    if refiner is not None:
        switch_at = plan.refiner.switch_at
        if switch_at is None or switch_at <= 0:
            stop = first
        else:
            probe = P.make_scheduler(refiner["scheduler"], spec, from_noise=pass_.from_noise)  # its timesteps only
            stop = P.refiner_start_index(probe, steps.schedule, switch_at)
            if stop >= (last or len(probe.timesteps)):  # the run ends before the switch: A1111 never switches
                stop, refiner = None, None
        trace["stop"] = stop
    refiner_sched = (sampling.scheduler(P.make_scheduler(refiner["scheduler"], spec, batch.seeds,
                                                         from_noise=pass_.from_noise), spec)
                     if refiner is not None else None)

    if refiner is not None and stop is not None and stop <= first:
        # A1111: the switch point is before the pass's first step -> the refiner samples everything (no ControlNet)
        pipe = P.refiner_pipeline(refiner, refiner_sched)
        seen: list[int] = []
        P.install_initial_latents(pipe, init)
        try:
            with P.context_split(refiner["unet"], prompts.refiner.lengths, batch.size):
                out = pipe(image=image_in, strength=steps.strength, output_type=output_type,
                           callback_on_step_end=sampling.last_step(P.step_counter(last, first, seen, on_index), last,
                                                                   first), **common,
                           **prompts.refiner.pipeline_kwargs(dtype)).images
        finally:
            P.remove_initial_latents(pipe)
        trace.update(base=[], refiner=seen)
        return out, trace

    scheduler = sampling.scheduler(P.make_scheduler(base["scheduler"], spec, batch.seeds, steps.first_index,
                                                    from_noise=pass_.from_noise), spec)
    units = None
    kwargs = dict(common, **prompts.base.pipeline_kwargs(dtype))
    if pass_.from_noise:
        kwargs.update(height=pass_.run_height, width=pass_.run_width)
    else:
        kwargs.update(image=image_in, strength=steps.strength)
    if pass_.units:
        running = [u for u, _ in pass_.units]
        units = P.control_units([loaded.controlnets[u.index] for u in running], [u.soft_injection for u in running],
                                [u.cfg_injection for u in running], context=(prompts.base.lengths, batch.size),
                                windows=[window for _, window in pass_.units], step_of=steps.step_of)
        units.cfg_active = cfg_on
        # the units' guidance windows are CN's (UnitPlan.window, applied by the units): diffusers' own stays open;
        # txt2img's ControlNet pipelines take the control image as `image`
        kwargs.update({"image" if pass_.from_noise else "control_image": [control_images[u.index] for u in running]},
                      controlnet_conditioning_scale=[u.weight for u in running],
                      control_guidance_start=[0.0] * len(running), control_guidance_end=[1.0] * len(running),
                      height=pass_.run_height, width=pass_.run_width)
    pipe = P.base_pipeline(base, loaded.vae, scheduler, units, txt2img=pass_.from_noise)
    if S.takes_mask(base["unet"]):  # an inpainting checkpoint (img2img only): the mask and the masked image, the SDXL
        # one rounded
        round_mask = plan.inpainting.settings.round if plan.inpainting and plan.architecture == "sd15" else True
        sampling.conditioning = S.image_conditioning(pipe, image_in, mask, round_mask, init.vae_seeds,
                                                     loaded.runtime.device, loaded.runtime.dtype)
    seen_base: list[int] = []
    (P.install_noise_latents if pass_.from_noise else P.install_initial_latents)(pipe, init)
    counter = P.step_counter(stop if stop is not None else last, first, seen_base, on_index)
    if stop is None:
        counter = sampling.last_step(counter, last, first)
    try:
        with sampling.unet(base["unet"]), P.context_split(base["unet"], prompts.base.lengths, batch.size):
            out = pipe(output_type="latent" if stop is not None else output_type, callback_on_step_end=counter,
                       **kwargs).images
    finally:
        P.remove_initial_latents(pipe)
    trace["base"] = seen_base
    if units is not None:
        trace["controlnet_calls"] = list(units.calls)
    if stop is None:
        return out, trace

    P.continue_history(refiner_sched, pipe.scheduler)
    pipe_r = P.refiner_pipeline(refiner, refiner_sched)
    seen_refiner: list[int] = []
    with P.context_split(refiner["unet"], prompts.refiner.lengths, batch.size):
        images = pipe_r(image=out, denoising_start=plan.refiner.switch_at, output_type=output_type,
                        callback_on_step_end=sampling.last_step(P.step_counter(last, stop, seen_refiner, on_index),
                                                                last, stop), **common,
                        **prompts.refiner.pipeline_kwargs(dtype)).images
    began = getattr(pipe_r.scheduler, "begin_index", stop)
    if began != stop:
        raise RuntimeError(f"refiner began at {began}, the base stopped before {stop}")
    trace["refiner"] = seen_refiner
    return images, trace
