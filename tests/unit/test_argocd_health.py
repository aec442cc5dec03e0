"""The Argo CD health check (Lua) run by a real Lua interpreter against a job in every state.

Argo CD runs health checks with gopher-lua (Lua 5.1): the script is run by the Lua 5.1 and 5.4 interpreters that the
`lupa` wheel embeds (a dev dependency, so no system package is needed). The object is handed to the script as the
global ``obj``, a Lua table literal generated here from the JSON object, as Argo CD converts it.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "helm" / "img2img-operator" / "health" / "img2img.dev_Img2ImgJob.lua"
ARGOCD_CM = REPO / "docs" / "gitops" / "argocd-cm.yaml"
INTERPRETERS = ["lupa.lua51", "lupa.lua54"]


def lua_literal(value) -> str:
    """A JSON value as a Lua expression (null -> nil, arrays 1-based, as Argo CD converts objects)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        assert math.isfinite(value)
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # \" \\ \n \t: the same escapes in Lua; no \u (Lua 5.1 lacks it)
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        items = [f"[{json.dumps(k)}] = {lua_literal(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}"
    raise TypeError(type(value))


def health(obj: dict, interpreter: str) -> tuple[str, str]:
    runtime = importlib.import_module(interpreter).LuaRuntime()
    runtime.execute(f"obj = {lua_literal(obj)}")
    hs = runtime.execute(SCRIPT.read_text())  # the script's chunk returns the health table
    return str(hs["status"]), str(hs["message"])


def job(status: dict | None = None, generation: int = 1) -> dict:
    obj = {
        "apiVersion": "img2img.dev/v1alpha1",
        "kind": "Img2ImgJob",
        "metadata": {"name": "seed", "namespace": "default", "generation": generation, "uid": "u-1"},
        "spec": {"input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"}, "payload": {"prompt": "x"}}},
    }
    if status is not None:
        obj["status"] = status
    return obj


def cond(type_: str, status: str, reason: str, message: str = "") -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00.000Z", "observedGeneration": 1}


@pytest.fixture(params=INTERPRETERS)
def lua(request):
    return request.param


CASES = {
    "no status yet": (job(), "Progressing", "Waiting for the operator"),
    "empty status": (job({}), "Progressing", "Waiting for the operator"),
    "queued": (
        job({"id": "u-1", "status": "IN_QUEUE", "queuePosition": 3, "observedGeneration": 1,
             "conditions": [cond("Ready", "False", "Queued"), cond("Reconciling", "True", "Queued")]}),
        "Progressing", "In queue, position 3"),
    "running": (
        job({"id": "u-1", "status": "IN_PROGRESS", "attempts": 2, "runnerPod": "seed-2", "observedGeneration": 1,
             "conditions": [cond("Ready", "False", "Running"), cond("Reconciling", "True", "Running")]}),
        "Progressing", "Running on pod seed-2 (attempt 2)"),
    "completed": (
        job({"id": "u-1", "status": "COMPLETED", "delayTime": 5120, "executionTime": 2210, "observedGeneration": 1,
             "output": {"images": ["s3://b/jobs/default/seed/u-1/images/0.png",
                                   "s3://b/jobs/default/seed/u-1/images/1.png"], "info": "{}", "parameters": {}},
             "conditions": [cond("Ready", "True", "Completed")]}),
        "Healthy", "Completed: 2 image(s) in 2210 ms"),
    "failed": (
        job({"id": "u-1", "status": "FAILED", "observedGeneration": 1,
             "error": "input.payload.override_settings.sd_model_checkpoint: unknown model 'sd_xl_turbo'",
             "conditions": [cond("Ready", "False", "Failed", "unknown model"), cond("Stalled", "True", "Failed")]}),
        "Degraded", "input.payload.override_settings.sd_model_checkpoint: unknown model 'sd_xl_turbo'"),
    "failed, message only in Ready": (
        job({"status": "FAILED", "observedGeneration": 1,
             "conditions": [cond("Ready", "False", "RunnerCrashed", "runner exited with code 1 after 3 attempts")]}),
        "Degraded", "runner exited with code 1 after 3 attempts"),
    "timed out": (
        job({"status": "TIMED_OUT", "observedGeneration": 1, "error": "deadline of 600 s exceeded"}),
        "Degraded", "deadline of 600 s exceeded"),
    "cancelled": (
        job({"status": "CANCELLED", "observedGeneration": 2, "error": "cancelled by spec.cancel"}, generation=2),
        "Suspended", "cancelled by spec.cancel"),
    "spec changed, not yet observed": (
        job({"status": "COMPLETED", "observedGeneration": 1}, generation=2),
        "Progressing", "has not yet observed generation 2"),
    "a state this check does not know": (
        job({"status": "PAUSED", "observedGeneration": 1}), "Unknown", "Unknown job status PAUSED"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_health_of_a_job_in_every_state(case, lua):
    obj, want_status, want_message = CASES[case]
    status, message = health(obj, lua)
    assert status == want_status, (case, message)
    assert want_message in message


def test_the_argocd_cm_snippet_carries_the_same_script():
    """docs/gitops/argocd-cm.yaml is what users paste; it must be the tested script, byte for byte."""
    cm = yaml.safe_load(ARGOCD_CM.read_text())
    key = "resource.customizations.health.img2img.dev_Img2ImgJob"
    assert cm["data"][key] == SCRIPT.read_text()
