"""``img2img run FILE -o DIR`` as a user runs it: a subprocess, the tiny catalog, the RunPod-shaped answer on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from PIL import ExifTags, Image

from model_samples import seed_input

REPO = Path(__file__).resolve().parents[2]
IMG2IMG = Path(sys.executable).with_name("img2img")


def img2img_run(file: Path, out: Path, *extra: str, env: dict[str, str] | None = None):
    proc = subprocess.run([str(IMG2IMG), "run", str(file), "-o", str(out), *extra], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})}, cwd=file.parent)
    return proc


def completed_answer(proc, out: Path) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads(proc.stdout)
    assert answer["status"] == "COMPLETED" and answer["id"]
    assert isinstance(answer["delayTime"], int) and answer["delayTime"] >= 0
    assert isinstance(answer["executionTime"], int) and answer["executionTime"] >= 0
    output = answer["output"]
    assert set(output) == {"images", "info", "parameters"}
    assert output["parameters"]["init_images"] is None
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(p).name for p in output["images"])
    assert all(Path(p).parent.resolve() == out.resolve() for p in output["images"])
    return answer


def test_the_seed_request_runs_and_writes_its_images(tmp_path, tiny_catalog_path):
    request = {"input": seed_input(64, 64, seed=42, steps=6)}
    file = tmp_path / "request.json"
    file.write_text(json.dumps(request))
    out = tmp_path / "out"

    answer = completed_answer(img2img_run(file, out, env={"IMG2IMG_CATALOG": str(tiny_catalog_path)}), out)

    images = [Image.open(p) for p in answer["output"]["images"]]
    assert [Path(p).name for p in answer["output"]["images"]] == ["0.png", "1.png"]  # the picture, the detect map
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    info = json.loads(answer["output"]["info"])
    assert info["seed"] == 42 and info["all_seeds"] == [42]
    assert "diffusers_xl_canny_mid" in info["extra_generation_params"]["ControlNet 0 substitute"]
    assert images[0].text["parameters"] == info["infotexts"][0] and "Seed: 42," in info["infotexts"][0]
    assert "parameters" not in images[1].text
    parameters = answer["output"]["parameters"]
    sent = request["input"]["payload"]
    assert parameters["prompt"] == sent["prompt"] and parameters["steps"] == 6 and parameters["seed"] == 42
    assert parameters["alwayson_scripts"]["controlnet"]["args"][0]["model"] == "control_v11p_sd15_canny"


def test_an_sd15_manifest_runs_with_the_catalog_flag_and_writes_its_samples_format(tmp_path, tiny_catalog_path):
    manifest = yaml.safe_load((REPO / "examples" / "job-sd15.yaml").read_text())
    payload = manifest["spec"]["input"]["payload"]
    payload.update(width=64, height=64, steps=4, batch_size=2)
    payload.setdefault("override_settings", {})["samples_format"] = "jpeg"
    file = tmp_path / "job.yaml"
    file.write_text(yaml.safe_dump(manifest))
    out = tmp_path / "images"

    env = {"IMG2IMG_CATALOG": str(tmp_path / "not-there.yaml")}  # the flag wins over the environment
    answer = completed_answer(img2img_run(file, out, "--catalog", str(tiny_catalog_path), env=env), out)

    assert len(answer["output"]["images"]) == 3  # two pictures, one detect map
    info = json.loads(answer["output"]["info"])
    assert info["sd_model_name"] == "deliberate_v2" and info["all_seeds"] == [1234, 1235]
    assert [Path(p).name for p in answer["output"]["images"]] == ["0.jpeg", "1.jpeg", "2.jpeg"]
    for path, text in zip(answer["output"]["images"], info["infotexts"]):
        jpeg = Image.open(path)
        comment = jpeg.getexif().get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment]
        assert (jpeg.format, jpeg.size) == ("JPEG", (64, 64)) and comment == b"UNICODE\0" + text.encode("utf-16-be")
    assert "Model: control_v11p_sd15_canny" in info["extra_generation_params"]["ControlNet 0"]
    assert answer["output"]["parameters"]["negative_prompt"] == "blurry, lowres"


def test_an_unknown_model_fails_with_exit_3_naming_it(tmp_path, tiny_catalog_path):
    file = tmp_path / "request.json"
    file.write_text(json.dumps({"input": seed_input(64, 64, override_settings={"sd_model_checkpoint": "dreamy_v9"})}))
    out = tmp_path / "out"

    proc = img2img_run(file, out, "--catalog", str(tiny_catalog_path))

    assert proc.returncode == 3, proc.stderr[-2000:]
    answer = json.loads(proc.stdout)
    assert answer["status"] == "FAILED" and "dreamy_v9" in answer["error"]
    assert "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_without_a_catalog_it_says_how_to_give_one(tmp_path):
    file = tmp_path / "request.json"
    file.write_text(json.dumps({"input": seed_input(64, 64)}))
    env = {k: v for k, v in os.environ.items() if k != "IMG2IMG_CATALOG"}

    proc = subprocess.run([str(IMG2IMG), "run", str(file), "-o", str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=120, env=env)

    assert proc.returncode == 2
    assert "--catalog" in proc.stderr and "IMG2IMG_CATALOG" in proc.stderr


def test_the_txt2img_example_runs_with_its_hires_fix_controlnet_and_refiner(tmp_path, tiny_catalog_path):
    request = json.loads((REPO / "examples" / "txt2img-request.json").read_text())
    request["input"]["payload"].update(width=64, height=96, steps=4, hr_second_pass_steps=3, seed=8)
    file = tmp_path / "request.json"
    file.write_text(json.dumps(request))
    out = tmp_path / "out"

    proc = img2img_run(file, out, "--catalog", str(tiny_catalog_path))

    assert proc.returncode == 0, proc.stderr[-3000:]
    output = json.loads(proc.stdout)["output"]
    images = [Image.open(p) for p in output["images"]]
    # the picture at 1.5x, then the unit's detect maps: the second pass's, the first's
    assert [im.size for im in images] == [(96, 144), (96, 144), (64, 96)]
    info = json.loads(output["info"])
    assert info["seed"] == 8 and (info["width"], info["height"]) == (64, 96)
    text = info["infotexts"][0]
    assert images[0].text["parameters"] == text
    for key in ("Size: 64x96", "Denoising strength: 0.5", "Hires upscale: 1.5", "Hires steps: 3",
                "Hires upscaler: Latent (bicubic antialiased)", "Refiner: sd_xl_refiner_1.0", "ControlNet 0: "):
        assert key in text, (key, text)
    assert "init_images" not in output["parameters"] and output["parameters"]["enable_hr"] is True
