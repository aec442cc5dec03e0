"""Malformed jobs: each is refused, and the problem names the field the user wrote and why."""

from __future__ import annotations

import copy

import pytest

from api_samples import PNG, manifest, seed_request, seed_unit
from img2img.api.job import JobProblems, job_from_data


def request_with(**payload_changes) -> dict:
    request = seed_request()
    request["input"]["payload"].update(payload_changes)
    return request


def unit_with(**changes) -> dict:
    return request_with(alwayson_scripts={"controlnet": {"args": [seed_unit(**changes)]}})


def envelope_with(**api) -> dict:
    request = seed_request()
    request["input"]["api"].update(api)
    return request


def spec_with(**controls) -> dict:
    return manifest(controls)


CN = "input.payload.alwayson_scripts.controlnet.args[0]"

CASES = [
    # --- the envelope ---
    ("extras endpoint", envelope_with(endpoint="/sdapi/v1/extra-single-image"), "input.api.endpoint",
     "/sdapi/v1/extra-single-image is not supported; supported: POST /sdapi/v1/img2img, POST /sdapi/v1/txt2img"),
    ("GET method", envelope_with(method="GET"), "input.api.method", "GET is not supported"),
    ("options endpoint without slash", envelope_with(endpoint="sdapi/v1/options"), "input.api.endpoint",
     "/sdapi/v1/options is not supported"),
    ("no api", {"input": {"payload": seed_request()["input"]["payload"]}}, "input.api", "is required"),
    ("no payload", {"input": {"api": seed_request()["input"]["api"]}}, "input.payload", "is required"),
    ("unknown input key", {"input": {**seed_request()["input"], "paylaod": {}}}, "input.paylaod",
     "did you mean 'payload'"),
    ("RunPod policy under RunPod's minimum", {**seed_request(), "policy": {"executionTimeout": 1000}},
     "policy.executionTimeout", "must be at least 5000"),
    ("RunPod policy, unknown key", {**seed_request(), "policy": {"timeout": 1000}}, "policy.timeout",
     "is not a known field"),
    ("webhook over plain http", {**seed_request(), "webhook": "http://example.com/hook"}, "webhook",
     "must be an https:// URL"),
    ("webhook to a private address", {**seed_request(), "webhook": "https://10.1.2.3/hook"}, "webhook",
     "10.1.2.3 is a private address; refused"),
    ("webhook to cloud metadata", {**seed_request(), "webhook": "https://169.254.169.254/latest"}, "webhook",
     "link-local"),
    ("webhook to localhost", {**seed_request(), "webhook": "https://localhost:8443/hook"}, "webhook",
     "loopback name"),
    ("webhook to cloud metadata in 6to4 form", {**seed_request(), "webhook": "https://[2002:a9fe:a9fe::1]/hook"},
     "webhook", "169.254.169.254 in 6to4 form, a link-local address"),
    ("webhook to Azure's wire server", {**seed_request(), "webhook": "https://168.63.129.16/machine"}, "webhook",
     "Azure's wire server"),
    ("webhook with credentials", {**seed_request(), "webhook": "https://u:p@example.com/hook"}, "webhook",
     "must not carry credentials"),
    ("s3Config outside the gateway", {**seed_request(), "s3Config": {"bucketName": "b"}}, "s3Config",
     "gateway only"),
    ("spec.webhook to loopback", manifest({"webhook": "https://127.0.0.1/hook"}), "spec.webhook",
     "a loopback address"),
    # --- payload: types and ranges ---
    ("steps 0", request_with(steps=0), "input.payload.steps", "must be at least 1"),
    ("steps 151", request_with(steps=151), "input.payload.steps", "must be at most 150"),
    ("steps a string", request_with(steps="many"), "input.payload.steps", "must be a whole number"),
    ("steps fractional", request_with(steps=30.5), "input.payload.steps", "must be a whole number"),
    ("denoising above 1", request_with(denoising_strength=1.5), "input.payload.denoising_strength",
     "must be at most 1"),
    ("negative cfg", request_with(cfg_scale=-1), "input.payload.cfg_scale", "must be at least 0"),
    ("width too small", request_with(width=32), "input.payload.width", "must be at least 64"),
    ("height too big", request_with(height=4096), "input.payload.height", "must be at most 2048"),
    ("seed below -1", request_with(seed=-2), "input.payload.seed", "must be at least -1"),
    ("batch size 0", request_with(batch_size=0), "input.payload.batch_size", "must be at least 1"),
    ("n_iter too many", request_with(n_iter=1000), "input.payload.n_iter", "must be at most 100"),
    ("resize mode 4", request_with(resize_mode=4), "input.payload.resize_mode", "must be at most 3"),
    ("refiner switch above 1", request_with(refiner_switch_at=1.2), "input.payload.refiner_switch_at",
     "must be at most 1"),
    ("prompt not a string", request_with(prompt=["a", "b"]), "input.payload.prompt", "must be a string"),
    ("clip skip 0", request_with(override_settings={"CLIP_stop_at_last_layers": 0}),
     "input.payload.override_settings.CLIP_stop_at_last_layers", "must be at least 1"),
    ("samples format gif", request_with(override_settings={"samples_format": "gif"}),
     "input.payload.override_settings.samples_format", "must be one of"),
    ("typo in a key", request_with(stpes=20), "input.payload.stpes", "did you mean 'steps'"),
    ("unknown key", request_with(hires_fix=True), "input.payload.hires_fix", "is not a known field"),
    # --- payload: names ---
    ("unknown sampler", request_with(sampler_name="DPM++ 4M"), "input.payload.sampler_name",
     "unknown sampler 'DPM++ 4M'; valid: DPM++ 2M, DPM++ SDE"),
    ("unknown sampler_index alone", request_with(sampler_name=None, sampler_index="Eulr"),
     "input.payload.sampler_index", "unknown sampler 'Eulr'"),
    ("unknown scheduler", request_with(scheduler="karas"), "input.payload.scheduler",
     "unknown scheduler 'karas'; valid: automatic (Automatic), uniform (Uniform), karras (Karras)"),
    # --- payload: what we cannot honour ---
    ("latent mask", request_with(latent_mask=PNG), "input.payload.latent_mask",
     "a latent mask apart from mask is not supported"),
    ("mask with a width off the 8 grid", request_with(mask=PNG, width=500), "input.payload.width",
     "500 is not a multiple of 8, which inpainting needs"),
    ("mask, latent upscale, whole picture", request_with(mask=PNG, resize_mode=3, inpaint_full_res=False),
     "input.payload.resize_mode", "with a mask needs inpaint_full_res"),
    ("mask blur axes differ with a cropping unit", request_with(mask=PNG, mask_blur_x=2, mask_blur_y=4),
     "input.payload.mask_blur_x", "sd-webui-controlnet fails on that"),
    ("masked content 4", request_with(mask=PNG, inpainting_fill=4), "input.payload.inpainting_fill",
     "must be at most 3"),
    ("restore faces", request_with(restore_faces=True), "input.payload.restore_faces",
     "face restoration is not supported"),
    ("tiling", request_with(tiling=True), "input.payload.tiling", "tiling is not supported"),
    ("styles", request_with(styles=["cinematic"]), "input.payload.styles", "no styles database"),
    ("script", request_with(script_name="x/y/z plot"), "input.payload.script_name", "scripts are not supported"),
    ("variation seed", request_with(subseed_strength=0.3), "input.payload.subseed_strength", "variation seeds"),
    ("seed resize", request_with(seed_resize_from_w=512), "input.payload.seed_resize_from_w", "seed resize"),
    ("infotext", request_with(infotext="a cat\nSteps: 20"), "input.payload.infotext", "not supported"),
    ("lora weight", request_with(prompt="a cat <lora:pixel:strong>"), "input.payload.prompt",
     "<lora:pixel:strong>: the weight 'strong' is not a number"),
    ("hypernetwork", request_with(prompt="a cat <hypernet:anime:0.8>"), "input.payload.prompt",
     "hypernetworks (<hypernet:anime:0.8>) are not supported"),
    ("grid", request_with(save_images=True, batch_size=2), "input.payload.save_images", "grid"),
    ("other always-on script", request_with(alwayson_scripts={"ADetailer": {"args": []}}),
     "input.payload.alwayson_scripts.ADetailer", "always-on script 'ADetailer' is not supported"),
    # --- images ---
    ("seed placeholder", request_with(init_images=["base64 encoded image content"]),
     "input.payload.init_images[0]", "not a decodable image"),
    ("empty image", request_with(init_images=[""]), "input.payload.init_images[0]", "not a decodable image"),
    ("base64 of text", request_with(init_images=["aGVsbG8gd29ybGQ="]), "input.payload.init_images[0]",
     "not a decodable image"),
    ("truncated png", request_with(init_images=[PNG[: len(PNG) // 2]]), "input.payload.init_images[0]",
     "not a decodable image"),
    ("no init image", request_with(init_images=[]), "input.payload.init_images", "at least 1 item"),
    ("init_images missing", {"input": {"api": seed_request()["input"]["api"], "payload": {"prompt": "x"}}},
     "input.payload.init_images", "is required"),
    ("plain http", request_with(init_images=["http://example.com/a.png"]), "input.payload.init_images[0]",
     "plain http:// is not accepted"),
    ("s3 without key", request_with(init_images=["s3://bucket"]), "input.payload.init_images[0]",
     "needs an object key"),
    ("more images than batch", request_with(init_images=[PNG, PNG], batch_size=1), "input.payload.init_images",
     "more than batch_size"),
    ("bad control image", unit_with(image="not-an-image"), f"{CN}.image", "not a decodable image"),
    ("bad mask", request_with(mask="not-an-image"), "input.payload.mask", "not a decodable image"),
    ("mask over plain http", request_with(mask="http://example.com/m.png"), "input.payload.mask",
     "plain http:// is not accepted"),
    # --- ControlNet units ---
    ("unknown preprocessor", unit_with(module="cany"), f"{CN}.module", "unknown preprocessor 'cany'; valid: none"),
    ("weight above 2", unit_with(weight=2.5), f"{CN}.weight", "must be at most 2"),
    ("guidance start after end", unit_with(guidance_start=0.8, guidance_end=0.5, guidance=0.5),
     f"{CN}.guidance_start", "must not be after guidance_end"),
    ("guidance differs from guidance_end", unit_with(guidance=0.5), f"{CN}.guidance",
     "is an alias of guidance_end, and they differ"),
    ("both image keys", unit_with(image=PNG, input_image=PNG), f"{CN}.input_image", "not both"),
    ("resize mode 5", unit_with(resize_mode=5), f"{CN}.resize_mode", "unknown resize mode 5"),
    ("unknown control mode", unit_with(control_mode="Prompt first"), f"{CN}.control_mode",
     "unknown control mode 'Prompt first'"),
    ("unit mask", unit_with(mask=PNG), f"{CN}.mask", "masks (inpainting) are not supported"),
    ("unit typo", unit_with(modle="x"), f"{CN}.modle", "did you mean 'module' or 'model'"),
    ("low vram aliases differ", unit_with(low_vram=True), f"{CN}.lowvram", "alias of low_vram"),
    ("enabled not a bool", unit_with(enabled="maybe"), f"{CN}.enabled", "must be true or false"),
    ("too many units", request_with(alwayson_scripts={"controlnet": {"args": [seed_unit()] * 9}}),
     "input.payload.alwayson_scripts.controlnet.args", "at most 8"),
    # --- the manifest's controls ---
    ("priority too high", spec_with(priority=5000), "spec.priority", "must be at most 1000"),
    ("gpu class not a DNS label", spec_with(gpuClass="A100_80GB"), "spec.gpuClass", "is not a DNS label"),
    ("timeout 0", spec_with(timeoutSeconds=0), "spec.timeoutSeconds", "must be at least 1"),
    ("retries 11", spec_with(retries=11), "spec.retries", "must be at most 10"),
    ("negative ttl", spec_with(ttlSecondsAfterFinished=-5), "spec.ttlSecondsAfterFinished", "must be at least 0"),
    ("bucket name", spec_with(output={"bucket": "My_Bucket"}), "spec.output.bucket", "is not an S3 bucket name"),
    ("cancel not a bool", spec_with(cancel="please"), "spec.cancel", "must be true or false"),
    ("control inside the payload", manifest() | {"spec": {"input": request_with(priority=3)["input"]}},
     "spec.input.payload.priority", "is not a known field"),
    ("wrong kind", {**manifest(), "kind": "Job"}, "kind", "must be one of 'Img2ImgJob'"),
    ("wrong version", {**manifest(), "apiVersion": "img2img.dev/v1"}, "apiVersion", "'img2img.dev/v1alpha1'"),
    ("manifest payload error", manifest() | {"spec": {"input": request_with(steps=0)["input"]}},
     "spec.input.payload.steps", "must be at least 1"),
]


@pytest.mark.parametrize("data, path, reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_job_is_refused_naming_the_field(data, path, reason):
    with pytest.raises(JobProblems) as info:
        job_from_data(copy.deepcopy(data))
    found = {p.path: p.reason for p in info.value.problems}
    assert path in found, f"expected a problem at {path}, got {found}"
    assert reason in found[path]


def test_every_problem_is_reported_at_once():
    data = request_with(steps=0, cfg_scale="high", stpes=3, latent_mask=PNG,
                        alwayson_scripts={"controlnet": {"args": [seed_unit(module="cany", weight=9)]}})
    with pytest.raises(JobProblems) as info:
        job_from_data(data)
    assert {p.path for p in info.value.problems} == {
        "input.payload.steps", "input.payload.cfg_scale", "input.payload.stpes", "input.payload.latent_mask",
        f"{CN}.module", f"{CN}.weight"}


def test_reasons_are_plain_words_not_pydantic_jargon():
    with pytest.raises(JobProblems) as info:
        job_from_data(request_with(steps=0, width="wide"))
    text = str(info.value)
    assert "input.payload.steps: must be at least 1" in text
    assert "Input should be" not in text and "errors.pydantic.dev" not in text
