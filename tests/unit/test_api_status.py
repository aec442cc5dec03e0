"""Img2ImgJob.status: RunPod-shaped, with Kubernetes conventions."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from img2img.api.status import TERMINAL, JobState, JobStatus


def test_status_serializes_with_runpod_and_kubernetes_names():
    status = JobStatus.model_validate({
        "id": "4b1c", "status": "COMPLETED", "delayTime": 133343, "executionTime": 17088,
        "output": {"images": ["s3://img2img/ns/job/uid/images/0.png"], "info": "{}",
                   "parameters": {"steps": 30, "init_images": None}},
        "attempts": 1, "runnerPod": "job-1", "submittedAt": "2024-11-24T17:00:00.000Z",
        "startedAt": "2024-11-24T17:00:01.250Z", "completedAt": "2024-11-24T17:00:20+00:00",
        "modelLoadTime": 1000, "result": "s3://img2img/ns/job/uid/result.json",
        "lastFailure": {"reason": "Evicted", "exitCode": 137, "message": "node drained"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Completed", "message": "",
                        "lastTransitionTime": "2024-11-24T17:00:20.000Z", "observedGeneration": 1}],
        "observedGeneration": 1,
    })
    stored = status.as_dict()
    assert stored["status"] == "COMPLETED" and stored["delayTime"] == 133343
    assert stored["output"]["parameters"] == {"steps": 30, "init_images": None}  # parameters kept as written
    assert stored["submittedAt"] == "2024-11-24T17:00:00.000Z"
    assert "error" not in stored and "queuePosition" not in stored  # unset fields left out
    assert status.terminal


def test_terminal_states_are_runpods():
    assert TERMINAL == {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT}
    assert not JobState.IN_QUEUE.terminal and not JobState.IN_PROGRESS.terminal
    assert not JobStatus().terminal


@pytest.mark.parametrize("bad", [
    {"status": "RUNNING"},
    {"delayTime": -1},
    {"submittedAt": "yesterday"},
    {"completedAt": ""},
    {"conditions": [{"type": "Ready", "status": "Yes", "reason": "Done", "lastTransitionTime": "2024-11-24T17:00:00Z"}]},
    {"conditions": [{"type": "Ready", "status": "True", "reason": "not a reason!",
                     "lastTransitionTime": "2024-11-24T17:00:00Z"}]},
])
def test_invalid_status_is_refused(bad):
    with pytest.raises(ValidationError):
        JobStatus.model_validate(bad)
