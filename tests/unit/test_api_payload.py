"""The A1111 img2img payload as users send it: the seed request, its variants, and the normalized values."""

from __future__ import annotations

import base64
import io
import os

import pytest
from PIL import Image
from pydantic import ValidationError

from api_samples import PNG, png_b64, seed_payload, seed_request, seed_unit
from img2img.api.errors import problems
from img2img.api.images import MAX_INLINE_TOTAL_CHARS
from img2img.api.payload import Img2ImgPayload


def paths(payload: dict) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        Img2ImgPayload.model_validate(payload)
    return {p.path: p.reason for p in problems(info.value, "input.payload")}


def test_seed_payload_validates_with_its_values_kept():
    payload = Img2ImgPayload.model_validate(seed_request()["input"]["payload"])
    assert (payload.steps, payload.width, payload.height, payload.denoising_strength) == (30, 480, 640, 0.75)
    assert payload.checkpoint == "sd_xl_base_1.0"
    assert payload.vae == "sdxl_vae.safetensors"
    assert payload.refiner == "sd_xl_refiner_1.0"
    assert payload.refiner_switch_at == 0.8
    assert payload.effective_sampler() == ("DPM++ SDE", "Karras")
    (unit,) = payload.enabled_controlnet_units
    assert unit.preprocessor.name == "canny"
    assert unit.model_name == "control_v11p_sd15_canny"
    assert unit.resize_mode_name == "Crop and Resize"
    assert unit.control_mode_name == "Balanced"
    assert unit.effective_guidance_end == 1.0
    assert unit.effective_thresholds == (75.0, 75.0)
    assert unit.effective_processor_res == 512
    assert unit.source_image is None  # no unit image: the init image is the control image


def test_a1111_api_defaults_not_the_runpod_workers():
    payload = Img2ImgPayload.model_validate({"init_images": [PNG]})
    assert payload.steps == 50
    assert payload.sampler_index == "Euler" and payload.sampler_name is None
    assert payload.effective_sampler() == ("Euler", "Automatic")
    assert (payload.cfg_scale, payload.width, payload.height) == (7.0, 512, 512)
    assert (payload.denoising_strength, payload.seed, payload.subseed) == (0.75, -1, -1)
    assert (payload.batch_size, payload.n_iter, payload.resize_mode) == (1, 1, 0)
    assert payload.refiner is None and payload.checkpoint is None
    assert payload.controlnet_units == []


def test_parameters_echo_is_a1111_shaped():
    params = Img2ImgPayload.model_validate(seed_request()["input"]["payload"]).parameters()
    # every A1111 field is echoed, defaults included, images nulled (include_init_images is false)
    assert params["init_images"] is None
    assert params["mask"] is None
    assert params["n_iter"] == 1 and params["mask_blur_x"] == 4 and params["inpaint_full_res"] is True
    assert params["sampler_name"] == "DPM++ SDE" and params["sampler_index"] == "DPM++ SDE"
    assert params["scheduler"] == "karras"
    assert params["styles"] is None and params["script_args"] == []
    # ControlNet args exactly as sent: the legacy `guidance` and `lowvram` keys, integer weight
    assert params["alwayson_scripts"] == seed_request()["input"]["payload"]["alwayson_scripts"]
    assert params["alwayson_scripts"]["controlnet"]["args"][0]["weight"] == 1
    assert list(params) == sorted(params)


def test_parameters_echo_keeps_images_when_asked_but_never_inline_unit_images():
    unit = seed_unit(image=png_b64(32, 32))
    ref_unit = seed_unit(image="s3://bucket/control.png")
    payload = seed_payload(include_init_images=True, alwayson_scripts={"controlnet": {"args": [unit, ref_unit]}})
    params = Img2ImgPayload.model_validate(payload).parameters()
    assert params["init_images"] == [PNG]
    assert params["alwayson_scripts"]["controlnet"]["args"][0]["image"] is None
    assert params["alwayson_scripts"]["controlnet"]["args"][1]["image"] == "s3://bucket/control.png"


@pytest.mark.parametrize("name, scheduler, expected", [
    ("DPM++ 2M Karras", None, ("DPM++ 2M", "Karras")),
    ("DPM++ SDE Karras", None, ("DPM++ SDE", "Karras")),
    ("DPM++ 2M SDE Exponential", None, ("DPM++ 2M SDE", "Exponential")),
    ("DPM++ 2M SDE Heun Karras", None, ("DPM++ 2M SDE Heun", "Karras")),
    ("Euler a", None, ("Euler a", "Automatic")),
    ("k_euler_a", None, ("Euler a", "Automatic")),
    ("Euler", "karras", ("Euler", "Karras")),
    ("DPM++ 2M", None, ("DPM++ 2M", "Karras")),  # 1.9+: its Automatic schedule is Karras
    ("DPM++ 2M SDE", "", ("DPM++ 2M SDE", "Exponential")),
    ("LMS Karras", "Uniform", ("LMS", "Karras")),  # a suffix overrides an explicit scheduler (A1111)
    ("Euler SGMUniform", None, ("Euler", "SGM Uniform")),
    ("DDIM", None, ("DDIM", "Automatic")),
    ("PLMS", "Automatic", ("PLMS", "Automatic")),
])
def test_sampler_names_resolve_as_a1111(name, scheduler, expected):
    payload = Img2ImgPayload.model_validate(seed_payload(sampler_name=name, sampler_index=name,
                                                         scheduler=scheduler, refiner_checkpoint=None))
    assert payload.effective_sampler() == expected


def test_sampler_index_is_used_when_sampler_name_is_empty():
    payload = Img2ImgPayload.model_validate(seed_payload(sampler_name="", sampler_index="Heun", scheduler=None))
    assert payload.effective_sampler() == ("Heun", "Automatic")
    # ... and ignored (as A1111 does) when sampler_name is set
    payload = Img2ImgPayload.model_validate(seed_payload(sampler_name="Euler", sampler_index="no such sampler"))
    assert payload.effective_sampler() == ("Euler", "Karras")


@pytest.mark.parametrize("resize, control, resize_name, control_name", [
    (0, 0, "Just Resize", "Balanced"),
    (1, 1, "Crop and Resize", "My prompt is more important"),
    (2, 2, "Resize and Fill", "ControlNet is more important"),
    (3, "Balanced", "Just Resize", "Balanced"),
    ("Inner Fit (Scale to Fit)", "ControlNet is more important", "Crop and Resize", "ControlNet is more important"),
    ("Envelope (Outer Fit)", "My prompt is more important", "Resize and Fill", "My prompt is more important"),
])
def test_controlnet_modes_accept_names_and_integers(resize, control, resize_name, control_name):
    payload = Img2ImgPayload.model_validate(seed_payload(alwayson_scripts={"controlnet": {"args": [
        seed_unit(resize_mode=resize, control_mode=control)]}}))
    unit = payload.controlnet_units[0]
    assert (unit.resize_mode_name, unit.control_mode_name) == (resize_name, control_name)
    assert unit.resize_mode == resize  # kept as sent, for the echo


def test_controlnet_lenient_forms():
    only_guidance = {"module": "depth_midas", "model": "control_v11f1p_sd15_depth [cfd03158]", "guidance": 0.6,
                     "low_vram": True, "input_image": f"data:image/png;base64,{PNG}", "enabled": False}
    payload = Img2ImgPayload.model_validate(seed_payload(alwayson_scripts={"ControlNet": {"args": [
        only_guidance, seed_unit()]}}))
    first, second = payload.controlnet_units
    assert first.preprocessor.name == "depth"  # a label resolves to its preprocessor
    assert first.model_name == "control_v11f1p_sd15_depth"
    assert first.effective_guidance_end == 0.6
    assert first.low_vram is True  # accepted as A1111 does; diffusers has no low-VRAM mode to switch
    assert first.source_image.startswith("data:image/png;base64,")
    assert first.effective_thresholds == (None, None)
    assert payload.enabled_controlnet_units == [second]  # `enabled` missing means enabled


def test_controlnet_out_of_range_thresholds_mean_the_preprocessor_defaults():
    unit = Img2ImgPayload.model_validate(seed_payload(alwayson_scripts={"controlnet": {"args": [
        seed_unit(threshold_a=-1, threshold_b=500, processor_res=-1)]}})).controlnet_units[0]
    assert unit.effective_thresholds == (100.0, 200.0)
    assert unit.effective_processor_res == 512


def test_enabled_units_the_runner_cannot_run_are_refused_at_validation():
    units = [seed_unit(module="reference_only"), seed_unit(module="depth_anything"), seed_unit(model="None"),
             seed_unit(module="dw_openpose_full", enabled=False)]  # a disabled unit is ignored, as CN does
    found = paths(seed_payload(alwayson_scripts={"controlnet": {"args": units}}))
    unit = "input.payload.alwayson_scripts.controlnet.args"
    assert "attention injection" in found[f"{unit}[0].module"]
    assert "controlnet-aux" in found[f"{unit}[1].module"]
    assert "names no ControlNet model" in found[f"{unit}[2].model"]
    assert f"{unit}[3].module" not in found


@pytest.mark.parametrize("value", ["None", "none", "", None])
def test_refiner_off_spellings(value):
    payload = Img2ImgPayload.model_validate(seed_payload(refiner_checkpoint=value))
    assert payload.refiner is None


def test_no_controlnet_no_refiner_no_overrides():
    payload = Img2ImgPayload.model_validate({"init_images": [PNG], "prompt": "a cat", "steps": 20})
    assert payload.controlnet_units == [] and payload.refiner is None and payload.checkpoint is None
    assert payload.parameters()["alwayson_scripts"] == {}


def test_batches_and_several_init_images():
    payload = Img2ImgPayload.model_validate(seed_payload(batch_size=4, n_iter=3, init_images=[PNG, png_b64(32, 48)]))
    assert payload.images_per_job == 12
    assert len(payload.init_images) == 2


def test_image_forms_data_uri_s3_https():
    for value in (f"data:image/png;base64,{PNG}", "s3://my-bucket/inputs/a.png", "https://example.com/a.png"):
        assert Img2ImgPayload.model_validate(seed_payload(init_images=[value])).init_images == [value]


def test_null_means_absent_as_in_a1111_and_the_api_server():
    payload = Img2ImgPayload.model_validate(seed_payload(steps=None, styles=None, mask=None, eta=None,
                                                         override_settings=None, sampler_index=None))
    assert payload.steps == 50 and payload.sampler_index == "Euler" and payload.checkpoint is None


def test_other_a1111_options_are_kept_as_sent():
    payload = Img2ImgPayload.model_validate(seed_payload(override_settings={
        "sd_model_checkpoint": "sd_xl_base_1.0", "CLIP_stop_at_last_layers": 2, "randn_source": "CPU"}))
    assert payload.override_settings.CLIP_stop_at_last_layers == 2
    assert payload.parameters()["override_settings"]["randn_source"] == "CPU"


def noise_png_b64(side: int) -> str:
    # noise does not compress: side*side*3 bytes of PNG, 4/3 as many base64 characters
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_a_1mb_inline_image_is_accepted():
    big = noise_png_b64(577)
    assert len(base64.b64decode(big)) >= 1_000_000
    payload = Img2ImgPayload.model_validate(seed_payload(init_images=[big]))
    assert payload.inline_image_chars == len(big) > 1_330_000


def test_one_inline_image_over_the_etcd_budget_is_refused_with_the_way_out():
    found = paths(seed_payload(init_images=["A" * (MAX_INLINE_TOTAL_CHARS + 4)]))
    assert "upload the image to S3" in found["input.payload.init_images[0]"]


def test_inline_images_over_the_etcd_budget_together_are_refused():
    each = noise_png_b64(450)  # ~0.8 M characters: fine alone, too much twice
    assert len(each) < MAX_INLINE_TOTAL_CHARS < 2 * len(each)
    found = paths(seed_payload(init_images=[each, each], batch_size=2))
    assert list(found) == ["input.payload.init_images"]
    assert "all inline images together" in found["input.payload.init_images"]
    assert "s3://bucket/key" in found["input.payload.init_images"]


def test_an_inline_mask_counts_against_the_etcd_budget():
    each = noise_png_b64(450)
    found = paths(seed_payload(init_images=[each], mask=each))
    assert "all inline images together" in found["input.payload.init_images"]


# --- inpainting ------------------------------------------------------------------------------------------------


def test_a_mask_is_accepted_with_a1111s_defaults():
    payload = Img2ImgPayload.model_validate(seed_payload(mask=PNG))
    assert payload.mask == PNG and payload.mask_blur_xy == (4, 4)
    assert (payload.inpainting_fill, payload.inpaint_full_res, payload.inpaint_full_res_padding) == (0, True, 0)
    assert payload.inpainting_mask_invert == 0 and payload.mask_round is True
    assert Img2ImgPayload.model_validate(seed_payload(mask="s3://bucket/masks/m.png")).mask == "s3://bucket/masks/m.png"


def test_mask_blur_sets_both_axes_as_a1111s_setter_does():
    payload = Img2ImgPayload.model_validate(seed_payload(mask=PNG, mask_blur=0, mask_blur_x=9, mask_blur_y=2))
    assert payload.mask_blur_xy == (0, 0)
    assert Img2ImgPayload.model_validate(seed_payload(mask=PNG, mask_blur_x=9, mask_blur_y=9)).mask_blur_xy == (9, 9)


def test_the_echo_nulls_the_mask_unless_the_images_are_asked_for():
    assert Img2ImgPayload.model_validate(seed_payload(mask=PNG)).parameters()["mask"] is None
    assert Img2ImgPayload.model_validate(seed_payload(mask=PNG, include_init_images=True)).parameters()["mask"] == PNG


def test_what_a1111_fails_on_is_refused_only_with_a_mask():
    odd = seed_payload(width=500, resize_mode=3, inpaint_full_res=False, mask_blur_x=2)
    Img2ImgPayload.model_validate(odd)  # no mask: plain img2img, all fine
    found = paths({**odd, "mask": PNG})
    assert set(found) == {"input.payload.width", "input.payload.resize_mode"}
    cropping = paths(seed_payload(mask=PNG, mask_blur_x=2))  # the seed's ControlNet unit crops its input
    assert "sd-webui-controlnet fails" in cropping["input.payload.mask_blur_x"]
    no_crop = seed_payload(mask=PNG, mask_blur_x=2)
    no_crop["alwayson_scripts"]["controlnet"]["args"][0]["inpaint_crop_input_image"] = False
    Img2ImgPayload.model_validate(no_crop)
    Img2ImgPayload.model_validate(seed_payload(mask=PNG, mask_blur_x=2, inpaint_full_res=False))


def test_seed_placeholder_is_refused_as_not_an_image():
    payload = seed_request()["input"]["payload"]
    payload["init_images"] = ["base64 encoded image content"]
    assert list(paths(payload)) == ["input.payload.init_images[0]"]
    assert paths(payload)["input.payload.init_images[0]"].startswith("not a decodable image")
