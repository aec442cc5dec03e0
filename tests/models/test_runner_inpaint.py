"""Inpainting through the runner's real path on the tiny models: sizes and counts, A1111's info, the init image's
pixels wherever the mask leaves them out, each masked content, ControlNet, SD 1.5 and SDXL, and the dedicated
inpainting checkpoints (a 9-channel UNet)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from model_samples import b64, canny_unit, picture, sd15_input

INIT = picture(96, 80)  # not the generation's 64x64: "Only masked" answers at the init image's size
FAST = dict(steps=6, denoising_strength=0.75, mask_blur=0)


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """Black, white in ``box`` (x1, y1, x2, y2; x2/y2 excluded)."""
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def masked(mask: Image.Image, image: Image.Image = INIT, **changes) -> dict:
    return sd15_input(image=image, mask=b64(mask), **{**FAST, **changes})


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def test_only_masked_answers_at_the_init_images_size_keeping_every_unmasked_pixel(run):
    mask = box_mask(INIT.size, (30, 20, 60, 50))
    result = run(masked(mask, batch_size=2, n_iter=2))
    assert len(result.images) == 4 and result.generated == 4
    inside = np.asarray(mask) > 0
    for image in result.images:
        assert image.size == (96, 80)
        out = pixels(image)
        assert (out[~inside] == pixels(INIT)[~inside]).all()
        assert np.abs(out[inside] - pixels(INIT)[inside]).mean() > 10  # the masked square was redrawn
    info = json.loads(result.info)
    assert (info["width"], info["height"]) == (64, 64) and info["all_seeds"] == [1, 2, 3, 4]
    assert info["is_using_inpainting_conditioning"] is False
    extra = info["extra_generation_params"]
    assert list(extra) == ["Denoising strength", "Inpaint area", "Masked area padding", "Masked content"]
    assert (extra["Inpaint area"], extra["Masked area padding"], extra["Masked content"]) == ("Only masked", 0, "fill")
    assert all("Inpaint area: Only masked, Masked area padding: 0, Masked content: fill" in t for t in result.infotexts)
    assert result.parameters["mask"] is None and result.parameters["inpaint_full_res"] is True


def test_whole_picture_answers_at_the_generation_size_over_the_resized_init_image(run):
    mask = box_mask((64, 64), (8, 8, 40, 40))  # a mask at the generation's size is not resized
    result = run(masked(mask, inpaint_full_res=False, mask_blur=4))
    (image,) = result.images
    assert image.size == (64, 64)
    resized = pixels(INIT.resize((64, 64), Image.Resampling.LANCZOS))
    # blur 4 reaches 10 pixels out; the overlay doubles the mask: farther out, the init image's own pixels
    far = np.ones((64, 64), bool)
    far[:51, :51] = False
    assert (pixels(image)[far] == resized[far]).all()
    assert np.abs(pixels(image)[12:36, 12:36] - resized[12:36, 12:36]).mean() > 10
    assert "Mask blur: 4, Masked content: fill" in result.infotexts[0]
    assert "Inpaint area" not in result.infotexts[0]


def test_an_inverted_mask_keeps_what_it_covers(run):
    mask = box_mask(INIT.size, (30, 20, 60, 50))
    result = run(masked(mask, inpainting_mask_invert=1))
    out, inside = pixels(result.images[0]), np.asarray(mask) > 0
    assert (out[inside] == pixels(INIT)[inside]).all()
    assert np.abs(out[~inside] - pixels(INIT)[~inside]).mean() > 10
    assert "Mask mode: Inpaint not masked" in result.infotexts[0]


@pytest.mark.parametrize("fill, name, sampler", [
    (0, "fill", {}),
    (1, None, {}),
    (2, "latent noise", {"sampler_name": "DDIM", "scheduler": "automatic"}),  # A1111's timestep sampler path
    (3, "latent nothing", {"sampler_name": "DPM++ 2M", "scheduler": "karras"}),  # DPM-Solver's own space
])
def test_each_masked_content_runs_and_is_named(run, fill, name, sampler):
    mask = box_mask(INIT.size, (30, 20, 60, 50))
    result = run(masked(mask, inpainting_fill=fill, **sampler))
    inside = np.asarray(mask) > 0
    assert (pixels(result.images[0])[~inside] == pixels(INIT)[~inside]).all()
    assert json.loads(result.info)["extra_generation_params"].get("Masked content") == name


def test_masked_contents_draw_different_pictures(run):
    mask = box_mask(INIT.size, (30, 20, 60, 50))
    drawn = [pixels(run(masked(mask, inpainting_fill=fill)).images[0]) for fill in range(4)]
    assert all(not np.array_equal(a, b) for i, a in enumerate(drawn) for b in drawn[i + 1:])


def test_the_latents_outside_the_mask_are_the_init_images_when_decoded(run, catalog, model_cache, monkeypatch):
    import diffusers

    entry = catalog.resolve(checkpoint="v1-5-pruned-emaonly", vae=None, refiner=None, controlnets=[]).checkpoint
    vae = model_cache.checkpoint(entry)["vae"]
    started, decoded = [], []
    add_noise, decode = diffusers.EulerDiscreteScheduler.add_noise, vae.decode

    def spied_add_noise(scheduler, original, noise, timesteps):
        started.append(original.clone())
        return add_noise(scheduler, original, noise, timesteps)

    def spied_decode(latents, *args, **kwargs):
        decoded.append(latents * vae.config.scaling_factor)
        return decode(latents, *args, **kwargs)

    monkeypatch.setattr(diffusers.EulerDiscreteScheduler, "add_noise", spied_add_noise)
    monkeypatch.setattr(vae, "decode", spied_decode)
    # a square on the latent grid (pixels 16..40: latent cells 2..4), generated at its own size: "Whole picture"
    run(masked(box_mask((64, 64), (16, 16, 40, 40)), image=picture(64, 64), inpaint_full_res=False,
               inpainting_fill=3))
    (init,), (final,) = started, decoded
    kept = np.ones((8, 8), bool)
    kept[2:5, 2:5] = False
    assert torch.allclose(final[0][:, kept], init[0][:, kept], atol=1e-4)
    assert (init[0][:, ~kept] == 0).all()  # latent nothing: the sampler starts from zeros under the mask
    assert not torch.allclose(final[0][:, ~kept], init[0][:, ~kept], atol=1e-4)


def test_controlnet_reads_its_input_cut_to_the_mask(run):
    mask = box_mask(INIT.size, (30, 20, 60, 50))
    unit = canny_unit(processor_res=64)
    cut = run(masked(mask, alwayson_scripts={"controlnet": {"args": [unit]}}))
    whole = run(masked(mask, alwayson_scripts={"controlnet": {"args": [{**unit, "inpaint_crop_input_image": False}]}}))
    for result in (cut, whole):
        image, detect_map = result.images
        assert image.size == (96, 80) and detect_map.size == (64, 64)
        assert "ControlNet 0: \"Module: canny" in result.infotexts[0]
    assert not np.array_equal(pixels(cut.images[1]), pixels(whole.images[1]))
    # the cut covers the mask's box grown to 1:1 (30x30 around 30..60 x 20..50): no edge of the init image's
    # bottom-left line, which the whole picture's map has
    assert pixels(whole.images[1])[56:, :8].max() > 0 and pixels(cut.images[1])[56:, :8].max() == 0


def test_the_seed_request_inpaints_on_sdxl_with_controlnet_and_the_refiner(run):
    mask = box_mask(INIT.size, (30, 20, 60, 50))
    result = run(masked(mask, override_settings={"sd_model_checkpoint": "sd_xl_base_1.0",
                                                 "sd_vae": "sdxl_vae.safetensors"},
                        refiner_checkpoint="sd_xl_refiner_1.0", refiner_switch_at=0.6, sampler_name="DPM++ SDE",
                        scheduler="karras", alwayson_scripts={"controlnet": {"args": [canny_unit()]}}))
    image, _ = result.images
    inside = np.asarray(mask) > 0
    assert (pixels(image)[~inside] == pixels(INIT)[~inside]).all()
    assert result.trace["batches"][0]["refiner"]  # the refiner took over, blending too
    assert "Refiner: sd_xl_refiner_1.0" in result.infotexts[0]


@pytest.mark.parametrize("checkpoint, architecture", [("sd-v1-5-inpainting", "sd15"),
                                                      ("sd_xl_base_1.0_inpainting_0.1", "sdxl")])
def test_inpainting_checkpoints_get_the_mask_and_the_masked_image(run, catalog, model_cache, checkpoint,
                                                                   architecture):
    entry = catalog.resolve(checkpoint=checkpoint, vae=None, refiner=None, controlnets=[]).checkpoint
    assert entry.architecture == architecture
    unet = model_cache.checkpoint(entry)["unet"]
    seen = []
    handle = unet.conv_in.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        masked_result = run(masked(box_mask((64, 64), (16, 16, 40, 40)), image=picture(64, 64),
                                   inpaint_full_res=False, override_settings={"sd_model_checkpoint": checkpoint}))
        plain = run(sd15_input(image=picture(64, 64), steps=3, override_settings={"sd_model_checkpoint": checkpoint}))
    finally:
        handle.remove()
    # the UNet's input: 4 latent channels, the mask (nearest, latent cells 2..4), 4 of the masked image
    first_masked, first_plain = seen[0], seen[-1]
    assert first_masked.shape[1] == 9
    expected = np.zeros((8, 8))
    expected[2:5, 2:5] = 1
    assert all((np.asarray(row[4].cpu()) == expected).all() for row in first_masked)
    assert (first_plain[:, 4] == 1).all()  # no mask: a mask of ones over a grey image
    for result in (masked_result, plain):
        info = json.loads(result.info)
        assert info["is_using_inpainting_conditioning"] is True and info["sd_model_name"] == checkpoint
        assert "Conditional mask weight: 1.0" in result.infotexts[0]
    inside = np.asarray(box_mask((64, 64), (16, 16, 40, 40))) > 0
    assert (pixels(masked_result.images[0])[~inside] == pixels(picture(64, 64))[~inside]).all()
