"""The hires fix's arithmetic, as A1111 1.10 does it (processing.py ``calculate_target_resolution``,
sd_samplers_common.py ``setup_img2img_steps``, sd_samplers.py names). Every expected value is worked out by hand
from A1111's code, in the comment beside it."""

from __future__ import annotations

import pytest

from img2img.api.errors import FieldError
from img2img.api.hires import hires_size, latent_mode, second_pass_steps, upscaler_refusal
from img2img.api.samplers import hires_resolve, scheduler_spec, timestep_grid, txt2img_timestep_refusal
from img2img_runner.plan import img2img_steps, txt2img_steps


@pytest.mark.parametrize("first, scale, resize, target, cut, answer", [
    # hr_resize 0x0: int(width * hr_scale) x int(height * hr_scale)
    ((512, 512), 2.0, (0, 0), (1024, 1024), (0, 0), (1024, 1024)),
    ((512, 768), 1.5, (0, 0), (768, 1152), (0, 0), (768, 1152)),
    # int(520 * 1.05) = int(546.0) = 546, int(512 * 1.05) = int(537.6) = 537; the latents cover 546 // 8 = 68 and
    # 537 // 8 = 67 cells: 544 x 536
    ((520, 512), 1.05, (0, 0), (546, 537), (0, 0), (544, 536)),
    # one side given: the other keeps the ratio, 1000 * 512 // 768 = 666 -> 83 cells, 664 pixels
    ((512, 768), 2.0, (0, 1000), (666, 1000), (0, 0), (664, 1000)),
    ((512, 512), 2.0, (1024, 0), (1024, 1024), (0, 0), (1024, 1024)),
    # both given, wider than the first pass (512/512 < 1024/768): full width, height 1024 * 512 // 512 = 1024,
    # truncate_y = (1024 - 768) // 8 = 32 cells: 128 - 32 = 96 cells, 768 pixels
    ((512, 512), 2.0, (1024, 768), (1024, 1024), (0, 32), (1024, 768)),
    # taller first pass (512/768 < 1000/1000): 1000 x 1000 * 768 // 512 = 1500, truncate_y = 500 // 8 = 62:
    # 1500 // 8 = 187 cells less 62 = 125, 1000 pixels; the width is 1000 // 8 = 125 cells
    ((512, 768), 2.0, (1000, 1000), (1000, 1500), (0, 62), (1000, 1000)),
    # wider first pass (768/512 >= 1024/1024): 1024 * 768 // 512 = 1536 x 1024, truncate_x = 512 // 8 = 64
    ((768, 512), 2.0, (1024, 1024), (1536, 1024), (64, 0), (1024, 1024)),
])
def test_target_resolution_and_the_answers_size(first, scale, resize, target, cut, answer):
    size = hires_size(*first, scale, *resize)
    assert (size.target_width, size.target_height) == target
    assert (size.cut_x, size.cut_y) == cut
    assert (size.width, size.height) == answer


def test_second_pass_steps_default_to_steps():
    assert second_pass_steps(0, 30) == 30
    assert second_pass_steps(12, 30) == 12


EULER, DDIM, PLMS, HEUN, DPMPP_2M = (scheduler_spec(name, "Automatic") for name in
                                     ("Euler", "DDIM", "PLMS", "Heun", "DPM++ 2M"))


@pytest.mark.parametrize("n, ds, spec, schedule, executed, first", [
    # setup_img2img_steps(p, steps=n): schedule int(n / min(ds, 0.999)), t_enc = n - 1; k-diffusion runs t_enc + 1
    # steps from sigmas[schedule - t_enc - 1]
    (20, 0.7, EULER, 28, 20, 8),  # 20 / 0.7 = 28.57 -> 28; the last 20 of 28
    (10, 0.5, EULER, 20, 10, 10),
    (4, 0.75, EULER, 5, 4, 1),  # 4 / 0.75 = 5.33 -> 5
    (6, 1.0, EULER, 6, 6, 0),  # 6 / 0.999 = 6.006 -> 6: the whole schedule
    (12, 0.35, EULER, 34, 12, 22),  # 12 / 0.35 = 34.29 -> 34
    # DDIM: noised to timesteps[t_enc = 9] of 20, then t_enc - 1 = 8 steps from index 20 - 9 = 11
    (10, 0.5, DDIM, 20, 8, 11),
])
def test_second_pass_steps_run_n_steps_over_a_stretched_schedule(n, ds, spec, schedule, executed, first):
    steps = img2img_steps(n, ds, spec, fix_steps=True)
    assert (steps.schedule, steps.executed, steps.first_index, steps.requested) == (schedule, executed, first, n)


@pytest.mark.parametrize("spec, steps, executed, evaluations", [
    (EULER, 20, 20, 20),  # txt2img: every step of the schedule, from noise
    (HEUN, 10, 10, 19),  # 2nd order: 2 per step, the last an Euler step
    # DDIM: range(0, 1000, 100) + 1 = 1, 101, ..., 901: a step from each but 1
    (DDIM, 10, 9, 9),
    # range(0, 1000, 166) + 1 = 1, 167, ..., 831, 997: seven timesteps, six steps, the first from 997
    (DDIM, 6, 6, 6),
    (PLMS, 10, 9, 10),  # PLMS's first step evaluates twice
    (PLMS, 30, 30, 31),  # 1000 // 30 = 33: 1, 34, ..., 991, thirty-one timesteps
])
def test_the_first_pass_steps(spec, steps, executed, evaluations):
    result = txt2img_steps(steps, spec)
    assert (result.executed, result.first_index, result.schedule, result.evaluations) == (executed, 0, steps,
                                                                                          evaluations)
    assert result.sampling_steps == steps  # ControlNet reads its progress out of `steps`, as launch_sampling(steps)


def test_a1111s_ddim_grid_and_the_clipped_top_it_cannot_step_from():
    assert timestep_grid(6) == (1, 167, 333, 499, 665, 831, 997)
    assert timestep_grid(4) == (1, 251, 501, 751)
    # 1000 // 3 = 333: 1, 334, 667, 1000 clipped to 999; A1111 steps 999 -> 667, diffusers 999 -> 666
    assert timestep_grid(3) == (1, 334, 667, 999)
    assert "clips its first timestep to 999" in txt2img_timestep_refusal(DDIM, 3)
    # clipped where 999 is a multiple of 1000 // steps: 333 (3), 111 (9), 37 (27), 27 (36, 37), 9 (101 to 111)
    refused = [n for n in range(1, 151) if txt2img_timestep_refusal(PLMS, n)]
    assert refused == [1, 3, 9, 27, 36, 37, *range(101, 112)]
    assert "takes no step" in txt2img_timestep_refusal(DDIM, 1)
    assert txt2img_timestep_refusal(EULER, 3) is None


@pytest.mark.parametrize("name, mode", [
    (None, ("bilinear", False)),  # absent: A1111's latent_upscale_default_mode, "Latent"
    ("Latent", ("bilinear", False)),
    ("Latent (antialiased)", ("bilinear", True)),
    ("Latent (bicubic)", ("bicubic", False)),
    ("Latent (bicubic antialiased)", ("bicubic", True)),
    ("Latent (nearest)", ("nearest", False)),
    ("Latent (nearest-exact)", ("nearest-exact", False)),
    ("None", None), ("Lanczos", None), ("Nearest", None),  # image upscalers
])
def test_upscaler_names(name, mode):
    assert latent_mode(name) == mode
    assert upscaler_refusal(name) is None


@pytest.mark.parametrize("name", ["R-ESRGAN 4x+", "ESRGAN_4x", "SwinIR 4x", "LDSR", "4x-UltraSharp", "latent"])
def test_model_upscalers_and_unknown_names_are_refused_by_name(name):
    why = upscaler_refusal(name)
    assert why.startswith(f"upscaler {name!r} is not available") and "'Lanczos'" in why


@pytest.mark.parametrize("sent, hr, expected", [
    # hr_sampler_name absent: the first pass's sampler, its schedule as A1111's API keeps it
    (("Euler a", None), (None, None), ("Euler a", "Automatic")),
    (("DPM++ 2M", "Exponential"), (None, None), ("DPM++ 2M", "Exponential")),
    # "DPM++ 2M Karras": the suffix is DPM++ 2M's own default, so the API keeps no scheduler: the hires sampler's
    # Automatic (Euler: the model's own schedule)
    (("DPM++ 2M Karras", None), ("Euler", None), ("Euler", "Automatic")),
    # a suffix other than the default is kept: Euler on Exponential
    (("DPM++ 2M Exponential", None), ("Euler", None), ("Euler", "Exponential")),
    (("Euler", "karras"), ("DPM++ SDE", None), ("DPM++ SDE", "Karras")),
    (("Euler", None), ("DPM++ 2M", None), ("DPM++ 2M", "Karras")),  # Automatic: DPM++ 2M's default
    (("Euler", "karras"), ("Euler", "Uniform"), ("Euler", "Uniform")),
    (("DDIM", None), ("Use same sampler", "Use same scheduler"), ("DDIM", "Automatic")),  # the UI's "same"
])
def test_the_second_pass_sampler_and_schedule(sent, hr, expected):
    assert hires_resolve(sent[0], None, sent[1], *hr).pair() == expected


def test_an_unknown_hires_name_is_refused_under_its_own_field():
    with pytest.raises(FieldError) as exc:
        hires_resolve("Euler", None, None, "Euler Z", None)
    assert exc.value.field == "hr_sampler_name"
    with pytest.raises(FieldError) as exc:
        hires_resolve("Euler", None, None, None, "nonsense")
    assert exc.value.field == "hr_scheduler"
