"""eta, s_churn, s_tmin, s_tmax and s_noise change the picture where A1111 1.10 reads them, and nowhere else.

By A1111's rules (sd_samplers_common.Sampler.initialize, sampler_extra_params, k-diffusion's samplers): Euler a at
eta 0 takes no noise step, so it is Euler; DPM++ 2M SDE at eta 0 is DPM++ 2M; s_noise scales the fresh noise of
DPM++ SDE / DPM++ 2M SDE and is not passed to Euler a; the Brownian-noise samplers take their noise from trees
seeded with the image seeds, so the eta noise seed delta (ENSD) does not touch them.
"""

from __future__ import annotations

import numpy as np
import pytest

from model_samples import sd15_input

FAST = dict(steps=5, denoising_strength=0.6)


def picture_of(run, **changes) -> np.ndarray:
    return np.asarray(run(sd15_input(**{**FAST, **changes})).images[0]).astype(int)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return np.abs(a - b).max() <= 1  # equal up to float rounding in the decoder


def test_eta_zero_draws_the_deterministic_twin(run):
    assert same(picture_of(run, sampler_name="Euler a", eta=0), picture_of(run, sampler_name="Euler"))
    assert not same(picture_of(run, sampler_name="Euler a"), picture_of(run, sampler_name="Euler"))
    twin = picture_of(run, sampler_name="DPM++ 2M", scheduler="karras")
    assert same(picture_of(run, sampler_name="DPM++ 2M SDE", scheduler="karras", eta=0), twin)
    assert not same(picture_of(run, sampler_name="DPM++ 2M SDE", scheduler="karras"), twin)


@pytest.mark.parametrize("sampler", ["DPM++ SDE", "DPM++ 2M SDE"])
def test_s_noise_scales_the_noise_of_sde_samplers(run, sampler):
    plain = picture_of(run, sampler_name=sampler, scheduler="karras")
    assert same(picture_of(run, sampler_name=sampler, scheduler="karras", s_noise=1.0), plain)
    assert not same(picture_of(run, sampler_name=sampler, scheduler="karras", s_noise=0), plain)


def test_s_noise_is_not_read_by_euler_a_nor_without_churn(run):
    assert same(picture_of(run, sampler_name="Euler a", s_noise=0), picture_of(run, sampler_name="Euler a"))
    euler = picture_of(run, sampler_name="Euler")
    assert same(picture_of(run, sampler_name="Euler", s_churn=0, s_tmin=0.5, s_tmax=10, s_noise=0.5), euler)


def test_brownian_noise_is_seeded_by_the_image_seed_alone(run):
    ensd = {"sd_model_checkpoint": "v1-5-pruned-emaonly", "eta_noise_seed_delta": 31337}
    sde = dict(sampler_name="DPM++ 2M SDE", scheduler="karras")
    assert same(picture_of(run, override_settings=ensd, **sde), picture_of(run, **sde))
    assert not same(picture_of(run, override_settings=ensd, sampler_name="Euler a"),
                    picture_of(run, sampler_name="Euler a"))
    # a batch gives each image the picture its seed gives alone
    batch = run(sd15_input(batch_size=2, seed=7, **sde, **FAST))
    assert same(np.asarray(batch.images[1]).astype(int), picture_of(run, seed=8, **sde))


def test_churn_is_bad_input_naming_s_churn(run):
    from img2img_runner.errors import BadInput

    with pytest.raises(BadInput) as exc:
        run(sd15_input(sampler_name="Euler", s_churn=1.0, **FAST))
    assert "s_churn" in str(exc.value)
