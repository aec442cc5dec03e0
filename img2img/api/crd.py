"""The CustomResourceDefinitions (Img2ImgJob, RunnerPool), derived from the pydantic models (the one source of truth).

``python -m img2img.api.crd crds helm/img2img-operator/crds`` (``make crd``) writes every CRD into each folder;
tests/unit/test_api_crd.py fails when a committed file differs from what this module generates.

How a pydantic JSON schema becomes a structural OpenAPI v3 schema:

- ``$ref`` is inlined; ``X | None`` becomes X: the API server prunes nulls of non-nullable fields, and our models read
  null as absent (see base.py), so both sides agree;
- ``int | str`` becomes ``x-kubernetes-int-or-string``; ``Any`` and open objects (``override_settings``'s unknown
  keys, ``output.parameters``) become ``x-kubernetes-preserve-unknown-fields``;
- a union of models (``payload``: img2img's or txt2img's, by endpoint) becomes one object with the fields of both;
  a field both define must have one schema, a field is required only where both require it, and their rules are
  kept (the pydantic model of the endpoint checks the rest);
- defaults are left out: the stored spec is what the user sent, defaults apply when it is read (A1111's defaults in
  the payload, the operator configuration's for the controls);
- titles are dropped, descriptions kept (``kubectl explain``).

CEL rules are kept cheap, since the API server refuses a CRD whose rules' estimated cost is too high: immutability is
checked per top-level field of the spec with presence tests, and no rule walks the payload's big strings.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from img2img import API_GROUP, API_VERSION, KIND, PLURAL
from img2img.api.job import Img2ImgJob, Img2ImgJobSpec
from img2img.api.pool import POOL_KIND, POOL_PLURAL, POOL_SHORT_NAMES, RunnerPool

JOB_PRINTER_COLUMNS = [
    {"name": "Status", "type": "string", "jsonPath": ".status.status"},
    {"name": "Delay", "type": "integer", "jsonPath": ".status.delayTime", "description": "ms from submission to "
     "the runner starting the work"},
    {"name": "Execution", "type": "integer", "jsonPath": ".status.executionTime", "description": "ms of work"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Attempts", "type": "integer", "jsonPath": ".status.attempts", "priority": 1},
    {"name": "Error", "type": "string", "jsonPath": ".status.error", "priority": 1},
]

POOL_PRINTER_COLUMNS = [
    {"name": "GPU Class", "type": "string", "jsonPath": ".spec.gpuClass"},
    {"name": "Min", "type": "integer", "jsonPath": ".spec.minReady", "description": "runners kept warm"},
    {"name": "Max", "type": "integer", "jsonPath": ".spec.maxRunners", "description": "at most this many runners"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyRunners", "description": "runners with their "
     "models loaded (idle or busy)"},
    {"name": "Busy", "type": "integer", "jsonPath": ".status.busyRunners"},
    {"name": "Starting", "type": "integer", "jsonPath": ".status.startingRunners"},
    {"name": "Queued", "type": "integer", "jsonPath": ".status.queuedJobs", "description": "jobs waiting for a "
     "runner of this pool"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

# JSON schema keys that carry over unchanged into OpenAPI v3 (value validations and formats)
_KEEP = {"type", "description", "format", "enum", "pattern", "minimum", "maximum", "minLength", "maxLength",
         "minItems", "maxItems", "minProperties", "maxProperties", "required",
         "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys"}


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One pydantic JSON-schema node -> a structural OpenAPI v3 schema node."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        outer = {k: v for k, v in node.items() if k != "$ref"}
        return structural({**target, **outer}, defs)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        outer = {k: v for k, v in node.items() if k != "anyOf"}
        types = sorted(b.get("type", "") for b in branches)
        if types == ["integer", "string"]:
            out = {"x-kubernetes-int-or-string": True}
            out.update(_kept(outer))
            return out
        if len(branches) > 1 and all("$ref" in b for b in branches):
            return {**merged([structural(b, defs) for b in branches]), **_kept(outer)}
        if len(branches) != 1:
            raise ValueError(f"no structural form for anyOf {node['anyOf']}")
        # the branch's own description (a type's) yields to the field's
        return structural({**branches[0], **outer}, defs)
    if "const" in node:
        node = {**{k: v for k, v in node.items() if k != "const"}, "enum": [node["const"]]}

    out = _kept(node)
    kind = node.get("type")
    if kind == "string" and "enum" in node and "maxLength" not in out:
        out["maxLength"] = max(len(v) for v in node["enum"])  # CEL cost estimates need a bound on every string
    if kind is None and not {"enum"} & node.keys():
        # Any: a value of any JSON type, kept as sent
        out["x-kubernetes-preserve-unknown-fields"] = True
        return out
    if kind == "object":
        props = node.get("properties") or {}
        if props:
            out["properties"] = {name: structural(sub, defs) for name, sub in props.items()}
        extra = node.get("additionalProperties")
        if extra is True or (extra is None and not props):
            out["x-kubernetes-preserve-unknown-fields"] = True
        elif isinstance(extra, dict):
            if props:
                raise ValueError("an object with both properties and typed additionalProperties is not structural")
            out["additionalProperties"] = structural(extra, defs)
    elif kind == "array":
        out["items"] = structural(node.get("items") or {}, defs)
    return out


def merged(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """Structural object schemas -> one object accepting each: every property of any, required where all require
    it, every rule of each; a property two of them define differently is an error."""
    properties: dict[str, Any] = {}
    for obj in objects:
        if obj.get("type") != "object":
            raise ValueError(f"no structural form for a union with {obj.get('type')}")
        for name, schema in (obj.get("properties") or {}).items():
            if properties.setdefault(name, schema) != schema:
                raise ValueError(f"union members define {name!r} differently")
    out: dict[str, Any] = {"type": "object", "properties": properties}
    required = set.intersection(*(set(obj.get("required") or ()) for obj in objects))
    if required:
        out["required"] = sorted(required)
    rules = [rule for obj in objects for rule in obj.get("x-kubernetes-validations") or ()]
    if rules:
        out["x-kubernetes-validations"] = rules
    return out


def _kept(node: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in node.items() if k in _KEEP}
    if "description" in out:
        out["description"] = _one_paragraph(out["description"])
    return out


def _one_paragraph(text: str) -> str:
    return " ".join(text.split("\n\n", 1)[0].replace("``", "").split())


def job_spec_rules() -> list[dict[str, str]]:
    """Immutability of the spec, except ``cancel``; a cancel cannot be undone.

    One cheap rule per top-level field (presence, then equality) rather than ``self == oldSelf`` on the whole spec:
    the message names the field, and no single rule's cost covers everything at once.
    """
    rules = []
    for name in Img2ImgJobSpec.model_fields:
        if name == "cancel":
            continue
        rules.append({
            "rule": f"has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) || self.{name} == oldSelf.{name})",
            "message": "is immutable: only spec.cancel may change after creation",
            "fieldPath": f".{name}",
            "reason": "FieldValueForbidden",
        })
    rules.append({
        "rule": "!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)",
        "message": "a cancel cannot be undone",
        "fieldPath": ".cancel",
        "reason": "FieldValueForbidden",
    })
    return rules


def pool_spec_rules() -> list[dict[str, str]]:
    """The floor under the ceiling, when a ceiling is set (else the GPU class's maxConcurrent is, at run time)."""
    return [{
        "rule": "!has(self.maxRunners) || !has(self.minReady) || self.minReady <= self.maxRunners",
        "message": "must not be above maxRunners",
        "fieldPath": ".minReady",
        "reason": "FieldValueInvalid",
    }]


@dataclass(frozen=True)
class Resource:
    """One custom resource: its model (apiVersion, kind, metadata, spec, status) and how kubectl shows it."""

    model: type[BaseModel]
    kind: str
    plural: str
    short_names: list[str]
    categories: list[str]
    description: str
    printer_columns: list[dict[str, Any]]
    spec_rules: Callable[[], list[dict[str, str]]]

    @property
    def file_name(self) -> str:
        return f"{API_GROUP}_{self.plural}.yaml"


JOB = Resource(Img2ImgJob, KIND, PLURAL, ["i2i"], ["img2img", "gpujobs"],
               "An A1111 img2img job (RunPod request shape) run on a GPU runner pod.", JOB_PRINTER_COLUMNS,
               job_spec_rules)
POOL = Resource(RunnerPool, POOL_KIND, POOL_PLURAL, POOL_SHORT_NAMES, ["img2img"],
                "Warm runners of one GPU class: long-lived pods that load their models once and serve jobs one at "
                "a time.", POOL_PRINTER_COLUMNS, pool_spec_rules)
RESOURCES = (JOB, POOL)


def openapi_schema(resource: Resource) -> dict[str, Any]:
    schema = resource.model.model_json_schema(mode="validation")
    defs = schema.get("$defs", {})
    props = schema["properties"]
    spec = structural(props["spec"], defs)
    spec["x-kubernetes-validations"] = resource.spec_rules()
    return {
        "type": "object",
        "description": resource.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "maxLength": 64},
            "kind": {"type": "string", "maxLength": 64},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": structural(props["status"], defs),
        },
    }


def crd(resource: Resource) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {"kind": resource.kind, "listKind": f"{resource.kind}List", "plural": resource.plural,
                      "singular": resource.kind.lower(), "shortNames": resource.short_names,
                      "categories": resource.categories},
            "versions": [{
                "name": API_VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": resource.printer_columns,
                "schema": {"openAPIV3Schema": openapi_schema(resource)},
            }],
        },
    }


def render(resource: Resource) -> str:
    header = "# Generated by `python -m img2img.api.crd` from img2img/api/*.py: do not edit by hand.\n"
    return header + yaml.safe_dump(crd(resource), sort_keys=False, width=120, allow_unicode=True)


def main(folders: list[str]) -> int:
    if not folders:
        print("usage: python -m img2img.api.crd FOLDER [FOLDER...]  (writes every CRD into each folder)",
              file=sys.stderr)
        return 2
    for folder in folders:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for resource in RESOURCES:
            (Path(folder) / resource.file_name).write_text(render(resource))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
