"""override_settings as A1111 1.10 applies them: honoured, accepted where they cannot change the answer, refused by
name otherwise; an unknown key is refused (A1111's opts.set fails on it). The image file options choose how the
answer's images are written."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api_samples import seed_payload
from img2img.api.errors import problems
from img2img.api.image_formats import ImageEncoding, content_type_of
from img2img.api.payload import Img2ImgPayload
from runner_samples import plan_for, seed_payload as runner_payload


def refusals(options: dict) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        Img2ImgPayload.model_validate(seed_payload(override_settings=options))
    return {p.path.removeprefix("input.payload.override_settings."): p.reason
            for p in problems(info.value, "input.payload")}


def test_options_at_their_default_or_without_effect_are_accepted_and_echoed():
    options = {"sd_model_checkpoint": "sd_xl_base_1.0", "emphasis": "Original", "comma_padding_backtrack": 20,
               "eta_ancestral": 1, "sdxl_crop_top": 0.0, "randn_source": "CPU", "samples_save": False,
               "outdir_img2img_samples": "/tmp/x", "live_previews_enable": False, "jpeg_quality": 95}
    payload = Img2ImgPayload.model_validate(seed_payload(override_settings=options))
    assert payload.parameters()["override_settings"]["outdir_img2img_samples"] == "/tmp/x"


def test_options_that_would_change_the_picture_are_refused_by_name():
    found = refusals({"emphasis": "No norm", "comma_padding_backtrack": 0, "eta_ancestral": 0.5,
                      "sdxl_refiner_high_aesthetic_score": 7, "img2img_color_correction": True,
                      "randn_source": "NV", "sd_lora": "add_detail", "hypertile_enable_unet": True,
                      "add_vae_hash_to_info": False, "lora_add_hashes_to_infotext": False})
    assert set(found) == {"emphasis", "comma_padding_backtrack", "eta_ancestral",
                          "sdxl_refiner_high_aesthetic_score", "img2img_color_correction", "randn_source", "sd_lora",
                          "hypertile_enable_unet", "add_vae_hash_to_info", "lora_add_hashes_to_infotext"}
    assert "'Original'" in found["emphasis"] and "20" in found["comma_padding_backtrack"]
    assert "'add_detail'" in found["sd_lora"] and "'None'" in found["sd_lora"]


def test_inpainting_options_run_at_a1111s_defaults_only():
    Img2ImgPayload.model_validate(seed_payload(override_settings={
        "inpainting_mask_weight": 1, "overlay_inpaint": True, "return_mask": False, "return_mask_composite": False}))
    found = refusals({"inpainting_mask_weight": 0.5, "overlay_inpaint": False, "return_mask": True,
                      "return_mask_composite": True})
    assert set(found) == {"inpainting_mask_weight", "overlay_inpaint", "return_mask", "return_mask_composite"}


def test_unknown_options_are_refused_by_name():
    # a typo, and keys A1111 1.10 no longer has (its opts.set fails on them as on any unknown key)
    found = refusals({"sd_model_chekpoint": "x", "enable_emphasis": True, "k_sched_type": "Automatic"})
    assert set(found) == {"sd_model_chekpoint", "enable_emphasis", "k_sched_type"}
    assert all("not an A1111 1.10 option" in reason for reason in found.values())


def test_options_of_a1111s_built_in_extensions_and_callback_order_are_known():
    Img2ImgPayload.model_validate(seed_payload(override_settings={
        "lora_preferred_name": "Filename", "canvas_hotkey_zoom": "Shift", "hypertile_max_tile_unet": 128,
        "SWIN_tile": 256, "sd3_enable_t5": True, "prioritized_callbacks_app_started": ["a"]}))


def encoding(**options) -> ImageEncoding:
    return Img2ImgPayload.model_validate(seed_payload(override_settings=options or None)).image_encoding


def test_the_image_options_choose_format_key_extension_content_type_and_quality():
    default = encoding()
    assert (default.format.pillow, default.format.extension, default.format.content_type) == (
        "PNG", "png", "image/png")
    assert (default.quality, default.lossless, default.infotext) == (80, False, True)
    jpg = encoding(samples_format="jpg", jpeg_quality=95)
    assert (jpg.format.pillow, jpg.format.extension, jpg.format.content_type, jpg.quality) == (
        "JPEG", "jpg", "image/jpeg", 95)
    assert encoding(samples_format="jpeg").format.extension == "jpeg"  # A1111 names files with the value as given
    webp = encoding(samples_format="webp", webp_lossless=True, enable_pnginfo=False)
    assert (webp.format.pillow, webp.format.content_type, webp.lossless, webp.infotext) == (
        "WEBP", "image/webp", True, False)


def test_image_options_out_of_range_are_refused_by_name():
    found = refusals({"samples_format": "avif", "jpeg_quality": 0})
    assert "'png', 'jpg', 'jpeg' or 'webp'" in found["samples_format"]
    assert "at least 1" in found["jpeg_quality"]
    assert "at most 100" in refusals({"jpeg_quality": 101})["jpeg_quality"]


def test_the_content_type_of_a_stored_image_follows_its_extension():
    assert content_type_of("jobs/ns/j/uid/attempt-1/images/0.webp") == "image/webp"
    assert content_type_of("results/abc/1.JPG") == "image/jpeg"
    assert content_type_of("results/abc/1.jpeg") == "image/jpeg"
    assert content_type_of("results/abc.d/0") == "application/octet-stream"


def test_a_prompt_comment_is_refused_unless_comments_are_off():
    with pytest.raises(ValidationError) as info:
        Img2ImgPayload.model_validate(seed_payload(prompt="a cat # on a mat", negative_prompt="#blurry"))
    found = {p.path: p.reason for p in problems(info.value, "input.payload")}
    assert set(found) == {"input.payload.prompt", "input.payload.negative_prompt"}
    assert "enable_prompt_comments" in found["input.payload.prompt"]
    Img2ImgPayload.model_validate(seed_payload(prompt="a cat # on a mat",
                                               override_settings={"enable_prompt_comments": False}))


def test_the_initial_noise_multiplier_option_applies_when_the_request_has_none():
    option = {"sd_model_checkpoint": "sd_xl_base_1.0", "initial_noise_multiplier": 0.9}
    assert plan_for(runner_payload(override_settings=option)).noise_multiplier == 0.9
    assert plan_for(runner_payload(override_settings=option, initial_noise_multiplier=1.1)).noise_multiplier == 1.1
    assert plan_for(runner_payload()).noise_multiplier == 1.0
