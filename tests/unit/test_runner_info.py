"""A1111's info JSON and infotexts (1.10 format, current ControlNet extension), from a plan."""

from __future__ import annotations

import collections
import json

import pytest
import yaml

from runner_samples import plan_for, seed_payload, tiny_catalog, txt2img_payload

from img2img_runner.info import Outcome, controlnet_value, info, quote
from img2img_runner.tiny_models import catalog_yaml

# Processed.js() in A1111 1.10 (modules/processing.py), in order
INFO_KEYS = [
    "prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds", "subseed",
    "all_subseeds", "subseed_strength", "width", "height", "sampler_name", "cfg_scale", "steps", "batch_size",
    "restore_faces", "face_restoration_model", "sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash",
    "seed_resize_from_w", "seed_resize_from_h", "denoising_strength", "extra_generation_params",
    "index_of_first_image", "infotexts", "styles", "job_timestamp", "clip_skip", "is_using_inpainting_conditioning",
    "version",
]
RAN = Outcome(refiner_ran=True, job_timestamp="20230801195301")


def seed_info(**changes):
    plan = plan_for(seed_payload(seed=3445164620, subseed=2000360919, **changes))
    text, infotexts = info(plan, RAN)
    return plan, json.loads(text), infotexts


def test_info_has_every_a1111_key_in_order():
    _, obj, _ = seed_info()
    assert list(obj) == INFO_KEYS


def test_info_values_for_the_seed_request():
    plan, obj, infotexts = seed_info()
    catalog = tiny_catalog()
    assert obj["prompt"] == "an astronaut riding a horse" and obj["all_prompts"] == [obj["prompt"]]
    assert obj["negative_prompt"] == "" and obj["all_negative_prompts"] == [""]
    assert (obj["seed"], obj["all_seeds"]) == (3445164620, [3445164620])
    assert (obj["subseed"], obj["all_subseeds"], obj["subseed_strength"]) == (2000360919, [2000360919], 0)
    assert (obj["width"], obj["height"]) == (480, 640)
    assert obj["sampler_name"] == "DPM++ SDE"  # 1.9+: no schedule suffix
    assert obj["cfg_scale"] == 7.0 and isinstance(obj["cfg_scale"], float)
    assert (obj["steps"], obj["batch_size"]) == (30, 1)  # requested steps, not the executed 23
    assert obj["restore_faces"] is False and obj["face_restoration_model"] is None
    assert obj["sd_model_name"] == "sd_xl_base_1.0"
    assert obj["sd_model_hash"] == catalog.find("sd_xl_base_1.0").hash
    assert obj["sd_vae_name"] == "sdxl_vae.safetensors"
    assert obj["sd_vae_hash"] == catalog.find("sdxl_vae.safetensors").hash
    assert (obj["seed_resize_from_w"], obj["seed_resize_from_h"]) == (-1, -1)
    assert obj["denoising_strength"] == 0.75
    assert obj["index_of_first_image"] == 0
    assert obj["infotexts"] == infotexts and len(infotexts) == 1
    assert obj["styles"] == [] and obj["job_timestamp"] == "20230801195301"
    assert obj["clip_skip"] == 1 and obj["is_using_inpainting_conditioning"] is False
    assert obj["version"] == "v1.10.1"


def test_an_inpainting_checkpoint_writes_its_conditional_mask_weight():
    plan = plan_for(seed_payload(seed=1))
    text, infotexts = info(plan, Outcome(refiner_ran=False, job_timestamp="20240101000000",
                                         inpainting_conditioning=True))
    assert json.loads(text)["is_using_inpainting_conditioning"] is True
    assert "Denoising strength: 0.75, Conditional mask weight: 1.0, RNG: CPU" in infotexts[0]
    assert "Conditional mask weight" not in info(plan, RAN)[1][0]


def test_extra_generation_params_in_a1111s_order_with_the_substitution_said():
    _, obj, _ = seed_info()
    extra = obj["extra_generation_params"]
    assert list(extra) == ["ControlNet 0", "ControlNet 0 substitute", "Denoising strength", "Schedule type",
                           "Refiner", "Refiner switch at"]
    assert extra["ControlNet 0 substitute"].startswith("diffusers_xl_canny_mid")
    assert "control_v11p_sd15_canny" in extra["ControlNet 0 substitute"]
    assert extra["Schedule type"] == "Karras" and extra["Denoising strength"] == 0.75
    assert extra["Refiner"] == f"sd_xl_refiner_1.0 [{tiny_catalog().find('sd_xl_refiner_1.0').hash}]"
    assert extra["Refiner switch at"] == 0.8


def test_the_seed_infotext_in_a1111_110_format():
    catalog = tiny_catalog()
    _, _, (text,) = seed_info()
    cn = ("Module: canny, Model: control_v11p_sd15_canny, Weight: 1.0, Resize Mode: Crop and Resize, Processor Res: "
          "512, Threshold A: 75.0, Threshold B: 75.0, Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, "
          "Control Mode: Balanced")
    expected = (
        "an astronaut riding a horse\n"
        "Steps: 30, Sampler: DPM++ SDE, Schedule type: Karras, CFG scale: 7.0, Seed: 3445164620, Size: 480x640, "
        f"Model hash: {catalog.find('sd_xl_base_1.0').hash}, Model: sd_xl_base_1.0, "
        f"VAE hash: {catalog.find('sdxl_vae.safetensors').hash}, VAE: sdxl_vae.safetensors, "
        "Denoising strength: 0.75, RNG: CPU, "
        f'ControlNet 0: "{cn}", '
        "ControlNet 0 substitute: diffusers_xl_canny_mid (catalog substitute for control_v11p_sd15_canny under sdxl), "
        f"Refiner: sd_xl_refiner_1.0 [{catalog.find('sd_xl_refiner_1.0').hash}], Refiner switch at: 0.8, "
        "Version: v1.10.1"
    )
    assert text == expected


def test_the_combined_sampler_name_is_the_runpod_examples(monkeypatch):
    monkeypatch.setenv("IMG2IMG_SAMPLER_NAME", "combined")
    _, obj, (text,) = seed_info()
    assert obj["sampler_name"] == "DPM++ SDE Karras"  # webui 1.5.1, as the RunPod example's info shows
    assert "Sampler: DPM++ SDE Karras, CFG scale: 7.0," in text
    assert "Schedule type" not in text and "Schedule type" not in obj["extra_generation_params"]
    euler = plan_for(seed_payload(sampler_name="Euler", scheduler=None))
    assert json.loads(info(euler, RAN)[0])["sampler_name"] == "Euler"  # the model's own schedule adds nothing


def test_the_legacy_controlnet_string_is_the_runpod_examples(monkeypatch):
    monkeypatch.setenv("IMG2IMG_CONTROLNET_INFOTEXT", "legacy")
    _, obj, (text,) = seed_info()
    expected = ("preprocessor: canny, model: control_v11p_sd15_canny, weight: 1, starting/ending: (0, 1), resize mode: "
                "Crop and Resize, pixel perfect: False, control mode: Balanced, preprocessor params: (512, 75, 75)")
    assert obj["extra_generation_params"]["ControlNet 0"] == expected
    assert f'ControlNet 0: "{expected}"' in text


def test_no_refiner_keys_when_the_refiner_did_not_run():
    plan = plan_for(seed_payload())
    obj = json.loads(info(plan, Outcome(refiner_ran=False, job_timestamp="x"))[0])
    assert "Refiner" not in obj["extra_generation_params"]
    assert "Refiner" not in obj["infotexts"][0]


def test_negative_prompt_clip_skip_ensd_and_eta():
    payload = seed_payload(negative_prompt="blurry, low quality", sampler_name="Euler a", scheduler=None, eta=0,
                           override_settings={"sd_model_checkpoint": "v1-5-pruned-emaonly",
                                              "CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337},
                           refiner_checkpoint=None, alwayson_scripts={})
    plan = plan_for(payload)
    _, (text,) = info(plan, RAN)
    prompt, negative, params = text.split("\n")
    assert negative == "Negative prompt: blurry, low quality"
    assert "Schedule type: Automatic" in params  # the model's own schedule; no extra "Schedule type" key
    assert "Clip skip: 2" in params
    assert "Eta: 0" in params
    assert "ENSD" not in params  # eta 0 runs the deterministic Euler: no noise to offset
    assert "VAE" not in params  # no external VAE


@pytest.mark.parametrize("sampler, eta, shown", [
    ("Euler a", None, True),
    ("Euler a", 0.0, False),  # A1111: eta 0 -> the sampler "does not use" ENSD
    ("DPM++ SDE", None, False),  # no uses_ensd flag: its Brownian noise ignores the delta
    ("DPM++ 2M SDE", None, False),
    ("Euler", None, False),
])
def test_ensd_is_written_for_a1111s_uses_ensd_samplers_only(sampler, eta, shown):
    options = {"sd_model_checkpoint": "v1-5-pruned-emaonly", "eta_noise_seed_delta": 31337}
    payload = seed_payload(sampler_name=sampler, scheduler=None, eta=eta, refiner_checkpoint=None,
                           override_settings=options, alwayson_scripts={})
    _, (text,) = info(plan_for(payload), RAN)
    assert ("ENSD: 31337" in text) == shown


def test_batch_infotexts_carry_each_images_seed():
    plan = plan_for(seed_payload(seed=10, batch_size=2, n_iter=2))
    _, infotexts = info(plan, RAN)
    assert [t.split("Seed: ")[1].split(",")[0] for t in infotexts] == ["10", "11", "12", "13"]


def test_quote():
    assert quote("Karras") == "Karras"
    assert quote("a, b") == '"a, b"'
    assert quote('say "x": y') == '"say \\"x\\": y"'
    assert quote(0.8) == 0.8


def test_a_controlnet_value_with_a_comma_is_left_empty_as_cn_does():
    (unit,) = plan_for(seed_payload()).units
    assert controlnet_value(unit).startswith("Module: canny")
    from dataclasses import replace

    assert controlnet_value(replace(unit, model="a:b")) == ""


@pytest.mark.parametrize("version", ["v1.10.1", "v9.9.9"])
def test_version_is_configurable(monkeypatch, version):
    monkeypatch.setenv("IMG2IMG_INFOTEXT_VERSION", version)
    _, obj, (text,) = seed_info()
    assert obj["version"] == version and text.endswith(f"Version: {version}")


# --- txt2img ---------------------------------------------------------------------------------------------------


def test_txt2img_info_has_a1111s_keys_and_no_denoising_strength_in_its_infotext():
    plan = plan_for(txt2img_payload(seed=5, steps=20, width=640, height=384))
    obj = json.loads(info(plan, RAN)[0])
    assert list(obj) == INFO_KEYS
    assert (obj["width"], obj["height"], obj["steps"], obj["sampler_name"]) == (640, 384, 20, "Euler")
    assert obj["denoising_strength"] == 0.75  # Processed.js reads p.denoising_strength: A1111's default
    assert obj["extra_generation_params"] == {}
    (text,) = obj["infotexts"]
    assert text.startswith("a lighthouse at dusk\nSteps: 20, Sampler: Euler, Schedule type: Automatic, CFG scale: "
                           "7.0, Seed: 5, Size: 640x384, ")
    assert "Denoising strength" not in text  # create_infotext reads it from extra_generation_params only


def test_hires_fix_infotext_keeps_the_first_pass_size_and_names_the_second():
    plan = plan_for(txt2img_payload(seed=5, steps=20, width=512, height=512, enable_hr=True, hr_scale=1.5,
                                    hr_upscaler="Latent (bicubic antialiased)", hr_second_pass_steps=10,
                                    denoising_strength=0.55, hr_prompt="a lighthouse in a storm, dramatic"))
    obj = json.loads(info(plan, RAN)[0])
    (text,) = obj["infotexts"]
    assert ("Size: 512x512, Model hash: " in text and ", Denoising strength: 0.55, RNG: CPU, "
            'Hires prompt: "a lighthouse in a storm, dramatic", Hires upscale: 1.5, Hires steps: 10, '
            "Hires upscaler: Latent (bicubic antialiased), Version: v1.10.1") in text, text
    # A1111 keeps Hires prompt / negative prompt as functions (null in the JSON) and Hires schedule type as None
    assert obj["extra_generation_params"] == {
        "Denoising strength": 0.55, "Hires prompt": None, "Hires negative prompt": None, "Hires schedule type": None,
        "Hires upscale": 1.5, "Hires steps": 10, "Hires upscaler": "Latent (bicubic antialiased)"}
    assert (obj["width"], obj["height"]) == (512, 512)


def test_lora_hashes_follow_the_denoising_strength_as_a1111_writes_them():
    from img2img_runner.catalog import Catalog

    data = yaml.safe_load(catalog_yaml(collections.defaultdict(lambda: "00aabbccdd")))
    data["models"]["style,v2"] = {"architecture": "lora-sdxl", "source": {"file": "loras/style_v2.safetensors"}}
    prompt = "an astronaut <lora:tiny_lora:0.8> riding <lora:style,v2:te=0.5>"
    plan = plan_for(seed_payload(prompt=prompt, seed=1), Catalog.from_dict(data))
    text, (infotext,) = info(plan, Outcome(refiner_ran=True, job_timestamp="20230801195301",
                                           lora_hashes={"tiny_lora": "0123456789ab", "style,v2": "ba9876543210"}))
    extra = json.loads(text)["extra_generation_params"]
    assert list(extra) == ["ControlNet 0", "ControlNet 0 substitute", "Denoising strength", "Lora hashes",
                           "Schedule type", "Refiner", "Refiner switch at"]
    # the names as the prompt wrote them, without ":" and ","; the value quoted in the infotext
    assert extra["Lora hashes"] == "tiny_lora: 0123456789ab, stylev2: ba9876543210"
    assert 'Lora hashes: "tiny_lora: 0123456789ab, stylev2: ba9876543210"' in infotext
    assert infotext.startswith(prompt + "\n")  # the prompt as sent, tags and all


def test_no_lora_hashes_without_loras():
    _, obj, (text,) = seed_info(prompt="an astronaut <lora:tiny_lora:0.8>", disable_extra_networks=True)
    assert "Lora hashes" not in obj["extra_generation_params"] and "Lora hashes" not in text


def test_a_hires_fix_runs_the_prompts_loras_in_both_passes_and_lists_them_after_the_hires_keys():
    plan = plan_for(txt2img_payload(seed=5, steps=20, enable_hr=True, hr_scale=1.5,
                                    prompt="a lighthouse <lora:tiny_lora:0.8>",
                                    hr_prompt="a lighthouse in a storm <lora:tiny_lora:0.8>"))
    assert [p.prompt_text for p in plan.passes] == ["a lighthouse", "a lighthouse in a storm"]  # the tags taken out
    assert [(p.mentioned, p.te, p.unet) for p in plan.loras] == [("tiny_lora", 0.8, 0.8)]
    text, (infotext,) = info(plan, Outcome(refiner_ran=True, job_timestamp="20230801195301",
                                           lora_hashes={"tiny_lora": "0123456789ab"}))
    # A1111: txt2img init writes Denoising strength and the Hires keys, the LoRAs' activation then Lora hashes
    assert list(json.loads(text)["extra_generation_params"]) == [
        "Denoising strength", "Hires prompt", "Hires negative prompt", "Hires schedule type", "Hires upscale",
        "Lora hashes"]
    assert ('Hires prompt: "a lighthouse in a storm <lora:tiny_lora:0.8>", Hires upscale: 1.5, '
            'Lora hashes: "tiny_lora: 0123456789ab"') in infotext
