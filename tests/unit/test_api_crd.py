"""The committed CRDs are the ones the models generate, and schemas the API server can enforce cheaply."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from img2img.api.crd import JOB, POOL, RESOURCES, crd, render
from img2img.api.errors import problems
from img2img.api.job import Img2ImgJobSpec
from img2img.api.pool import RunnerPoolSpec

REPO = Path(__file__).resolve().parents[2]
BY_NAME = pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.kind)


@BY_NAME
def test_committed_crd_equals_the_generated_one(resource):
    committed = (REPO / "crds" / resource.file_name).read_text()
    assert committed == render(resource), f"crds/{resource.file_name} is stale: run `make crd`"


def test_make_crd_writes_every_crd_into_each_folder(tmp_path):
    from img2img.api.crd import main

    assert main([str(tmp_path / "crds"), str(tmp_path / "chart" / "crds")]) == 0
    for folder in (tmp_path / "crds", tmp_path / "chart" / "crds"):
        assert sorted(p.name for p in folder.iterdir()) == [
            "img2img.dev_img2imgjobs.yaml", "img2img.dev_runnerpools.yaml"]
        assert (folder / "img2img.dev_runnerpools.yaml").read_text() == render(POOL)


def nodes(schema: dict, path: str = ""):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


def version(resource=JOB) -> dict:
    return crd(resource)["spec"]["versions"][0]


def schema(resource=JOB) -> dict:
    return version(resource)["schema"]["openAPIV3Schema"]


@BY_NAME
def test_schema_is_structural_and_bounded(resource):
    untyped, unbounded_strings, unbounded_lists = [], [], []
    for path, node in nodes(schema(resource)):
        if not (node.get("type") or node.get("x-kubernetes-int-or-string")
                or node.get("x-kubernetes-preserve-unknown-fields")):
            untyped.append(path)
        if (node.get("type") == "string" or node.get("x-kubernetes-int-or-string")) and "maxLength" not in node:
            unbounded_strings.append(path)
        if node.get("type") == "array" and "maxItems" not in node:
            unbounded_lists.append(path)
        assert "default" not in node and "nullable" not in node and "anyOf" not in node, path
    assert (untyped, unbounded_strings, unbounded_lists) == ([], [], [])


def test_spec_keeps_unknown_fields_only_where_a1111_allows_any_key():
    open_paths = [p for p, n in nodes(schema()) if n.get("x-kubernetes-preserve-unknown-fields")]
    assert open_paths == [
        ".spec.input.payload.override_settings",
        ".spec.input.payload.comments",
        ".spec.input.payload.script_args[]",
        ".status.output.parameters",
    ]


def test_ranges_and_enums_reach_the_schema():
    payload = schema()["properties"]["spec"]["properties"]["input"]["properties"]["payload"]["properties"]
    assert (payload["steps"]["minimum"], payload["steps"]["maximum"]) == (1, 150)
    assert payload["init_images"]["minItems"] == 1
    assert payload["init_images"]["items"]["maxLength"] == 1_450_000
    unit = payload["alwayson_scripts"]["properties"]["controlnet"]["properties"]["args"]["items"]
    assert unit["properties"]["weight"]["maximum"] == 2
    status = schema()["properties"]["status"]["properties"]
    assert status["status"]["enum"] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]
    assert status["conditions"]["x-kubernetes-list-type"] == "map"
    assert status["submittedAt"]["format"] == "date-time"
    controls = schema()["properties"]["spec"]["properties"]
    assert (controls["priority"]["minimum"], controls["priority"]["maximum"]) == (-1000, 1000)
    assert controls["gpuClass"]["pattern"].startswith("^[a-z0-9]")


def test_spec_is_immutable_except_cancel_and_cancel_is_one_way():
    rules = schema()["properties"]["spec"]["x-kubernetes-validations"]
    guarded = {r["fieldPath"] for r in rules if "immutable" in r["message"]}
    assert guarded == {f".{name}" for name in Img2ImgJobSpec.model_fields if name != "cancel"}
    assert any(r["fieldPath"] == ".cancel" and "oldSelf.cancel" in r["rule"] for r in rules)
    unit = schema()["properties"]["spec"]["properties"]["input"]["properties"]["payload"]["properties"][
        "alwayson_scripts"]["properties"]["controlnet"]["properties"]["args"]["items"]
    assert {r["fieldPath"] for r in unit["x-kubernetes-validations"]} == {
        ".input_image", ".guidance", ".lowvram", ".guidance_start"}


def test_names_columns_and_status_subresource():
    spec = crd(JOB)["spec"]
    assert spec["group"] == "img2img.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["i2i"]
    assert spec["names"]["categories"] == ["img2img", "gpujobs"]
    assert version()["name"] == "v1alpha1" and version()["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version()["additionalPrinterColumns"]}
    assert columns["Status"]["jsonPath"] == ".status.status"
    assert columns["Delay"]["jsonPath"] == ".status.delayTime"
    assert columns["Execution"]["jsonPath"] == ".status.executionTime"
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    assert columns["Error"]["jsonPath"] == ".status.error" and columns["Error"]["priority"] == 1
    assert list(columns)[:4] == ["Status", "Delay", "Execution", "Age"]


@BY_NAME
def test_committed_crd_parses_as_one_document(resource):
    docs = list(yaml.safe_load_all((REPO / "crds" / resource.file_name).read_text()))
    assert len(docs) == 1 and docs[0]["kind"] == "CustomResourceDefinition"
    assert docs[0]["metadata"]["name"] == f"{resource.plural}.img2img.dev"


# ---- RunnerPool -------------------------------------------------------------------------------------------------
def test_pool_names_columns_and_status_subresource():
    spec = crd(POOL)["spec"]
    assert spec["scope"] == "Namespaced" and spec["names"]["kind"] == "RunnerPool"
    assert spec["names"]["shortNames"] == ["rp"] and spec["names"]["categories"] == ["img2img"]
    assert version(POOL)["subresources"] == {"status": {}}
    columns = [(c["name"], c["jsonPath"]) for c in version(POOL)["additionalPrinterColumns"]]
    assert columns == [
        ("GPU Class", ".spec.gpuClass"), ("Min", ".spec.minReady"), ("Max", ".spec.maxRunners"),
        ("Ready", ".status.readyRunners"), ("Busy", ".status.busyRunners"), ("Starting", ".status.startingRunners"),
        ("Queued", ".status.queuedJobs"), ("Age", ".metadata.creationTimestamp")]


def test_pool_schema_bounds_and_the_floor_under_the_ceiling():
    spec = schema(POOL)["properties"]["spec"]
    assert spec["required"] == ["gpuClass"]
    assert spec["properties"]["gpuClass"]["pattern"].startswith("^[a-z0-9]")
    assert spec["properties"]["models"]["items"] == {"minLength": 1, "maxLength": 256, "type": "string"}
    assert (spec["properties"]["maxRunners"]["minimum"], spec["properties"]["maxRunners"]["maximum"]) == (1, 1000)
    (rule,) = spec["x-kubernetes-validations"]
    assert rule["fieldPath"] == ".minReady" and rule["message"] == "must not be above maxRunners"
    assert "has(self.maxRunners)" in rule["rule"]  # no ceiling set: the GPU class's applies at run time
    assert schema(POOL)["properties"]["status"]["properties"]["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_pool_floor_above_ceiling_is_refused_in_python_too_naming_min_ready():
    with pytest.raises(ValidationError) as err:
        RunnerPoolSpec.model_validate({"gpuClass": "l4", "minReady": 5, "maxRunners": 2})
    assert [str(p) for p in problems(err.value, "spec")] == ["spec.minReady: must not be above maxRunners (5 > 2)"]
    assert RunnerPoolSpec.model_validate({"gpuClass": "l4", "minReady": 5}).maxRunners is None
