"""`img2img validate FILE` end to end, as users run it: the installed console script in a subprocess.

Valid requests and manifests print the normalized job as JSON and exit 0; malformed files exit non-zero with every
problem as `path: reason` on stderr and never a traceback.
"""

from __future__ import annotations

import base64
import collections
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "examples" / "seed-request.json"
JOB_YAML = REPO / "examples" / "job.yaml"


def img2img_bin() -> str:
    found = Path(sys.executable).parent / "img2img"
    return str(found) if found.exists() else (shutil.which("img2img") or "img2img")


def run(*args: str, input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([img2img_bin(), *args], input=input, capture_output=True, text=True, timeout=120,
                          cwd=cwd)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def seed() -> dict:
    return json.loads(SEED.read_text())


def write(tmp_path: Path, name: str, content: str | dict) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
    return path


def with_payload(**changes) -> dict:
    request = seed()
    request["input"]["payload"].update(changes)
    return request


def test_seed_request_is_valid_and_printed_as_the_normalized_job():
    proc = run("validate", str(SEED))
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    request = seed()
    assert job["apiVersion"] == "img2img.dev/v1alpha1" and job["kind"] == "Img2ImgJob"
    assert job["metadata"] == {"generateName": "img2img-"}
    assert job["spec"]["input"]["api"] == request["input"]["api"]
    payload = job["spec"]["input"]["payload"]
    # the request's own values come through unchanged (the real image included)
    for key, value in request["input"]["payload"].items():
        assert payload[key] == value, key
    assert "status" not in job


def test_a_manifest_yaml_is_valid():
    proc = run("validate", str(JOB_YAML))
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    source = yaml.safe_load(JOB_YAML.read_text())
    assert job["metadata"]["name"] == source["metadata"]["name"]
    assert job["spec"]["input"]["payload"]["init_images"] == source["spec"]["input"]["payload"]["init_images"]


def test_dash_reads_stdin():
    proc = run("validate", "-", input=SEED.read_text())
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["spec"]["input"]["payload"]["prompt"] == "an astronaut riding a horse"
    proc = run("validate", "-", input=JOB_YAML.read_text())
    assert proc.returncode == 0, proc.stderr
    proc = run("validate", "-", input='{"input": {"api": ')
    assert proc.returncode != 0 and "not valid JSON" in proc.stderr


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def image_b64(width: int, height: int, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, fmt)
    return base64.b64encode(buf.getvalue()).decode()


BAD_JSON = '{\n  "input": {\n    "api": {"method": "POST",, "endpoint": "/sdapi/v1/img2img"}\n  }\n}\n'
BAD_YAML = "apiVersion: img2img.dev/v1alpha1\nkind: Img2ImgJob\nspec:\n  input: [unclosed\n  priority: 1\n"


@pytest.mark.parametrize("name, content, expected", [
    ("bad.json", BAD_JSON, ["not valid JSON", "line 3, column"]),
    ("bad.yaml", BAD_YAML, ["not valid YAML", "(line "]),
    ("endpoint.json", None, ["input.api.endpoint: /sdapi/v1/extra-single-image is not supported"]),
    ("steps.json", with_payload(steps=0), ["input.payload.steps: must be at least 1"]),
    ("sampler.json", with_payload(sampler_name="Euler Z", sampler_index="Euler Z"),
     ["input.payload.sampler_name: unknown sampler 'Euler Z'"]),
    ("image.json", with_payload(init_images=["not-an-image!!"]),
     ["input.payload.init_images[0]: not a decodable image"]),
    ("image2.json", with_payload(init_images=["aGVsbG8gd29ybGQ="]),  # valid base64 of "hello world"
     ["input.payload.init_images[0]: not a decodable image"]),
    ("list.json", "[1, 2]", ["expected an object"]),
    # the input budget (img2img.api.limits)
    ("deep.json", with_payload(script_args=[nested(600)]),
     ["input.payload.script_args: is nested more than 16 levels deep"]),
    ("deeper.json", '{"input": ' + "[" * 5000 + "]" * 5000 + "}", ["nested too deeply to read"]),
    ("deeper.yaml", "input: " + "[" * 5000 + "]" * 5000 + "\n", ["nested too deeply to read"]),
    ("tall.json", with_payload(init_images=[image_b64(64, 262144)]),
     ["input.payload.init_images[0]: an image of 64x262144 pixels has an aspect ratio of 4096:1"]),
    ("tiff.json", with_payload(init_images=[image_b64(32, 32, "TIFF")]),
     ["input.payload.init_images[0]: TIFF images are not accepted"]),
    ("neither.yaml", "kind: ConfigMap\n", ["apiVersion:"]),
])
def test_malformed_files_fail_with_the_field_and_reason(tmp_path, name, content, expected):
    if content is None:
        content = seed()
        content["input"]["api"]["endpoint"] = "/sdapi/v1/extra-single-image"
    path = write(tmp_path, name, content)
    proc = run("validate", str(path))
    assert proc.returncode != 0
    assert proc.stdout == ""
    for text in expected:
        assert text in proc.stderr, proc.stderr
    assert " object at 0x" not in proc.stderr  # no Python object reprs in a user's error


def catalog_file(tmp_path: Path) -> Path:
    """The tiny-model catalog (models named as A1111 names them, the LoRA tiny_lora); no weights are read."""
    from img2img_runner.tiny_models import catalog_yaml

    return write(tmp_path, "catalog.yaml", catalog_yaml(collections.defaultdict(lambda: "00aabbccdd")))


def test_with_a_catalog_an_unknown_lora_is_refused_by_name(tmp_path):
    catalog = catalog_file(tmp_path)
    unknown = write(tmp_path, "unknown.json", with_payload(prompt="an astronaut <lora:pixel-art-xl:0.8>"))
    proc = run("validate", str(unknown), "--catalog", str(catalog))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == ("input.payload.prompt: unknown LoRA 'pixel-art-xl'; the model catalog has: "
                                   "tiny_lora")
    known = write(tmp_path, "known.json", with_payload(prompt="an astronaut <lora:tiny_lora:0.8>"))
    proc = run("validate", str(known), "--catalog", str(catalog))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["spec"]["input"]["payload"]["prompt"] == "an astronaut <lora:tiny_lora:0.8>"
    # without a catalog the names are not checked: the tag is well formed
    assert run("validate", str(unknown)).returncode == 0


def test_with_a_catalog_an_unknown_checkpoint_is_refused_by_name(tmp_path):
    request = with_payload(override_settings={"sd_model_checkpoint": "juggernaut_xl"})
    proc = run("validate", str(write(tmp_path, "checkpoint.json", request)), "--catalog", str(catalog_file(tmp_path)))
    assert proc.returncode == 1
    assert proc.stderr.startswith("input.payload.override_settings.sd_model_checkpoint: unknown checkpoint "
                                  "'juggernaut_xl'; the model catalog has: ")


def test_with_a_catalog_a_preprocessor_without_annotator_weights_is_refused_naming_the_entry_it_needs(tmp_path):
    request = seed()
    request["input"]["payload"]["alwayson_scripts"]["controlnet"]["args"][0]["module"] = "openpose_full"
    proc = run("validate", str(write(tmp_path, "openpose.json", request)), "--catalog", str(catalog_file(tmp_path)))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("input.payload.alwayson_scripts.controlnet.args[0].module: preprocessor "
                                  "'openpose_full' needs annotator weights (body_pose_model.pth, hand_pose_model.pth, "
                                  "facenet.pth, from lllyasviel/Annotators)")
    assert "architecture 'annotator'" in proc.stderr
    # with an annotator entry in the catalog it passes (the weights are read on the runner, not here)
    with_entry = catalog_file(tmp_path).read_text() + (
        "  lllyasviel/Annotators:\n    architecture: annotator\n    source: {path: annotators}\n")
    catalog = write(tmp_path, "with-annotators.yaml", with_entry)
    assert run("validate", str(tmp_path / "openpose.json"), "--catalog", str(catalog)).returncode == 0


def test_every_problem_is_reported_one_per_line(tmp_path):
    request = with_payload(steps=0, cfg_scale="seven", sampler_name="Euler Z", init_images=["bad image"])
    proc = run("validate", str(write(tmp_path, "many.json", request)))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    for path in ("input.payload.steps", "input.payload.cfg_scale",
                 "input.payload.sampler_name", "input.payload.init_images[0]"):
        assert any(line.startswith(f"{path}: ") for line in lines), (path, lines)


def test_manifest_problems_are_named_under_spec(tmp_path):
    job = yaml.safe_load(JOB_YAML.read_text())
    job["spec"]["input"]["payload"]["steps"] = 0
    job["spec"]["priority"] = 5000
    proc = run("validate", str(write(tmp_path, "job.yaml", yaml.safe_dump(job))))
    assert proc.returncode != 0
    assert "spec.input.payload.steps: must be at least 1" in proc.stderr
    assert "spec.priority: must be at most 1000" in proc.stderr


def test_missing_or_unreadable_files_are_one_line(tmp_path):
    proc = run("validate", str(tmp_path / "nope.json"))
    assert proc.returncode != 0 and "cannot read" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    proc = run("validate", str(binary))
    assert proc.returncode != 0 and "cannot read" in proc.stderr


def test_a_1mb_inline_image_is_valid(tmp_path):
    # validate checks offline what the API server will accept: a 1 MB image inline fits in a job
    from test_cli_client import noise_png_b64  # noqa: PLC0415  (tests/unit is on sys.path)

    request = seed()
    request["input"]["payload"]["init_images"] = [noise_png_b64(1_000_000)]
    proc = run("validate", str(write(tmp_path, "big.json", request)))
    assert proc.returncode == 0, proc.stderr


def test_a_txt2img_request_validates_and_what_it_cannot_run_is_named(tmp_path):
    request = json.loads((REPO / "examples" / "txt2img-request.json").read_text())
    proc = run("validate", str(write(tmp_path, "txt2img.json", request)))
    assert proc.returncode == 0 and json.loads(proc.stdout)["spec"]["input"]["payload"]["enable_hr"] is True
    request["input"]["payload"].update(hr_upscaler="R-ESRGAN 4x+", hr_checkpoint_name="deliberate_v2")
    proc = run("validate", str(write(tmp_path, "refused.json", request)))
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert any(line.startswith("input.payload.hr_upscaler: upscaler 'R-ESRGAN 4x+' is not available") for line in lines)
    assert any(line.startswith("input.payload.hr_checkpoint_name: a second checkpoint") for line in lines)


def test_override_settings_are_refused_by_name_with_the_reason(tmp_path):
    request = seed()
    request["input"]["payload"]["override_settings"].update(
        sd_model_chekpoint="sd_xl_base_1.0", enable_emphasis=False, hypertile_enable_unet=True, samples_format="gif")
    proc = run("validate", str(write(tmp_path, "options.json", request)))
    assert proc.returncode != 0
    lines = dict(line.split(": ", 1) for line in proc.stderr.strip().splitlines())
    options = "input.payload.override_settings."
    assert "not an A1111 1.10 option" in lines[options + "sd_model_chekpoint"]  # unknown to A1111 1.10
    assert "not an A1111 1.10 option" in lines[options + "enable_emphasis"]  # gone since 1.8
    assert "runs it at False only" in lines[options + "hypertile_enable_unet"]
    assert "'webp'" in lines[options + "samples_format"]
    assert set(lines) == {options + k for k in ("sd_model_chekpoint", "enable_emphasis", "hypertile_enable_unet",
                                                "samples_format")}
