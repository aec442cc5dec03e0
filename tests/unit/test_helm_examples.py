"""The shipped examples: job manifests that validate, and catalogs (chart default, example values) that can run them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from helm_support import EXAMPLES, FULLNAME, render
from img2img.api.job import load_job

JOBS = sorted(EXAMPLES.glob("job*.yaml"))


def resolve(catalog_data: dict, job_path: Path):
    from img2img_runner.catalog import Catalog

    catalog = Catalog.from_dict(catalog_data, cache_dir="/tmp/unused")
    payload = yaml.safe_load(job_path.read_text())["spec"]["input"]["payload"]
    overrides = payload.get("override_settings") or {}
    units = ((payload.get("alwayson_scripts") or {}).get("controlnet") or {}).get("args") or []
    return catalog.resolve(
        checkpoint=overrides.get("sd_model_checkpoint"),
        vae=overrides.get("sd_vae"),
        refiner=payload.get("refiner_checkpoint"),
        controlnets=[u.get("model") for u in units if u.get("enabled", True)],
    )


def rendered_catalog(values: list[Path] = ()) -> dict:
    """The catalog.yaml the chart renders (the same in every job namespace)."""
    copies = {m["data"]["catalog.yaml"] for m in render(values)
              if m["kind"] == "ConfigMap" and m["metadata"]["name"] == f"{FULLNAME}-catalog"}
    (text,) = copies
    return yaml.safe_load(text)


def test_the_examples_are_there():
    assert {p.name for p in JOBS} >= {"job.yaml", "job-s3-init-image.yaml", "job-sd15.yaml"}


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_each_example_job_is_a_valid_img2imgjob(path):
    loaded = load_job(path.read_text(), path.name)
    assert not loaded.from_runpod_request
    assert loaded.job.metadata.name


def test_the_example_job_is_the_seed_request_verbatim():
    manifest = yaml.safe_load((EXAMPLES / "job.yaml").read_text())
    seed = json.loads((EXAMPLES / "seed-request.json").read_text())
    assert manifest["spec"]["input"] == seed["input"]
    assert set(manifest["spec"]) == {"input"}  # every control from the operator's defaults


def test_the_s3_example_reads_its_init_image_from_the_namespaces_upload_area():
    payload = yaml.safe_load((EXAMPLES / "job-s3-init-image.yaml").read_text())["spec"]["input"]["payload"]
    assert payload["init_images"] == ["s3://img2img/uploads/default/astronaut.png"]


def test_the_default_catalog_runs_the_seed_request_with_the_sdxl_canny_substitute():
    resolved = resolve(rendered_catalog(), EXAMPLES / "job.yaml")
    assert resolved.architecture == "sdxl"
    (controlnet,) = resolved.controlnets
    assert controlnet.substituted


@pytest.mark.parametrize("job", ["job.yaml", "job-s3-init-image.yaml", "job-sd15.yaml"])
def test_the_gpu_cluster_catalog_runs_every_example(job):
    resolved = resolve(rendered_catalog([EXAMPLES / "values-gpu-cluster.yaml"]), EXAMPLES / job)
    assert resolved.architecture == ("sd15" if job == "job-sd15.yaml" else "sdxl")
