"""Reading jobs as users hand them over: RunPod requests and Img2ImgJob manifests, JSON or YAML; `validate`;
the RunPod request -> manifest conversion used by `submit`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from api_samples import PNG, manifest, seed_request
from img2img.api.convert import to_manifest
from img2img.api.images import decode_inline
from img2img.api.job import JobProblems, load_job
from img2img.api.validate import validate_command

REPO = Path(__file__).resolve().parents[2]


def run_validate(tmp_path: Path, text: str) -> tuple[int, str, str]:
    path = tmp_path / "job.json"
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    code = validate_command(str(path), out, err)
    return code, out.getvalue(), err.getvalue()


def test_runpod_request_becomes_a_manifest_with_generate_name():
    loaded = load_job(json.dumps(seed_request()))
    assert loaded.from_runpod_request
    made = loaded.job.manifest()
    assert made["apiVersion"] == "img2img.dev/v1alpha1" and made["kind"] == "Img2ImgJob"
    assert made["metadata"] == {"generateName": "img2img-"}
    assert made["spec"]["input"]["payload"]["init_images"] == [PNG]
    assert made["spec"]["input"]["api"] == {"method": "POST", "endpoint": "/sdapi/v1/img2img"}


def test_runpod_webhook_and_policy_become_the_jobs_controls_in_its_units():
    request = {**seed_request(), "webhook": "https://hooks.example.com/done",
               "policy": {"executionTimeout": 90_500, "ttl": 600_000, "lowPriority": True}}
    for made in (load_job(json.dumps(request)).job.manifest(), to_manifest(request)):
        controls = {k: v for k, v in made["spec"].items() if k != "input"}
        # ms rounded up to whole seconds; low priority is the lowest priority a job can have
        assert controls == {"webhook": "https://hooks.example.com/done", "timeoutSeconds": 91,
                            "ttlSecondsAfterFinished": 600, "priority": -1000}


def test_a_runpod_policy_without_low_priority_leaves_the_priority_to_the_configuration():
    made = to_manifest({**seed_request(), "policy": {"lowPriority": False}})
    assert set(made["spec"]) == {"input"}


def test_yaml_manifest_with_controls():
    text = yaml.safe_dump(manifest({"priority": 10, "gpuClass": "a100-80gb", "timeoutSeconds": 600, "retries": 2,
                                    "output": {"bucket": "results", "prefix": "team-a/jobs"},
                                    "ttlSecondsAfterFinished": 3600, "cancel": False}))
    job = load_job(text).job
    assert (job.spec.priority, job.spec.gpuClass, job.spec.timeoutSeconds, job.spec.retries) == \
        (10, "a100-80gb", 600, 2)
    assert (job.spec.output.bucket, job.spec.output.prefix) == ("results", "team-a/jobs")
    assert job.metadata.name == "seed"


def test_controls_default_to_none_so_the_operator_config_decides():
    spec = load_job(json.dumps(manifest())).job.spec
    assert [spec.priority, spec.gpuClass, spec.timeoutSeconds, spec.retries, spec.output,
            spec.ttlSecondsAfterFinished, spec.cancel] == [None] * 7


def test_manifest_read_back_from_the_cluster_loads():
    data = manifest()
    data["metadata"].update(uid="0b7c", resourceVersion="12", generation=1, managedFields=[{"manager": "kubectl"}],
                            creationTimestamp="2026-01-01T00:00:00Z")
    data["status"] = {"id": "0b7c", "status": "IN_QUEUE", "queuePosition": 0, "someFutureField": 1}
    job = load_job(json.dumps(data)).job
    assert job.status.status.value == "IN_QUEUE"
    assert "status" not in job.manifest() and "someFutureField" not in job.status.as_dict()


def test_endpoint_without_leading_slash_is_accepted():
    request = seed_request()
    request["input"]["api"]["endpoint"] = "sdapi/v1/img2img"
    assert load_job(json.dumps(request)).job.spec.input.api.endpoint == "sdapi/v1/img2img"


@pytest.mark.parametrize("text, expected", [
    ('{\n  "input": {\n    "api": {,\n', "not valid JSON: Expecting property name enclosed in double quotes "
                                          "(line 3, column 13)"),
    ("apiVersion: img2img.dev/v1alpha1\nkind: [Img2ImgJob\nspec: {}\n", "not valid YAML"),
    ("---\na: 1\n---\nb: 2\n", "expected one document, found 2"),
    ("[1, 2]", "expected an object"),
    ("just a string", "expected an object"),
    ('{"prompt": "a cat"}', "neither a RunPod request"),
])
def test_malformed_documents_are_refused_with_a_clear_message(text, expected):
    with pytest.raises(JobProblems) as info:
        load_job(text, "job.json")
    assert expected in str(info.value)


def test_yaml_error_names_the_line():
    with pytest.raises(JobProblems) as info:
        load_job("apiVersion: img2img.dev/v1alpha1\nkind: [Img2ImgJob\nspec: {}\n", "job.yaml")
    assert "(line 3," in str(info.value)


def test_validate_prints_the_normalized_job_and_exits_0(tmp_path):
    code, out, err = run_validate(tmp_path, json.dumps(seed_request()))
    assert (code, err) == (0, "")
    printed = json.loads(out)
    assert printed["kind"] == "Img2ImgJob"
    assert printed["spec"]["input"]["payload"]["sampler_name"] == "DPM++ SDE"


def test_validate_lists_every_problem_one_per_line_and_exits_1(tmp_path):
    request = seed_request()
    request["input"]["payload"].update(steps=0, sampler_name="Eulr", width=8)
    code, out, err = run_validate(tmp_path, json.dumps(request))
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert "input.payload.steps: must be at least 1" in lines
    assert any(line.startswith("input.payload.sampler_name: unknown sampler 'Eulr'") for line in lines)
    assert "input.payload.width: must be at least 64" in lines
    assert len(lines) == 3


def test_an_unsupported_endpoint_is_refused_naming_the_supported_ones(tmp_path):
    request = seed_request()
    request["input"]["api"]["endpoint"] = "/sdapi/v1/extra-single-image"
    code, out, err = run_validate(tmp_path, json.dumps(request))
    assert code == 1 and out == ""
    assert err.splitlines() == ["input.api.endpoint: /sdapi/v1/extra-single-image is not supported; supported: "
                                "POST /sdapi/v1/img2img, POST /sdapi/v1/txt2img"]


def test_validate_malformed_json_gives_the_line_not_a_traceback(tmp_path):
    code, out, err = run_validate(tmp_path, '{"input": {"api": {"method": "POST",}}}')
    assert code == 1
    assert "not valid JSON" in err and "line 1" in err and "Traceback" not in err


def test_validate_missing_file(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert validate_command(str(tmp_path / "nope.json"), out, err) == 1
    assert "nope.json: cannot read" in err.getvalue()


def test_validate_the_committed_examples():
    for example in ("examples/seed-request.json", "examples/txt2img-request.json"):
        out, err = io.StringIO(), io.StringIO()
        assert validate_command(str(REPO / example), out, err) == 0, err.getvalue()


def test_example_seed_image_is_small_and_has_edges_for_canny():
    request = json.loads((REPO / "examples/seed-request.json").read_text())
    image = decode_inline(request["input"]["payload"]["init_images"][0])
    assert image.size == (96, 128)  # the seed's 480x640 aspect
    assert len(set(image.convert("L").getdata())) > 2  # shapes, not a flat colour
    # the example is the seed request verbatim, apart from the image
    seed = json.loads((REPO / "tests/data/seed_request.json").read_text())
    request["input"]["payload"]["init_images"] = seed["input"]["payload"]["init_images"]
    assert request == seed


def test_convert_keeps_the_input_verbatim_and_names_the_job():
    request = seed_request()
    made = to_manifest(request, name="astronaut", namespace="team-a",
                       annotations={"img2img.dev/submitted-at": "1732467600000"})
    assert made["metadata"] == {"name": "astronaut", "namespace": "team-a",
                                "annotations": {"img2img.dev/submitted-at": "1732467600000"}}
    assert made["spec"] == {"input": request["input"]}
    assert isinstance(made["spec"]["input"]["payload"]["cfg_scale"], int)  # 7 stays 7, as sent
    assert made["spec"]["input"] is not request["input"]


def test_convert_without_name_uses_generate_name_and_passes_manifests_through():
    assert to_manifest(seed_request())["metadata"] == {"generateName": "img2img-"}
    data = manifest({"priority": 3})
    data["status"] = {"status": "COMPLETED"}
    made = to_manifest(data)
    assert "status" not in made and made["spec"]["priority"] == 3 and made["metadata"]["name"] == "seed"


def test_convert_refuses_an_invalid_request():
    request = seed_request()
    request["input"]["payload"]["steps"] = 0
    with pytest.raises(JobProblems) as info:
        to_manifest(request)
    assert [p.path for p in info.value.problems] == ["input.payload.steps"]
