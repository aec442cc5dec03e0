"""The CRD on a real kube-apiserver: malformed jobs refused with the field named, the spec immutable but for cancel,
a 1 MB inline image stored, and `kubectl get i2i` showing the RunPod-shaped status."""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import re
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from api_samples import manifest, seed_unit  # noqa: E402

pytestmark = pytest.mark.stack


def create(stack, namespace: str, job: dict, *args: str, check: bool = False):
    return stack.kubectl("-n", namespace, "create", "-f", "-", *args, input=json.dumps(job), check=check)


def with_payload(name: str, **changes) -> dict:
    job = manifest(name=name)
    job["spec"]["input"]["payload"].update(changes)
    return job


def with_unit(name: str, **changes) -> dict:
    return with_payload(name, alwayson_scripts={"controlnet": {"args": [seed_unit(**changes)]}})


UNIT = "spec.input.payload.alwayson_scripts.controlnet.args[0]"


@pytest.mark.parametrize("job, path, message", [
    (with_payload("steps", steps=0), "spec.input.payload.steps", "greater than or equal to 1"),
    (with_payload("size", width=4096), "spec.input.payload.width", "less than or equal to 2048"),
    (with_payload("images", init_images=[]), "spec.input.payload.init_images", "at least 1 items"),
    (with_unit("guidance", guidance=0.5), f"{UNIT}.guidance", "is an alias of guidance_end"),
    (with_unit("order", guidance_start=0.9, guidance_end=0.4, guidance=0.4), f"{UNIT}.guidance_start",
     "must not be after guidance_end"),
    (with_unit("two-images", image="s3://b-1/a.png", input_image="s3://b-1/b.png"), f"{UNIT}.input_image",
     "not both"),
    (with_unit("weight", weight=3), f"{UNIT}.weight", "less than or equal to 2"),
    (manifest({"priority": 5000}, name="priority"), "spec.priority", "less than or equal to 1000"),
    (manifest({"gpuClass": "A100"}, name="gpu"), "spec.gpuClass", "should match"),
    (manifest({"retries": -1}, name="retries"), "spec.retries", "greater than or equal to 0"),
])
def test_api_server_refuses_malformed_jobs_naming_the_field(stack, namespace, job, path, message):
    proc = create(stack, namespace, job)
    assert proc.returncode != 0
    assert f"{path}:" in proc.stderr and message in proc.stderr, proc.stderr


def test_unknown_field_is_refused_by_strict_field_validation(stack, namespace):
    proc = create(stack, namespace, with_payload("typo", stpes=20))
    assert proc.returncode != 0 and 'unknown field "spec.input.payload.stpes"' in proc.stderr


def test_spec_is_immutable_except_cancel_which_is_one_way(stack, namespace):
    create(stack, namespace, manifest({"priority": 1}, name="frozen"), check=True)

    def patch(spec: dict):
        return stack.kubectl("-n", namespace, "patch", "i2i", "frozen", "--type=merge",
                             "-p", json.dumps({"spec": spec}), check=False)

    refused = patch({"priority": 2})
    assert refused.returncode != 0 and "spec.priority: Forbidden: is immutable" in refused.stderr
    refused = patch({"input": {"payload": {"steps": 10}}})
    assert refused.returncode != 0 and "spec.input: Forbidden: is immutable" in refused.stderr
    refused = patch({"gpuClass": "a100"})  # adding a control is a change too
    assert refused.returncode != 0 and "spec.gpuClass: Forbidden" in refused.stderr
    assert patch({"cancel": True}).returncode == 0
    undone = patch({"cancel": False})
    assert undone.returncode != 0 and "spec.cancel: Forbidden: a cancel cannot be undone" in undone.stderr


def test_a_1mb_inline_image_fits_with_create_and_server_side_apply(stack, namespace):
    side = 577
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    assert buf.tell() >= 1_000_000
    job = with_payload("big", init_images=[base64.b64encode(buf.getvalue()).decode()])
    create(stack, namespace, job, check=True)
    applied = copy.deepcopy(job)
    applied["metadata"]["name"] = "big-ssa"
    stack.kubectl("-n", namespace, "apply", "--server-side", "-f", "-", input=json.dumps(applied))
    stored = stack.get_json("-n", namespace, "i2i", "big")
    assert stored["spec"]["input"]["payload"]["init_images"] == job["spec"]["input"]["payload"]["init_images"]


def test_printer_columns_and_status_subresource(stack, namespace):
    create(stack, namespace, manifest(name="shown"), check=True)
    status = {"id": "u-1", "status": "FAILED", "delayTime": 1234, "executionTime": 567, "attempts": 2,
              "error": "CUDA out of memory", "submittedAt": "2026-01-01T00:00:00.000Z",
              "output": {"images": [], "info": "", "parameters": {"steps": 30, "init_images": None}}}
    # a JSON patch (or an update): a merge patch would read `init_images: null` as "delete the key" (RFC 7386)
    stack.kubectl("-n", namespace, "patch", "i2i", "shown", "--subresource=status", "--type=json",
                  "-p", json.dumps([{"op": "add", "path": "/status", "value": status}]))
    table = stack.kubectl("-n", namespace, "get", "i2i", "shown").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "DELAY", "EXECUTION", "AGE"]
    assert table[1].split()[:4] == ["shown", "FAILED", "1234", "567"]
    wide = stack.kubectl("-n", namespace, "get", "i2i", "shown", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "STATUS", "DELAY", "EXECUTION", "AGE", "ATTEMPTS", "ERROR"]
    assert re.search(r"\s2\s+CUDA out of memory$", wide[1]), wide[1]
    # the status is the RunPod-shaped answer; parameters keep their nulls (preserve-unknown-fields)
    shown = json.loads(stack.kubectl("-n", namespace, "get", "i2i", "shown", "-o", "jsonpath={.status}").stdout)
    assert shown["status"] == "FAILED" and shown["output"]["parameters"] == {"steps": 30, "init_images": None}
    # a spec edit does not touch the status; a status write does not need the spec
    assert stack.get_json("-n", namespace, "i2i", "shown")["metadata"]["generation"] == 1


def test_short_name_and_categories(stack, namespace):
    create(stack, namespace, manifest(name="listed"), check=True)
    for resource in ("i2i", "img2imgjobs", "img2img", "gpujobs"):
        names = stack.kubectl("-n", namespace, "get", resource, "-o", "name").stdout.split()
        assert "img2imgjob.img2img.dev/listed" in names, resource


def test_null_values_are_pruned_as_the_models_expect(stack, namespace):
    create(stack, namespace, with_payload("nulls", eta=None, styles=None, mask=None), check=True)
    payload = stack.get_json("-n", namespace, "i2i", "nulls")["spec"]["input"]["payload"]
    assert "eta" not in payload and "mask" not in payload and "styles" not in payload


def test_txt2img_jobs_are_stored_and_img2img_still_needs_its_init_images(stack, namespace):
    txt2img = manifest(name="txt2img")
    txt2img["spec"]["input"] = {"api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"},
                                "payload": {"prompt": "a lighthouse", "enable_hr": True, "hr_scale": 1.5,
                                            "hr_upscaler": "Latent (nearest)", "hr_second_pass_steps": 10}}
    create(stack, namespace, txt2img, check=True)
    assert stack.get_json("-n", namespace, "i2i", "txt2img")["spec"]["input"] == txt2img["spec"]["input"]
    no_images = manifest(name="no-images")
    del no_images["spec"]["input"]["payload"]["init_images"]
    proc = create(stack, namespace, no_images)
    assert proc.returncode != 0
    assert "spec.input.payload.init_images: Invalid value" in proc.stderr and "is required for /sdapi/v1/img2img" \
        in proc.stderr, proc.stderr
