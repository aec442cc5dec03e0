"""``/sdapi/v1/txt2img`` through the same envelope, job and CRD as img2img: A1111's txt2img fields and defaults, and
what is refused, by name."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from api_samples import PNG, seed_unit
from img2img.api.crd import JOB, crd
from img2img.api.envelope import RunPodInput
from img2img.api.errors import problems
from img2img.api.job import JobProblems, load_job
from img2img.api.needs import output_image_bound, required_models, s3_images
from img2img.api.txt2img import Txt2ImgPayload

TXT2IMG = {"method": "POST", "endpoint": "/sdapi/v1/txt2img"}


def request(**payload) -> dict:
    return {"input": {"api": TXT2IMG, "payload": {"prompt": "a lighthouse at dusk", **payload}}}


def refusals(**payload) -> dict[str, str]:
    with pytest.raises(JobProblems) as exc:
        load_job(json.dumps(request(**payload)))
    return {p.path: p.reason for p in exc.value.problems}


def unit(**changes) -> dict:
    return seed_unit(**{"image": PNG, **changes})


def test_a1111_txt2img_defaults():
    payload = RunPodInput.model_validate(request()["input"]).payload
    assert isinstance(payload, Txt2ImgPayload)
    assert (payload.steps, payload.width, payload.height, payload.cfg_scale) == (50, 512, 512, 7.0)
    assert payload.effective_sampler() == ("Euler", "Automatic")
    assert payload.enable_hr is False and payload.denoising_strength == 0.75
    assert (payload.hr_scale, payload.hr_upscaler, payload.hr_second_pass_steps) == (2.0, None, 0)
    assert (payload.hr_resize_x, payload.hr_resize_y, payload.hr_sampler_name, payload.hr_scheduler) == (0, 0, None,
                                                                                                         None)
    assert (payload.hr_prompt, payload.hr_negative_prompt, payload.firstphase_width) == ("", "", 0)
    assert payload.hires_steps == 50 and payload.hires_prompts == ("a lighthouse at dusk", "")
    size = payload.hires_size
    assert (size.width, size.height) == (1024, 1024)


def test_the_endpoint_picks_the_payload_model_and_the_job_keeps_it():
    loaded = load_job(json.dumps(request(enable_hr=True, hr_scale=1.5, steps=20)))
    assert loaded.job.spec.input.txt2img
    manifest = loaded.job.manifest()
    assert manifest["spec"]["input"]["api"]["endpoint"] == "/sdapi/v1/txt2img"
    assert manifest["spec"]["input"]["payload"] == {"prompt": "a lighthouse at dusk", "enable_hr": True,
                                                    "hr_scale": 1.5, "steps": 20}
    no_slash = request()
    no_slash["input"]["api"]["endpoint"] = "sdapi/v1/txt2img"  # the RunPod worker strips the slash
    assert load_job(json.dumps(no_slash)).job.spec.input.txt2img


def test_parameters_echo_has_txt2img_fields_and_no_init_images():
    params = RunPodInput.model_validate(request(enable_hr=True)["input"]).payload.parameters()
    assert "init_images" not in params and "resize_mode" not in params and "include_init_images" not in params
    assert params["enable_hr"] is True and params["hr_scale"] == 2.0 and params["hr_upscaler"] is None
    assert list(params) == sorted(params)


def test_what_the_job_needs_of_a_runner():
    units = {"controlnet": {"args": [unit(image="s3://bucket-1/control.png"), unit(enabled=False)]}}
    payload = RunPodInput.model_validate(request(alwayson_scripts=units, batch_size=2, n_iter=3)["input"]).payload
    assert output_image_bound(payload) == 6 + 1
    assert [str(r) for r in s3_images(payload)] == ["s3://bucket-1/control.png"]
    assert required_models(payload, "sd_xl_base_1.0") == {"sd_xl_base_1.0", "control_v11p_sd15_canny"}
    # with the hires fix ControlNet returns each unit's map twice: at the second pass's size, then the first's
    hires = RunPodInput.model_validate(request(alwayson_scripts=units, enable_hr=True)["input"]).payload
    assert output_image_bound(hires) == 1 + 2


# --- refused, by name ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload, field, reason", [
    (dict(enable_hr=True, hr_upscaler="R-ESRGAN 4x+"), "hr_upscaler",
     "upscaler 'R-ESRGAN 4x+' is not available: model upscalers"),
    (dict(enable_hr=True, hr_upscaler="4x-UltraSharp"), "hr_upscaler", "need weights the runner does not have"),
    (dict(enable_hr=True, hr_checkpoint_name="deliberate_v2"), "hr_checkpoint_name",
     "a second checkpoint for the hires pass is not supported yet"),
    (dict(enable_hr=True, denoising_strength=0), "denoising_strength", "int(steps / denoising_strength)"),
    (dict(enable_hr=True, sampler_name="DDIM", hr_second_pass_steps=2), "hr_second_pass_steps",
     "DDIM runs n - 2 = 0 steps in the second pass"),
    (dict(enable_hr=True, steps=2, hr_sampler_name="PLMS"), "hr_second_pass_steps", "PLMS runs n - 2 = 0 steps"),
    (dict(enable_hr=True, hr_sampler_name="Euler Z"), "hr_sampler_name", "unknown sampler 'Euler Z'"),
    (dict(enable_hr=True, hr_sampler_name="UniPC"), "hr_sampler_name", "sampler 'UniPC' is not supported"),
    (dict(enable_hr=True, hr_scheduler="Align Your Steps"), "hr_scheduler",
     "schedule type 'Align Your Steps' is not supported"),
    (dict(enable_hr=True, scheduler="karras", hr_sampler_name="Euler a"), "hr_sampler_name",
     "schedule type 'Karras' is not available for sampler 'Euler a'"),
    (dict(enable_hr=True, hr_sampler_name="PLMS", refiner_checkpoint="sd_xl_refiner_1.0"), "refiner_checkpoint",
     "PLMS with a refiner is not supported"),
    (dict(sampler_name="PLMS", refiner_checkpoint="sd_xl_refiner_1.0"), "refiner_checkpoint",
     "PLMS with a refiner is not supported"),
    (dict(enable_hr=True, width=64, height=512, hr_resize_y=256), "hr_resize_y",
     "the second pass would render 32x256; at least 64x64"),
    # A1111 switches to hr_prompt's LoRAs for the second pass; the runner applies one set for the job
    (dict(enable_hr=True, hr_prompt="a boat <lora:boats:0.8>"), "hr_prompt",
     "names other LoRAs (<lora:boats:0.8:0.8>) than the prompt (none)"),
    (dict(enable_hr=True, prompt="a boat <lora:boats:1>", hr_prompt="a boat at sea <lora:boats:0.5>"), "hr_prompt",
     "names other LoRAs (<lora:boats:0.5:0.5>) than the prompt (<lora:boats:1:1>)"),
    (dict(enable_hr=True, prompt="a boat <lora:boats:1>", hr_prompt="a boat at sea"), "hr_prompt",
     "names other LoRAs (none) than the prompt (<lora:boats:1:1>)"),
    (dict(enable_hr=True, hr_prompt="a boat <hypernet:waves:1>"), "hr_prompt", "hypernetworks (<hypernet:waves:1>)"),
    (dict(enable_hr=True, hr_prompt="a boat <lora:boats:x>"), "hr_prompt", "the weight 'x' is not a number"),
    (dict(enable_hr=True, hr_prompt="a [cat:dog:0.5]"), "hr_prompt", "prompt editing"),
    (dict(enable_hr=True, hr_prompt="a boat:0.1", cfg_scale=5), "cfg_scale", "times hr_prompt's weight 0.1"),
    (dict(firstphase_width=256), "firstphase_width", "A1111's pre-1.0 way to size the first pass"),
    (dict(firstpass_image=PNG), "firstpass_image", "from a given first-pass image is not supported yet"),
    (dict(alwayson_scripts={"controlnet": {"args": [seed_unit()]}}), "alwayson_scripts.controlnet.args[0].image",
     "txt2img has no init image"),
    (dict(alwayson_scripts={"controlnet": {"args": [unit(hr_option="Sometimes")]}}),
     "alwayson_scripts.controlnet.args[0].hr_option", "unknown hires-fix option 'Sometimes'"),
    (dict(init_images=[PNG]), "init_images", "is an img2img field"),
    (dict(restore_faces=True), "restore_faces", "face restoration is not supported"),
])
def test_what_cannot_run_is_refused_naming_the_field(payload, field, reason):
    found = refusals(**payload)
    assert reason in found[f"input.payload.{field}"], found


def test_the_hires_pass_runs_the_prompts_loras_as_a1111_does_with_the_same_tags():
    prompt = "a boat <lora:boats:0.8> <lyco:waves:te=0.5>"
    for hr_prompt in ("", "a boat at sea, stormy <lora:boats:0.8> <lyco:waves:te=0.5>"):
        payload = RunPodInput.model_validate(request(prompt=prompt, enable_hr=True, hr_prompt=hr_prompt)["input"])
        assert [(t.name, t.te, t.unet) for t in payload.payload.loras] == [("boats", 0.8, 0.8), ("waves", 0.5, 0.5)]
    # without the hires fix hr_prompt is not read; with disable_extra_networks no LoRA runs in either pass
    RunPodInput.model_validate(request(prompt=prompt, hr_prompt="<lora:other:1>")["input"])
    off = request(prompt=prompt, enable_hr=True, hr_prompt="<lora:other:1>", disable_extra_networks=True)
    assert RunPodInput.model_validate(off["input"]).payload.loras == []


def test_the_compute_budget_counts_the_hires_pass():
    # 1024x1024 x 150 steps x 50 images: 7,864 megapixel-steps, within the budget on its own
    big = dict(width=1024, height=1024, steps=150, batch_size=5, n_iter=10)
    RunPodInput.model_validate(request(**big)["input"])
    # a second pass of 1536x1536 x 20 steps adds 2,359: over
    found = refusals(**big, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=20)
    assert found == {"input.payload": "asks for 10,224 megapixel-steps ((1024x1024 pixels x 150 steps + 1536x1536 "
                                      "pixels x 20 steps) x 50 images), more than 10,000, the most one job may ask "
                                      "for; ask for fewer images, steps or pixels"}
    # hr_second_pass_steps 0 is steps: 1152x1152 x 150 steps more
    assert "1152x1152 pixels x 150 steps" in refusals(**big, enable_hr=True, hr_scale=1.125)["input.payload"]


def test_hires_fields_are_not_read_without_enable_hr_as_in_a1111():
    payload = RunPodInput.model_validate(request(hr_upscaler="R-ESRGAN 4x+", hr_sampler_name="UniPC",
                                                 hr_checkpoint_name="deliberate_v2", denoising_strength=0)["input"])
    assert payload.payload.enable_hr is False


@pytest.mark.parametrize("value, name", [("Both", "Both"), (1, "Low res only"), ("HiResFixOption.HIGH_RES_ONLY",
                                                                                    "High res only")])
def test_controlnet_hr_option_as_sd_webui_controlnet_reads_it(value, name):
    units = {"controlnet": {"args": [unit(hr_option=value)]}}
    payload = RunPodInput.model_validate(request(alwayson_scripts=units)["input"]).payload
    assert payload.controlnet_units[0].hr_option_name == name


def test_txt2img_fields_on_img2img_point_to_the_txt2img_endpoint():
    with pytest.raises(ValidationError) as exc:
        RunPodInput.model_validate({"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"},
                                    "payload": {"init_images": [PNG], "enable_hr": True}})
    assert [str(p) for p in problems(exc.value, "input")] == [
        "input.payload.enable_hr: is a txt2img field (hires fix): send the request to /sdapi/v1/txt2img"]


# --- the CRD ---------------------------------------------------------------------------------------------------


def test_the_crd_holds_both_payloads_and_requires_init_images_for_img2img_only():
    schema = crd(JOB)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    envelope = schema["properties"]["spec"]["properties"]["input"]
    payload = envelope["properties"]["payload"]
    assert "required" not in payload  # neither endpoint requires a field the other lacks
    fields = payload["properties"]
    assert fields["init_images"]["minItems"] == 1
    assert (fields["hr_scale"]["minimum"], fields["hr_scale"]["maximum"]) == (1.0, 4.0)
    assert fields["hr_second_pass_steps"]["maximum"] == 150 and fields["enable_hr"]["type"] == "boolean"
    (rule,) = envelope["x-kubernetes-validations"]
    assert rule["fieldPath"] == ".payload.init_images" and "endsWith('img2img')" in rule["rule"]
