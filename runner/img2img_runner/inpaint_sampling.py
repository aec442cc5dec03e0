"""Inpainting inside sampling, as A1111 1.10 does it (torch): the latent mask blended into every model evaluation, the
masked content of the init latent, the last blend, and the extra input channels of inpainting checkpoints.

A1111 sources (v1.10.1): modules/processing.py (``StableDiffusionProcessingImg2Img.init`` and ``sample``,
``inpainting_image_conditioning``), sd_samplers_cfg_denoiser.py (``CFGDenoiser.forward``: ``apply_blend``),
sd_samplers_timesteps.py (``mask_before_denoising``). With ``nmask`` the latent mask (1: generated) and
``mask = 1 - nmask``:

- the init latent: ``inpainting_fill`` 2 (latent noise) puts the first batch's seed noise under the mask, 3 (latent
  nothing) zeros; the sampler starts from it, noised, as plain img2img does;
- k-diffusion samplers (Euler, Euler a, LMS, Heun, DPM++ …): each denoised prediction, after CFG, becomes
  ``denoised * nmask + init_latent * mask``. diffusers' schedulers take the noise prediction, so the runner hands them
  the one whose denoised prediction is the blended one (x = a·x0 + b·ε at the evaluation's sigma: a = 1, b = σ in
  k-diffusion's space, where Euler, Euler a, LMS, Heun and DPM++ SDE work; a = 1/√(σ²+1), b = σ·a for the
  DPM-Solver++ multistep samplers);
- DDIM and PLMS (``mask_before_denoising``): the model's input becomes ``x * nmask + init_latent * mask`` (the clean
  init latent, as A1111 has it), the sampler's own x is left as it is;
- after the last step: ``samples * nmask + init_latent * mask``.

Inpainting checkpoints (a UNet with 9 input channels: SD 1.5 inpainting, SDXL inpainting 0.1) also take, after the
latents, A1111's image conditioning: the pixel mask at the latent size (nearest) and the VAE encoding of the init
image with the masked pixels at 0 (mid grey); without a mask, a mask of ones over an encoded grey image. Both halves
of the CFG batch get the same.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from img2img.api.samplers import SchedulerSpec
from img2img_runner.catalog import ModelError
from img2img_runner.inpaint import LATENT_NOISE, LATENT_NOTHING

# the diffusers schedulers whose samples are x0 * a + noise * b with a = 1 / sqrt(sigma^2 + 1) (variance
# preserving), not x0 + noise * sigma (k-diffusion's)
VARIANCE_PRESERVING = frozenset({"DPMSolverMultistepScheduler"})
LATENT_CHANNELS = 4
CONDITIONING_CHANNELS = 5  # the mask, and the masked image's latents


def takes_mask(unet: Any) -> bool:
    """An inpainting checkpoint's UNet: the latents, then the mask and the masked image's latents."""
    return unet.config.in_channels == LATENT_CHANNELS + CONDITIONING_CHANNELS


@dataclass
class LatentBlend:
    """One batch's latent mask and init latent, and how A1111 blends them."""

    nmask: torch.Tensor  # (1, 1, h, w): 1 where the sampler's result is kept
    fill: int  # inpainting_fill
    fill_noise: torch.Tensor | None = None  # (B, C, h, w): the masked content for latent noise
    init: torch.Tensor | None = None  # the init latent the sampler starts from, once ``start`` has seen it

    def start(self, latents: torch.Tensor) -> torch.Tensor:
        """The encoded init latent with the masked content of ``inpainting_fill``; kept for the blends."""
        self.nmask = self.nmask.to(latents.device)  # once: the blends run on the latents' device
        nmask = self.nmask.to(dtype=latents.dtype)
        if self.fill == LATENT_NOISE:
            assert self.fill_noise is not None
            latents = latents * (1 - nmask) + self.fill_noise.to(latents.device, latents.dtype) * nmask
        elif self.fill == LATENT_NOTHING:
            latents = latents * (1 - nmask)
        self.init = latents
        return latents

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x * nmask + init_latent * (1 - nmask)``, the init latent repeated for a CFG batch."""
        assert self.init is not None, "the init latent is set before sampling"
        init = self.init.to(x.device, x.dtype)
        init = init.repeat(x.shape[0] // init.shape[0], 1, 1, 1)
        nmask = self.nmask.to(x.device, x.dtype)
        return x * nmask + init * (1 - nmask)


def latent_blend(nmask: np.ndarray, fill: int, fill_noise: torch.Tensor | None) -> LatentBlend:
    return LatentBlend(nmask=torch.from_numpy(np.ascontiguousarray(nmask, dtype=np.float32))[None, None], fill=fill,
                       fill_noise=fill_noise)


def _evaluation_sigma(scheduler: Any) -> torch.Tensor:
    """The sigma the model was evaluated at for the step the scheduler is about to take: DPM++ SDE's second
    evaluation is at its midpoint; every other evaluation at ``sigmas[step_index]`` (Heun's schedule repeats each
    sigma for its second evaluation)."""
    if not getattr(scheduler, "state_in_first_order", True) and getattr(scheduler, "mid_point_sigma", None) is not None:
        return scheduler.mid_point_sigma
    index = scheduler.step_index if scheduler.step_index is not None else scheduler.begin_index or 0
    return scheduler.sigmas[index]


def blend_into(scheduler: Any, spec: SchedulerSpec, blend: LatentBlend) -> None:
    """Make ``scheduler`` (a fresh one, for one pipeline call) blend as A1111's sampler does (see the module)."""
    if spec.timestep_sampler:
        scale_model_input = scheduler.scale_model_input

        def blended_input(sample: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            return scale_model_input(blend(sample), *args, **kwargs)

        scheduler.scale_model_input = blended_input
        return
    if scheduler.config.prediction_type != "epsilon":
        raise ModelError("override_settings.sd_model_checkpoint",
                         f"inpainting needs a checkpoint that predicts noise (epsilon), not "
                         f"{scheduler.config.prediction_type}")
    step = scheduler.step
    variance_preserving = spec.class_name in VARIANCE_PRESERVING

    def blended_step(model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any,
                     **kwargs: Any) -> Any:
        sigma = float(_evaluation_sigma(scheduler))
        a, b = (1.0, sigma) if not variance_preserving else (1 / (sigma**2 + 1) ** 0.5, sigma / (sigma**2 + 1) ** 0.5)
        x, eps = sample.float(), model_output.float()
        denoised = blend((x - b * eps) / a)
        return step(((x - a * denoised) / b).to(model_output.dtype), timestep, sample, *args, **kwargs)

    scheduler.step = blended_step


def last_blend(callback: Callable, blend: LatentBlend, stop_at: int | None, first: int) -> Callable:
    """``callback`` (a pipeline's ``callback_on_step_end``, see ``pipelines.step_counter``) that also blends the
    latents after the last step of sampling: at schedule index ``stop_at - 1``, or the pipeline's last step."""

    def blended(pipe: Any, i: int, t: Any, kwargs: dict) -> dict:
        out = callback(pipe, i, t, kwargs)
        if (stop_at is not None and first + i + 1 >= stop_at) or i + 1 == pipe.num_timesteps:
            out["latents"] = blend(out["latents"])
        return out

    return blended


def image_conditioning(pipe: Any, images: list[Image.Image], mask: Image.Image | None, round_: bool,
                       seeds: list[int], device: Any, dtype: torch.dtype) -> torch.Tensor:
    """A1111 ``inpainting_image_conditioning`` for a batch: (B, 5, h, w), the mask (rounded with ``round_``, ones
    without a mask) at the latent size, then the latents of the images with the masked pixels at 0."""
    from img2img_runner.pipelines import encode_pixels

    pixels = [pipe.image_processor.preprocess(image) for image in images]  # (1, 3, H, W) in -1..1
    if mask is None:
        weights = torch.ones(1, 1, *pixels[0].shape[-2:])
    else:
        weights = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None, None]
        if round_:
            weights = torch.round(weights)
    latents = encode_pixels(pipe.vae, [p * (1 - weights) for p in pixels], seeds, device, dtype)
    small = torch.nn.functional.interpolate(weights, size=latents.shape[-2:]).to(latents.device, latents.dtype)
    return torch.cat([small.expand(latents.shape[0], -1, -1, -1), latents], dim=1)


@contextlib.contextmanager
def extra_channels(unet: Any, conditioning: torch.Tensor):
    """Within the block, ``unet`` gets ``conditioning`` after the latents on every call (repeated for a CFG batch)."""

    def add(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        sample = args[0] if args else kwargs["sample"]
        extra = conditioning.to(sample.device, sample.dtype)
        sample = torch.cat([sample, extra.repeat(sample.shape[0] // extra.shape[0], 1, 1, 1)], dim=1)
        if args:
            return (sample, *args[1:]), kwargs
        return args, {**kwargs, "sample": sample}

    handle = unet.register_forward_pre_hook(add, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class Inpaint:
    """What sampling does for an inpainting job (``blend``) and an inpainting checkpoint (``conditioning``); neither:
    nothing."""

    blend: LatentBlend | None = None
    conditioning: torch.Tensor | None = None

    @property
    def transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return self.blend.start if self.blend is not None else None

    def scheduler(self, scheduler: Any, spec: SchedulerSpec) -> Any:
        if self.blend is not None:
            blend_into(scheduler, spec, self.blend)
        return scheduler

    def last_step(self, callback: Callable, stop_at: int | None, first: int) -> Callable:
        return last_blend(callback, self.blend, stop_at, first) if self.blend is not None else callback

    def unet(self, unet: Any) -> Any:
        return extra_channels(unet, self.conditioning) if self.conditioning is not None else contextlib.nullcontext()
