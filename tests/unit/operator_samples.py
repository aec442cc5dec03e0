"""Builders for the operator's unit tests: a configuration, jobs and runner pods as the API server returns them."""

from __future__ import annotations

import copy
import json
from typing import Any

from api_samples import seed_request
from img2img.api.times import format_time_ms, parse_time_ms
from img2img_operator.config import OperatorConfig, parse_config
from img2img_operator.controls import check_spec
from img2img_operator.lifecycle import QUEUED_MESSAGE
from img2img_operator.status import conditions
from img2img_operator.pods import runner_pod_name
from img2img_operator.views import JobView, PodView

T0 = parse_time_ms("2026-01-01T00:00:00Z")  # the job's creationTimestamp
SEC = 1000
UID = "0b5f3c1e-1111-4222-8333-444455556666"
NS = "team-a"
NAME = "seed"

BASE_CONFIG: dict[str, Any] = {
    "s3": {"bucket": "img2img", "prefix": "jobs", "endpoint": "http://minio:9000", "region": "us-east-1",
           "credentialsSecret": "img2img-s3"},
    "gpuClasses": {"l4": {"resources": {"nvidia.com/gpu": 1, "memory": "24Gi"}, "maxConcurrent": 2},
                   "a100": {"resources": {"nvidia.com/gpu": 1}}},
    "defaultGpuClass": "l4",
    "defaults": {"priority": 0, "timeoutSeconds": 600, "retries": 2},
    "retryBackoff": {"initialSeconds": 10, "maxSeconds": 300},
    "timing": {"imagePullGraceSeconds": 120, "containerConfigGraceSeconds": 60, "nodeLostGraceSeconds": 300,
               "deadlineGraceSeconds": 30},
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
    return check_spec(j.spec, cfg)


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


def admitted_status(attempt: int = 1, **extra: Any) -> dict[str, Any]:
    pod_name = runner_pod_name(NAME, attempt)
    status = _drop_none({"id": UID, "status": "IN_QUEUE", "submittedAt": format_time_ms(T0), "attempts": attempt,
                         "runnerPod": pod_name, **extra})
    return _with_conditions(status, "Starting", f"starting attempt {attempt} in pod {pod_name}")


def running_status(attempt: int = 1, **extra: Any) -> dict[str, Any]:
    pod_name = runner_pod_name(NAME, attempt)
    status = _drop_none({"id": UID, "status": "IN_PROGRESS", "submittedAt": format_time_ms(T0), "attempts": attempt,
                         "runnerPod": pod_name, "startedAt": format_time_ms(T0 + 5 * SEC), **extra})
    return _with_conditions(status, "Running", f"attempt {attempt} running in pod {pod_name}")


# ---- pods ---------------------------------------------------------------------------------------------------------
def _ts(ms: int | None) -> str | None:
    return None if ms is None else format_time_ms(ms - ms % 1000).replace(".000Z", "Z")


def pod_body(attempt: int = 1, phase: str = "Pending", *, job_name: str = NAME, job_uid: str = UID,
             created: int = T0 + 1 * SEC, started: int | None = T0 + 2 * SEC, reason: str | None = None,
             message: str | None = None, container: dict | None = None, conditions: list | None = None,
             deleted: int | None = None, rv: str = "200", uid: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": runner_pod_name(job_name, attempt), "namespace": NS, "uid": uid or f"pod-uid-{attempt}",
        "resourceVersion": rv, "creationTimestamp": _ts(created),
        "labels": {"app.kubernetes.io/managed-by": "img2img-operator", "img2img.dev/job": job_name,
                   "img2img.dev/job-uid": job_uid, "img2img.dev/attempt": str(attempt)},
        "ownerReferences": [{"apiVersion": "img2img.dev/v1alpha1", "kind": "Img2ImgJob", "name": job_name,
                             "uid": job_uid, "controller": True, "blockOwnerDeletion": True}],
    }
    if deleted is not None:
        meta["deletionTimestamp"] = _ts(deleted)
    status: dict[str, Any] = {"phase": phase}
    if started is not None:
        status["startTime"] = _ts(started)
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    if conditions:
        status["conditions"] = conditions
    if container is not None:
        status["containerStatuses"] = [{"name": "runner", **container}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"nodeName": "gpu-0"}, "status": status}


def waiting(reason: str, message: str = "") -> dict:
    return {"state": {"waiting": {"reason": reason, "message": message}}}


def running_container(since: int = T0 + 3 * SEC) -> dict:
    return {"state": {"running": {"startedAt": _ts(since)}}}


def terminated(exit_code: int, message: str | dict | None = None, reason: str | None = None,
               started: int = T0 + 3 * SEC, finished: int = T0 + 9 * SEC) -> dict:
    state: dict[str, Any] = {"exitCode": exit_code, "startedAt": _ts(started), "finishedAt": _ts(finished)}
    if message is not None:
        state["message"] = message if isinstance(message, str) else json.dumps(message)
    state["reason"] = reason or ("Completed" if exit_code == 0 else "Error")
    return {"state": {"terminated": state}}


def report(**changes: Any) -> dict[str, Any]:
    """The runner's termination message for a success."""
    base = {"result": f"s3://img2img/jobs/{NS}/{NAME}/{UID}/result.json", "startedAt": T0 + 3_250,
            "modelsLoadedAt": T0 + 4_500, "finishedAt": T0 + 8_750, "modelLoadTime": 1_250, "inferenceTime": 3_750,
            "uploadTime": 500, "error": None}
    base.update(changes)
    return base


def pod(attempt: int = 1, phase: str = "Pending", gone_ms: int | None = None, **kw: Any) -> PodView:
    return PodView.from_body(pod_body(attempt, phase, **kw), gone_ms=gone_ms)


def disruption(reason: str, at: int = T0 + 6 * SEC) -> dict:
    return {"type": "DisruptionTarget", "status": "True", "reason": reason, "message": f"{reason} happened",
            "lastTransitionTime": _ts(at)}
