"""status, RunPod timings, result.json: the pieces the lifecycle's status writes are made of."""

from __future__ import annotations

import json

import pytest
from img2img.api.termination import TerminationMessage
from img2img_operator.report import check_result
from img2img_operator.runpod_timings import submitted_at_ms, timings
from img2img_operator.status import applied, changes, conditions, desired

from operator_samples import ASSIGNED, SEC, T0, job, outcome


# ---- submittedAt --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("annotation,first_seen,stored,expected", [
    (None, None, None, T0),  # creationTimestamp
    ("2026-01-01T00:00:00.734Z", None, None, T0 + 734),  # the CLI's annotation, consistent
    (str(T0 + 734), None, None, T0 + 734),  # ms epoch form
    ("2025-12-31T23:59:55.000Z", None, None, T0 - 5_000),  # a client clock a little behind
    ("2025-12-31T23:00:00.000Z", None, None, T0),  # an hour before its creation: not believed
    ("2026-01-01T00:00:01.500Z", None, None, T0),  # after its creation: not believed
    ("garbage", T0 + 420, None, T0 + 420),  # the operator saw it arrive
    (None, T0 + 420, None, T0 + 420),
    (None, T0 - 300, None, T0),  # operator clock behind the API server's
    (None, T0 + 60_000, None, T0),  # seen long after (operator was down): creationTimestamp
    ("2026-01-01T00:00:00.734Z", T0 + 420, "2026-01-01T00:00:00.111Z", T0 + 111),  # stored wins
])
def test_submitted_at(annotation, first_seen, stored, expected):
    j = job({"submittedAt": stored} if stored else None,
            annotations={"img2img.dev/submitted-at": annotation} if annotation else None, first_seen_ms=first_seen)
    assert submitted_at_ms(j) == expected


# ---- timings ------------------------------------------------------------------------------------------------------
def test_timings_follow_the_architecture_definitions():
    r = TerminationMessage.parse(json.dumps(outcome()))
    t = timings(T0, r, ASSIGNED, T0 + 99 * SEC)
    assert t.delay_time == 5_250  # the runner's startedAt − submittedAt: waiting for a runner
    assert t.execution_time == 4_500  # finishedAt − startedAt: the runner's work, loading included
    assert t.model_load_time == 1_250
    assert t.as_status() == {"delayTime": 5_250, "executionTime": 4_500, "modelLoadTime": 1_250}


def test_timings_never_negative_with_skewed_clocks():
    r = TerminationMessage.parse(json.dumps(outcome(startedAt=T0 - 500, finishedAt=T0 - 900)))
    t = timings(T0, r, ASSIGNED, T0)
    assert t.delay_time == 0 and t.execution_time == 0


def test_timings_fall_back_on_the_assignment_and_now_when_the_runner_left_them_out():
    t = timings(T0, TerminationMessage(), ASSIGNED, ASSIGNED + 7 * SEC)
    assert (t.delay_time, t.execution_time, t.model_load_time) == (5_000, 7_000, None)


# ---- result.json --------------------------------------------------------------------------------------------------
def test_result_json_checks():
    uri = "s3://b/jobs/team-a/j/u/attempt-1/result.json"
    assert check_result(uri, None).problem == f"{uri} does not exist"
    assert "not valid JSON" in check_result(uri, b"{").problem
    assert "no list of images" in check_result(uri, b'{"images": "x"}').problem
    image = "s3://b/jobs/team-a/j/u/attempt-1/images/0.png"
    ok = check_result(uri, json.dumps({"images": [image], "info": "{}", "parameters": {"a": 1}}).encode())
    assert ok.problem is None and ok.output == {"images": [image], "info": "{}", "parameters": {"a": 1}}
    as_object = check_result(uri, b'{"images": [], "info": {"seed": 1}}')
    assert as_object.output["info"] == '{"seed": 1}'


@pytest.mark.parametrize("image", [
    "s3://b/jobs/team-b/k/v/attempt-1/images/0.png",  # another namespace's result
    "s3://b/jobs/team-a/j/u/attempt-2/images/0.png",  # another attempt's
    "s3://b/jobs/team-a/j/u/attempt-1/images/../../../../team-b/k/v/attempt-1/images/0.png",
    "s3://b/jobs/team-a/j/u/attempt-1/input.json",
])
def test_a_result_naming_an_image_outside_its_attempt_is_not_used(image):
    """The operator copies the images into the tenant's status, and the gateway reads them for the tenant with its own
    credentials: a runner (or a job that took one over) cannot make them read anything but the attempt's uploads."""
    uri = "s3://b/jobs/team-a/j/u/attempt-1/result.json"
    result = check_result(uri, json.dumps({"images": [image]}).encode())
    assert result.problem == f"{uri} names images outside s3://b/jobs/team-a/j/u/attempt-1/images/: {image}"


# ---- patches ------------------------------------------------------------------------------------------------------
def test_changes_keep_only_what_differs_and_remove_with_null():
    current = {"status": "IN_QUEUE", "queuePosition": 2, "runnerPod": "x-1",
               "lastFailure": {"reason": "Evicted", "message": ""}}
    wanted = {"status": "IN_QUEUE", "queuePosition": 1, "runnerPod": None, "error": None,
              "lastFailure": {"reason": "Evicted", "exitCode": None, "message": ""}}
    assert changes(current, wanted) == {"queuePosition": 1, "runnerPod": None}
    assert applied(current, {"queuePosition": 1, "runnerPod": None}) == {
        "status": "IN_QUEUE", "queuePosition": 1, "lastFailure": {"reason": "Evicted", "message": ""}}


def test_conditions_are_kstatus_shaped():
    conds = conditions("FAILED", "BadInput", "m" * 5000, 3, T0 + 1_500)
    assert [c["type"] for c in conds] == ["Ready", "Reconciling", "Stalled"]
    assert all(c["observedGeneration"] == 3 and len(c["message"]) == 1024 for c in conds)
    assert conds[0]["lastTransitionTime"] == "2026-01-01T00:00:01Z"


def test_desired_always_names_the_job_and_generation():
    j = job(None, generation=4)
    d = desired(j, T0, "IN_QUEUE", "Queued", "", queuePosition=None)
    assert d["id"] == j.uid and d["observedGeneration"] == 4 and d["queuePosition"] is None
