"""The seed's request written directly against diffusers: SDXL base + ControlNet img2img, then the SDXL refiner.

This is the yardstick the product is measured against (`runner_overhead.py` on the tiny models, `gpu_sdxl.py` on
real weights): the same pipelines, scheduler and step counts the runner uses for the request, with none of its
machinery (payload model, plan, A1111 noise and ControlNet modes, info, storage). It reads the model catalog only
to find where the weights are (`img2img_runner.catalog`, pure).

The request (A1111 semantics, as the runner maps them):
- sampler "DPM++ SDE" + schedule "Karras" -> `DPMSolverSDEScheduler(use_karras_sigmas=True,
  timestep_spacing="linspace")`, its Brownian noise seeded with the image seed;
- img2img steps: t_enc = int(strength * steps); k-diffusion runs t_enc + 1 steps, so diffusers gets
  `strength = (t_enc + 1.5) / steps` on a `steps`-long schedule;
- refiner switch at 0.8: the base stops where the refiner's `denoising_start=0.8` begins (diffusers' own cutoff,
  one more step for 2nd-order schedulers when the count is even) and hands over latents;
- ControlNet canny (thresholds from the unit) on the init image, weight 1, guidance 0 -> 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Request:
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    strength: float
    cfg_scale: float
    seed: int
    refiner_switch_at: float | None
    canny_low: int
    canny_high: int
    control_weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    checkpoint: str = "sd_xl_base_1.0"
    vae: str | None = None
    refiner: str | None = None
    controlnet: str | None = None

    @classmethod
    def from_payload(cls, payload: dict, seed: int) -> "Request":
        """The fields of an A1111 img2img payload (the seed request's shape) this benchmark honours."""
        overrides = payload.get("override_settings") or {}
        units = ((payload.get("alwayson_scripts") or {}).get("controlnet") or {}).get("args") or []
        unit = next((u for u in units if isinstance(u, dict) and u.get("enabled", True)), None)
        return cls(
            prompt=payload.get("prompt", ""),
            negative_prompt=payload.get("negative_prompt", ""),
            width=int(payload.get("width", 512)),
            height=int(payload.get("height", 512)),
            steps=int(payload.get("steps", 20)),
            strength=float(payload.get("denoising_strength", 0.75)),
            cfg_scale=float(payload.get("cfg_scale", 7)),
            seed=seed,
            refiner_switch_at=float(payload["refiner_switch_at"]) if payload.get("refiner_checkpoint") else None,
            canny_low=int(unit.get("threshold_a", 100)) if unit else 100,
            canny_high=int(unit.get("threshold_b", 200)) if unit else 200,
            control_weight=float(unit.get("weight", 1.0)) if unit else 1.0,
            guidance_start=float(unit.get("guidance_start", 0.0)) if unit else 0.0,
            guidance_end=float(unit.get("guidance_end", 1.0)) if unit else 1.0,
            checkpoint=overrides.get("sd_model_checkpoint") or "sd_xl_base_1.0",
            vae=overrides.get("sd_vae"),
            refiner=payload.get("refiner_checkpoint"),
            controlnet=unit.get("model") if unit else None,
        )

    @property
    def executed_steps(self) -> int:
        return min(self.steps, int(min(self.strength, 0.999) * self.steps) + 1)

    @property
    def diffusers_strength(self) -> float:
        return min(1.0, (self.executed_steps + 0.5) / self.steps)


@dataclass
class Models:
    base: Any  # StableDiffusionXLControlNetImg2ImgPipeline
    refiner: Any | None  # StableDiffusionXLImg2ImgPipeline sharing the base's VAE and second text encoder
    device: str
    dtype: Any
    load_seconds: dict[str, float] = field(default_factory=dict)


def _entry(catalog, name: str, what: str):
    entry = catalog.find(name)
    if entry is None:
        raise SystemExit(f"the catalog {catalog_path_of(catalog)} has no {what} named {name!r}")
    return entry


def catalog_path_of(catalog) -> str:
    return str(getattr(catalog, "path", "") or "(catalog)")


def _where(catalog, entry) -> tuple[str, dict, bool]:
    """(path or hub id, from_* kwargs, is a single file) of a catalog entry, as the runner reads it."""
    source = entry.source
    if source is None:
        raise SystemExit(f"model {entry.name!r} has no source in the catalog")
    if source.kind == "hub":
        kwargs = {"cache_dir": str(catalog.cache_dir / "hub")}
        for key in ("revision", "variant", "subfolder"):
            if getattr(source, key):
                kwargs[key] = getattr(source, key)
        return source.location, kwargs, False
    path = Path(catalog.local_path(source))
    if source.kind == "s3":
        if not path.exists():
            raise SystemExit(f"model {entry.name!r} comes from {source.location}; sync it to {path} first "
                             "(the runner does that on first use)")
    if source.kind == "file":
        kwargs = {"local_files_only": True}
        config = catalog.config_path(source)
        if config is not None:
            kwargs["config"] = str(config)
        return str(path), kwargs, True
    if source.subfolder:
        path = path / source.subfolder
    kwargs = {"local_files_only": True}
    if source.variant:
        kwargs["variant"] = source.variant
    return str(path), kwargs, False


def _load(cls, catalog, entry, dtype, **extra):
    where, kwargs, single = _where(catalog, entry)
    kwargs.update(extra)
    if single:
        return cls.from_single_file(where, torch_dtype=dtype, **kwargs)
    return cls.from_pretrained(where, torch_dtype=dtype, **kwargs)


def load(catalog_file: str | Path, request: Request, *, device: str, dtype, vae_fp16_fix: bool | None = None) -> Models:
    """Load the request's base, VAE, ControlNet and refiner (diffusers `from_pretrained`/`from_single_file`).

    Attention is diffusers' default with torch 2: `AttnProcessor2_0`, i.e. PyTorch SDPA (`attention_processors`)."""
    import torch
    from diffusers import (AutoencoderKL, ControlNetModel, StableDiffusionXLControlNetImg2ImgPipeline,
                           StableDiffusionXLImg2ImgPipeline)
    from img2img_runner.catalog import Catalog

    catalog = Catalog.from_file(catalog_file)
    seconds: dict[str, float] = {}

    def timed(key: str, fn):
        t = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds[key] = time.perf_counter() - t
        return out

    base_entry = _entry(catalog, request.checkpoint, "checkpoint")
    base = timed("base", lambda: _load(StableDiffusionXLImg2ImgPipeline, catalog, base_entry, dtype,
                                       add_watermarker=False).to(device))
    vae = base.vae
    if request.vae:
        vae_entry = _entry(catalog, request.vae, "VAE")
        vae = timed("vae", lambda: _load(AutoencoderKL, catalog, vae_entry, dtype).to(device))
        fix = vae_entry.fp16_fix if vae_fp16_fix is None else vae_fp16_fix
        if fix and vae.config.force_upcast:
            vae.register_to_config(force_upcast=False)  # the fp16-fix VAE decodes in fp16 without NaNs
    cn_entry = _entry(catalog, request.controlnet or "", "ControlNet")
    if cn_entry.architecture != "controlnet-sdxl" and cn_entry.substitutes.get("sdxl"):
        cn_entry = _entry(catalog, cn_entry.substitutes["sdxl"], "ControlNet")  # as the catalog says (seed request)
    controlnet = timed("controlnet", lambda: _load(ControlNetModel, catalog, cn_entry, dtype).to(device))
    pipe = StableDiffusionXLControlNetImg2ImgPipeline(
        vae=vae, text_encoder=base.text_encoder, text_encoder_2=base.text_encoder_2, tokenizer=base.tokenizer,
        tokenizer_2=base.tokenizer_2, unet=base.unet, controlnet=controlnet, scheduler=base.scheduler,
        force_zeros_for_empty_prompt=base.config.get("force_zeros_for_empty_prompt", True), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    refiner = None
    if request.refiner and request.refiner_switch_at is not None:
        ref_entry = _entry(catalog, request.refiner, "refiner")
        shared = {"vae": vae, "text_encoder_2": base.text_encoder_2, "tokenizer_2": base.tokenizer_2}
        if ref_entry.architecture == "sdxl-refiner":
            shared.update(text_encoder=None, tokenizer=None)
        refiner = timed("refiner", lambda: _load(StableDiffusionXLImg2ImgPipeline, catalog, ref_entry, dtype,
                                                 add_watermarker=False, **shared).to(device))
        refiner.set_progress_bar_config(disable=True)
    return Models(base=pipe, refiner=refiner, device=device, dtype=dtype, load_seconds=seconds)


def attention_processors(models: Models) -> list[str]:
    """The attention processor classes in use (SDPA = AttnProcessor2_0)."""
    names = set()
    for module in (models.base.unet, models.base.controlnet, models.base.vae,
                   *([models.refiner.unet] if models.refiner else [])):
        if hasattr(module, "attn_processors"):
            names.update(type(p).__name__ for p in module.attn_processors.values())
    return sorted(names)


def scheduler(template_config, seed: int):
    """DPM++ SDE Karras as the runner maps it, with the Brownian noise seeded by the image seed."""
    from diffusers import DPMSolverSDEScheduler

    return DPMSolverSDEScheduler.from_config(template_config, use_karras_sigmas=True, timestep_spacing="linspace",
                                             noise_sampler_seed=seed)


def refiner_start_index(sched, steps: int, switch_at: float) -> int:
    """Where diffusers' refiner with `denoising_start=switch_at` begins in the schedule (the base stops before it)."""
    sched.set_timesteps(steps)
    total = sched.config.num_train_timesteps
    cutoff = int(round(total - switch_at * total))
    n = int((sched.timesteps < cutoff).sum().item())
    if sched.order == 2 and n % 2 == 0:
        n += 1
    return len(sched.timesteps) - n


def canny(image, low: int, high: int):
    """The control image: cv2.Canny on the init image, three channels (controlnet-aux's CannyDetector core)."""
    import cv2
    import numpy as np
    from PIL import Image

    edges = cv2.Canny(np.asarray(image.convert("RGB")), low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


def run(models: Models, request: Request, init_image, on_step=None) -> tuple[Any, dict]:
    """One job: canny, base (ControlNet img2img) until the switch, refiner to the end. Returns (image, timings)."""
    import torch

    sync = torch.cuda.synchronize if models.device == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    image = init_image.convert("RGB").resize((request.width, request.height))
    control = canny(image, request.canny_low, request.canny_high)
    t_pre = time.perf_counter()

    base = models.base
    base.scheduler = scheduler(base.scheduler.config, request.seed)
    steps = {"base": 0, "refiner": 0}
    stop_at = None
    if models.refiner is not None:
        stop_at = refiner_start_index(scheduler(base.scheduler.config, request.seed), request.steps,
                                      request.refiner_switch_at)
    first = (request.steps - int(request.steps * request.diffusers_strength)) * base.scheduler.order

    def base_step(pipe, i, t, kwargs):
        steps["base"] += 1
        if on_step:
            on_step("base", i)
        if stop_at is not None and first + i + 1 >= stop_at:
            pipe._interrupt = True  # hand the rest of the schedule to the refiner
        return kwargs

    generator = torch.Generator("cpu").manual_seed(request.seed)
    out = base(
        prompt=request.prompt, negative_prompt=request.negative_prompt, image=image, control_image=control,
        width=request.width, height=request.height, strength=request.diffusers_strength,
        num_inference_steps=request.steps, guidance_scale=request.cfg_scale,
        controlnet_conditioning_scale=request.control_weight, control_guidance_start=request.guidance_start,
        control_guidance_end=request.guidance_end, generator=generator,
        output_type="latent" if models.refiner is not None else "pil", callback_on_step_end=base_step,
    ).images
    sync()
    t_base = time.perf_counter()
    if models.refiner is not None:
        refiner = models.refiner
        refiner.scheduler = scheduler(refiner.scheduler.config, request.seed)

        def refiner_step(pipe, i, t, kwargs):
            steps["refiner"] += 1
            if on_step:
                on_step("refiner", i)
            return kwargs

        out = refiner(
            prompt=request.prompt, negative_prompt=request.negative_prompt, image=out,
            num_inference_steps=request.steps, denoising_start=request.refiner_switch_at,
            guidance_scale=request.cfg_scale, generator=generator, output_type="pil",
            callback_on_step_end=refiner_step,
        ).images
        sync()
    t_end = time.perf_counter()
    return out[0], {"preprocess": t_pre - t0, "base": t_base - t_pre, "refiner": t_end - t_base,
                    "total": t_end - t0, "base_steps": steps["base"], "refiner_steps": steps["refiner"]}
