"""Builders for the operator's unit tests: a configuration, jobs and runner pods as the API server returns them, and
runners' outcomes."""

from __future__ import annotations

import copy
from typing import Any

from api_samples import seed_request
from img2img.api.protocol import ENV_RUNNER_TOKEN, runner_token
from img2img.api.times import format_time_ms, parse_time_ms
from img2img_operator.config import OperatorConfig, parse_config
from img2img_operator.controls import check_spec
from img2img_operator.lifecycle import QUEUED_MESSAGE
from img2img_operator.status import conditions
from img2img_operator.views import JobView, PodView

T0 = parse_time_ms("2026-01-01T00:00:00Z")  # the job's creationTimestamp
SEC = 1000
UID = "0b5f3c1e-1111-4222-8333-444455556666"
NS = "team-a"
NAME = "seed"
RUNNER_NS = "img2img-system"
POOL = "l4"  # the implicit pool of the default GPU class
RUNNER = "l4-ab12c"
ASSIGNED = T0 + 5 * SEC  # when the runner took the job (status.startedAt)
RUNNER_KEY = b"k" * 32  # the operator's runner-token key

BASE_CONFIG: dict[str, Any] = {
    "s3": {"bucket": "img2img", "prefix": "jobs", "endpoint": "http://minio:9000", "region": "us-east-1",
           "credentialsSecret": "img2img-s3"},
    "gpuClasses": {"l4": {"resources": {"nvidia.com/gpu": 1, "memory": "24Gi"}, "maxConcurrent": 2},
                   "a100": {"resources": {"nvidia.com/gpu": 1}}},
    "defaultGpuClass": "l4",
    "defaults": {"priority": 0, "timeoutSeconds": 600, "retries": 2},
    "retryBackoff": {"initialSeconds": 10, "maxSeconds": 300},
    "runners": {"namespace": RUNNER_NS, "leaseSeconds": 15, "heartbeatSeconds": 3},
}


def config(**changes: Any) -> OperatorConfig:
    data = copy.deepcopy(BASE_CONFIG)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_config(data)


CONFIG = config()


def spec(**controls: Any) -> dict[str, Any]:
    return {"input": seed_request()["input"], **controls}


def job_body(status: dict | None = None, *, name: str = NAME, namespace: str = NS, uid: str = UID,
             generation: int = 1, annotations: dict | None = None, rv: str = "100", deleting: bool = False,
             **controls: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid, "generation": generation,
                            "resourceVersion": rv, "creationTimestamp": "2026-01-01T00:00:00Z"}
    if annotations:
        meta["annotations"] = annotations
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    body = {"apiVersion": "img2img.dev/v1alpha1", "kind": "Img2ImgJob", "metadata": meta, "spec": spec(**controls)}
    if status is not None:
        body["status"] = status
    return body


def job(status: dict | None = None, *, first_seen_ms: int | None = None, **kw: Any) -> JobView:
    return JobView.from_body(job_body(status, **kw), first_seen_ms)


def checked(j: JobView, cfg: OperatorConfig = CONFIG):
    return check_spec(j.spec, j.namespace, cfg)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _with_conditions(status: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    """A status as the operator writes it: with its conditions and observedGeneration."""
    status.setdefault("conditions", conditions(status["status"], reason, message, 1, T0 + 1 * SEC))
    status.setdefault("observedGeneration", 1)
    return status


def queued_status(**extra: Any) -> dict[str, Any]:
    status = _drop_none({"id": UID, "status": "IN_QUEUE", "submittedAt": format_time_ms(T0), "attempts": 0, **extra})
    return _with_conditions(status, "Queued", QUEUED_MESSAGE)


def running_status(attempt: int = 1, runner: str = RUNNER, **extra: Any) -> dict[str, Any]:
    status = _drop_none({"id": UID, "status": "IN_PROGRESS", "submittedAt": format_time_ms(T0), "attempts": attempt,
                         "runnerPod": runner, "startedAt": format_time_ms(ASSIGNED), **extra})
    return _with_conditions(status, "Running", f"attempt {attempt} running on runner {runner}")


def retrying_status(attempt: int = 1, reason: str = "RunnerLost", message: str = "gone") -> dict[str, Any]:
    """Queued again after attempt ``attempt`` failed."""
    status = _drop_none({"id": UID, "status": "IN_QUEUE", "submittedAt": format_time_ms(T0), "attempts": attempt,
                         "lastFailure": {"reason": reason, "exitCode": None, "message": message}})
    return _with_conditions(status, "Retrying", "")


# ---- runner pods (the runner namespace) -----------------------------------------------------------------------------
def _ts(ms: int | None) -> str | None:
    return None if ms is None else format_time_ms(ms - ms % 1000).replace(".000Z", "Z")


def runner_pod_body(name: str = RUNNER, phase: str = "Running", *, pool: str = POOL, created: int = T0,
                    container: dict | None = None, conditions: list | None = None, deleted: int | None = None,
                    reason: str | None = None, message: str | None = None, rv: str = "200") -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name, "namespace": RUNNER_NS, "uid": f"pod-uid-{name}", "resourceVersion": rv,
        "creationTimestamp": _ts(created),
        "labels": {"app.kubernetes.io/managed-by": "img2img-operator", "app.kubernetes.io/component": "runner",
                   "img2img.dev/pool": pool},
    }
    if deleted is not None:
        meta["deletionTimestamp"] = _ts(deleted)
    status: dict[str, Any] = {"phase": phase}
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    if conditions:
        status["conditions"] = conditions
    if container is not None:
        status["containerStatuses"] = [{"name": "runner", **container}]
    env = [{"name": ENV_RUNNER_TOKEN, "value": runner_token(RUNNER_KEY, name)}]  # as the operator makes it
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": "gpu-0", "containers": [{"name": "runner", "env": env}]}, "status": status}


def runner_pod(name: str = RUNNER, phase: str = "Running", **kw: Any) -> PodView:
    return PodView.from_body(runner_pod_body(name, phase, **kw))


def waiting(reason: str, message: str = "") -> dict:
    return {"state": {"waiting": {"reason": reason, "message": message}}}


def terminated(exit_code: int, message: str | None = None, reason: str | None = None) -> dict:
    state: dict[str, Any] = {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error")}
    if message is not None:
        state["message"] = message
    return {"state": {"terminated": state}}


# ---- outcomes -----------------------------------------------------------------------------------------------------
RESULT_URI = f"s3://img2img/jobs/{NS}/{NAME}/{UID}/attempt-1/result.json"


def outcome(**changes: Any) -> dict[str, Any]:
    """A runner's done for a success: 250 ms after the assignment it starts, loads models 1.25 s, uploads at 9.75 s."""
    base = {"result": RESULT_URI, "startedAt": ASSIGNED + 250, "modelsLoadedAt": ASSIGNED + 1_500,
            "finishedAt": ASSIGNED + 4_750, "modelLoadTime": 1_250, "inferenceTime": 3_000, "uploadTime": 250,
            "error": None}
    base.update(changes)
    return base


def failed_outcome(code: str, message: str = "", field: str | None = None) -> dict[str, Any]:
    return outcome(result=None, error={"code": code, "field": field, "message": message})
