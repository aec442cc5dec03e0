"""Inpainting inside sampling (img2img_runner.inpaint_sampling) on diffusers' own schedulers: what each scheduler
takes as its denoised prediction is A1111's blend, ``denoised * nmask + init_latent * (1 - nmask)``, with the
denoised prediction k-diffusion's ``x - sigma * eps`` (or DPM-Solver's ``(x - sigma_t * eps) / alpha_t``) at the
sigma the model was evaluated at."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from img2img.api.samplers import scheduler_spec
from img2img_runner import inpaint
from img2img_runner.inpaint_sampling import extra_channels, last_blend, latent_blend, blend_into

SD_SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
NMASK = np.array([[1, 0], [1, 0]], np.float32)  # left column generated, right column kept
KEEP = torch.tensor([[False, True], [False, True]])


def latents(seed: int, batch: int = 1) -> torch.Tensor:
    return torch.randn((batch, 4, 2, 2), generator=torch.Generator().manual_seed(seed))


def blend_with_init(fill: int = inpaint.ORIGINAL, noise=None):
    blend = latent_blend(NMASK, fill, noise)
    init = latents(0)
    blend.start(init)
    return blend, init


def expected(denoised: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
    return torch.where(KEEP, init, denoised)


def make(sampler: str, schedule: str = "Automatic"):
    import diffusers

    spec = scheduler_spec(sampler, schedule)
    scheduler = getattr(diffusers, spec.class_name).from_config(SD_SCHEDULE, **spec.kwargs)
    scheduler.set_timesteps(10)
    if not spec.timestep_sampler:
        scheduler.set_begin_index(4 * spec.order)
    return scheduler, spec


def evaluate(scheduler, index: int, x: torch.Tensor, eps: torch.Tensor):
    t = scheduler.timesteps[index]
    scheduler.scale_model_input(x, t)
    return scheduler.step(eps, t, x, return_dict=False)


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "LMS"])
def test_k_diffusion_samplers_take_the_blended_denoised_prediction(sampler):
    scheduler, spec = make(sampler)
    blend, init = blend_with_init()
    blend_into(scheduler, spec, blend)
    x, eps = latents(1), latents(2)
    sigma = scheduler.sigmas[4]
    _, denoised = evaluate(scheduler, 4, x, eps)
    assert torch.allclose(denoised, expected(x - sigma * eps, init), atol=1e-5)


def test_heun_blends_its_second_evaluation_at_the_next_sigma():
    scheduler, spec = make("Heun")
    blend, init = blend_with_init()
    blend_into(scheduler, spec, blend)
    x1, eps1, eps2 = latents(1), latents(2), latents(3)
    x2, _ = evaluate(scheduler, 8, x1, eps1)  # first evaluation: an Euler step to the next sigma
    sigma_next = scheduler.sigmas[9]  # Heun's schedule repeats each sigma for the second evaluation
    _, denoised = evaluate(scheduler, 9, x2, eps2)
    assert torch.allclose(denoised, expected(x2 - sigma_next * eps2, init), atol=1e-5)


def test_dpmpp_sde_blends_its_second_evaluation_at_the_midpoint():
    scheduler, spec = make("DPM++ SDE", "Karras")
    blend, init = blend_with_init()
    blend_into(scheduler, spec, blend)
    x1, eps1, eps2 = latents(1), latents(2), latents(3)
    x2, _ = evaluate(scheduler, 8, x1, eps1)
    midpoint = scheduler.mid_point_sigma  # exp(-(t + t_next) / 2) of the step's two sigmas
    assert float(scheduler.sigmas[8]) > float(midpoint) > float(scheduler.sigmas[9])
    _, denoised = evaluate(scheduler, 9, x2, eps2)
    assert torch.allclose(denoised, expected(x2 - midpoint * eps2, init), atol=1e-5)


def test_dpmpp_2m_blends_in_its_variance_preserving_space():
    scheduler, spec = make("DPM++ 2M", "Karras")
    blend, init = blend_with_init()
    blend_into(scheduler, spec, blend)
    x, eps = latents(1), latents(2)
    sigma = scheduler.sigmas[4]
    alpha_t = 1 / (sigma**2 + 1) ** 0.5
    evaluate(scheduler, 4, x, eps)
    denoised = scheduler.model_outputs[-1]  # what DPM-Solver++ keeps as the step's x0
    assert torch.allclose(denoised, expected((x - sigma * alpha_t * eps) / alpha_t, init), atol=1e-5)


@pytest.mark.parametrize("sampler", ["DDIM", "PLMS"])
def test_ddim_and_plms_blend_the_models_input_with_the_clean_init_latent(sampler):
    scheduler, spec = make(sampler)
    blend, init = blend_with_init()
    blend_into(scheduler, spec, blend)
    x = latents(1, batch=2)  # the CFG batch: negative and positive rows of one image
    model_input = scheduler.scale_model_input(x, scheduler.timesteps[4])
    assert torch.equal(model_input, torch.stack([expected(x[0], init[0]), expected(x[1], init[0])]))


def test_the_masked_content_of_the_init_latent():
    encoded, noise = latents(0), latents(5)
    for fill, masked in [(inpaint.FILL, encoded), (inpaint.ORIGINAL, encoded), (inpaint.LATENT_NOISE, noise),
                         (inpaint.LATENT_NOTHING, torch.zeros_like(encoded))]:
        blend = latent_blend(NMASK, fill, noise if fill == inpaint.LATENT_NOISE else None)
        start = blend.start(encoded)
        assert torch.equal(start, torch.where(KEEP, encoded, masked)) and blend.init is start


def test_the_last_step_is_blended_and_no_other():
    blend, init = blend_with_init()
    pipe = type("Pipe", (), {"num_timesteps": 6})()
    x = latents(1)
    to_end = last_blend(lambda p, i, t, kwargs: kwargs, blend, None, 4)
    assert torch.equal(to_end(pipe, 4, 0, {"latents": x})["latents"], x)
    assert torch.equal(to_end(pipe, 5, 0, {"latents": x})["latents"], expected(x, init))
    stopped = last_blend(lambda p, i, t, kwargs: kwargs, blend, 7, 4)  # DDIM: the loop ends before index 7
    assert torch.equal(stopped(pipe, 1, 0, {"latents": x})["latents"], x)
    assert torch.equal(stopped(pipe, 2, 0, {"latents": x})["latents"], expected(x, init))


def test_an_inpainting_unet_gets_the_conditioning_after_the_latents_for_both_cfg_halves():
    class Echo(torch.nn.Module):
        def forward(self, sample, timestep):
            return sample

    unet, conditioning = Echo(), torch.arange(5.0).view(1, 5, 1, 1).expand(1, 5, 2, 2)
    x = latents(1, batch=2)
    with extra_channels(unet, conditioning):
        out = unet(x, 10)
    assert out.shape == (2, 9, 2, 2)
    assert torch.equal(out[:, :4], x) and torch.equal(out[0, 4:], conditioning[0]) and torch.equal(out[1, 4:],
                                                                                                   conditioning[0])
    assert unet(x, 10).shape == (2, 4, 2, 2)  # only within the block
