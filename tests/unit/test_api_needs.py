"""needs: which models a job needs of its runner, and how many images it can upload."""

from __future__ import annotations

import pytest

from api_samples import seed_payload, seed_unit
from img2img.api.needs import model_key, output_image_bound, required_models, s3_images
from img2img.api.payload import Img2ImgPayload


def payload(**changes) -> Img2ImgPayload:
    return Img2ImgPayload.model_validate(seed_payload(**changes))


def units(*unit_changes: dict) -> dict:
    return {"controlnet": {"args": [seed_unit(**c) for c in unit_changes]}}


@pytest.mark.parametrize("name", ["sd_xl_base_1.0", "sd_xl_base_1.0 [31e35c80fc]", "sd_xl_base_1.0.safetensors",
                                  "SDXL/sd_xl_base_1.0.safetensors", "SD_XL_Base_1.0.ckpt", " sd_xl_base_1.0 "])
def test_a1111_spellings_of_one_model_share_a_key(name):
    assert model_key(name) == "sd_xl_base_1.0"


def test_keys_keep_what_tells_models_apart():
    assert model_key("sdxl_vae.safetensors") == "sdxl_vae"
    assert model_key("v1-5-pruned-emaonly") == "v1-5-pruned-emaonly"
    assert model_key("control_v11p_sd15_canny [d14c016b]") == "control_v11p_sd15_canny"
    assert model_key("model [not-a-hash]") == "model [not-a-hash]"


def test_the_seed_request_needs_base_refiner_vae_and_its_controlnet():
    assert required_models(payload(), None) == {
        "sd_xl_base_1.0", "sd_xl_refiner_1.0", "sdxl_vae", "control_v11p_sd15_canny"}


def test_a_preprocessor_with_annotator_weights_needs_them_by_its_canonical_name():
    job = payload(alwayson_scripts=units({"module": "lineart_realistic"}, {"module": "canny"},
                                         {"module": "openpose_full", "enabled": False}))
    assert required_models(job, None) == {
        "sd_xl_base_1.0", "sd_xl_refiner_1.0", "sdxl_vae", "control_v11p_sd15_canny", "annotator:lineart"}


def test_no_checkpoint_named_means_the_catalogs_default():
    plain = payload(override_settings=None, refiner_checkpoint=None, alwayson_scripts={})
    assert required_models(plain, "sd_xl_base_1.0") == {"sd_xl_base_1.0"}
    assert required_models(plain, None) == frozenset()  # default unknown: nothing to prefer a runner by
    named = payload(override_settings={"sd_model_checkpoint": "v1-5-pruned-emaonly"}, refiner_checkpoint=None,
                    alwayson_scripts={})
    assert required_models(named, "sd_xl_base_1.0") == {"v1-5-pruned-emaonly"}


@pytest.mark.parametrize("vae", ["Automatic", "None", "auto", ""])
def test_the_checkpoints_own_vae_is_no_extra_model(vae):
    p = payload(override_settings={"sd_model_checkpoint": "sd_xl_base_1.0", "sd_vae": vae},
                refiner_checkpoint=None, alwayson_scripts={})
    assert required_models(p, None) == {"sd_xl_base_1.0"}


@pytest.mark.parametrize("refiner", ["None", "none", ""])
def test_a_refiner_turned_off_is_no_model(refiner):
    p = payload(refiner_checkpoint=refiner, alwayson_scripts={})
    assert required_models(p, None) == {"sd_xl_base_1.0", "sdxl_vae"}


def test_only_enabled_controlnet_units_naming_a_model_count():
    p = payload(alwayson_scripts=units({"model": "diffusers_xl_canny_mid [a1b2c3d4]"},
                                       {"model": "control_v11p_sd15_depth", "enabled": False}))
    assert required_models(p, None) == {"sd_xl_base_1.0", "sd_xl_refiner_1.0", "sdxl_vae", "diffusers_xl_canny_mid"}


def test_the_prompts_loras_are_needed_and_not_the_negative_prompts():
    p = payload(prompt="a cat <lora:Pixel-Art-XL.safetensors:0.8> <lyco:offset:1>", negative_prompt="<lora:blur:1>",
                refiner_checkpoint=None, alwayson_scripts={})
    assert required_models(p, None) == {"sd_xl_base_1.0", "sdxl_vae", "pixel-art-xl", "offset"}
    off = payload(prompt="a cat <lora:pixel:0.8>", disable_extra_networks=True, refiner_checkpoint=None,
                  alwayson_scripts={})
    assert required_models(off, None) == {"sd_xl_base_1.0", "sdxl_vae"}


def test_output_bound_counts_every_image_and_one_detect_map_per_enabled_unit():
    assert output_image_bound(payload()) == 2  # the seed: one image, one ControlNet unit
    assert output_image_bound(payload(batch_size=4, n_iter=3, alwayson_scripts={})) == 12
    two_enabled_one_off = units({}, {"enabled": False}, {"model": "control_v11p_sd15_depth", "module": "none"})
    assert output_image_bound(payload(batch_size=2, n_iter=5, alwayson_scripts=two_enabled_one_off)) == 12


def test_the_s3_images_a_job_reads_each_once_in_order():
    from img2img.api.images import S3Ref

    init, control = "s3://img2img/uploads/ns/a.png", "s3://other/b.png"
    read = payload(init_images=[init, "https://example.com/x.png", init], batch_size=3,
                   alwayson_scripts=units({"input_image": control}, {"input_image": "s3://img2img/off.png",
                                                                      "enabled": False}))
    assert s3_images(read) == [S3Ref("img2img", "uploads/ns/a.png"), S3Ref("other", "b.png")]
    assert s3_images(payload()) == []  # inline images only
    masked = payload(init_images=[init], mask="s3://img2img/uploads/ns/mask.png", alwayson_scripts={})
    assert s3_images(masked) == [S3Ref("img2img", "uploads/ns/a.png"), S3Ref("img2img", "uploads/ns/mask.png")]
