"""The committed CRD is the one the models generate, and it is a schema the API server can enforce cheaply."""

from __future__ import annotations

from pathlib import Path

import yaml

from img2img.api.crd import CRD_FILE, crd, render
from img2img.api.job import Img2ImgJobSpec

REPO = Path(__file__).resolve().parents[2]


def test_committed_crd_equals_the_generated_one():
    committed = (REPO / "crds" / CRD_FILE).read_text()
    assert committed == render(), "crds/ is stale: run `python -m img2img.api.crd > crds/" + CRD_FILE + "`"


def nodes(schema: dict, path: str = ""):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


def version() -> dict:
    return crd()["spec"]["versions"][0]


def schema() -> dict:
    return version()["schema"]["openAPIV3Schema"]


def test_schema_is_structural_and_bounded():
    untyped, unbounded_strings, unbounded_lists = [], [], []
    for path, node in nodes(schema()):
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
    spec = crd()["spec"]
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


def test_committed_crd_parses_as_one_document():
    docs = list(yaml.safe_load_all((REPO / "crds" / CRD_FILE).read_text()))
    assert len(docs) == 1 and docs[0]["kind"] == "CustomResourceDefinition"
