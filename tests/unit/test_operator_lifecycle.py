"""lifecycle.next_step: job + its attempt's lease + clock → the next status and actions. Every case of the failure
model as runners from pools meet it."""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from img2img.api.status import JobStatus
from img2img.api.times import format_time_ms
from img2img_operator.leases import Lease, LeaseState, lease_state
from img2img_operator.lifecycle import (
    Decision,
    DeleteJob,
    EndLease,
    Emit,
    Offer,
    RetireRunner,
    Slot,
    WriteStatus,
    assignment_status,
    next_step,
    queue_entry,
    stop_reason,
)
from img2img_operator.report import RunnerResult
from img2img_operator.status import applied

from api_samples import seed_request
from operator_samples import (
    ASSIGNED,
    CONFIG,
    RESULT_URI,
    RUNNER,
    SEC,
    T0,
    UID,
    checked,
    config,
    failed_outcome,
    job,
    outcome,
    queued_status,
    retrying_status,
    running_status,
)

LEASE_ID = f"{UID}.1.0badc0de"
LEASE_MS = 15_000
RESULT = RunnerResult(RESULT_URI, data={"images": ["s3://img2img/jobs/team-a/seed/x/attempt-1/images/0.png"],
                                        "info": '{"seed": 1}', "parameters": {"steps": 30}})
T = T0 + 10 * SEC


def lease(attempt: int = 1, renewed: int = T - 2 * SEC, **kw: Any) -> Lease:
    return Lease(f"{UID}.{attempt}.0badc0de", UID, attempt, RUNNER, renewed_ms=renewed, pool="l4", **kw)


def running(now: int = T, **kw: Any) -> LeaseState:
    return lease_state(lease(**kw), now, LEASE_MS, runner_gone=False, adopt_until=T0)


def done(result: dict | None = None, attempt: int = 1) -> LeaseState:
    return lease_state(lease(attempt, outcome=result or outcome()), T, LEASE_MS, runner_gone=False, adopt_until=T0)


def lapsed(reason: str = "gone", attempt: int = 1) -> LeaseState:
    return lease_state(lease(attempt), T, LEASE_MS, runner_gone=True, adopt_until=T0)


def kinds(decision: Decision) -> list[str]:
    return [type(a).__name__ for a in decision.actions]


def status_after(j, decision: Decision) -> dict[str, Any]:
    """The stored status once the decision's write is applied; it must be a valid JobStatus."""
    after = applied(j.status, decision.status_patch or {})
    JobStatus.model_validate(after)
    return after


def cond(status: dict, kind: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == kind)


# ---- a table: (name, status, attempt, now, slot, expected action kinds, expected status fields) -------------------
@dataclass
class Case:
    name: str
    status: dict | None
    attempt: LeaseState | None = None
    now: int = T
    slot: Slot = Slot()
    actions: list[str] = field(default_factory=list)
    state: str | None = None  # expected status.status after the write (None: no status write expected)
    controls: dict = field(default_factory=dict)
    result: RunnerResult | None = None
    extra: dict = field(default_factory=dict)  # expected status fields (None = absent)
    failure: str | None = None  # expected status.lastFailure.reason (None: no failure recorded)


CASES = [
    # --- new jobs
    Case("new job waits in the queue", None, slot=Slot(position=3), actions=["WriteStatus"], state="IN_QUEUE",
         extra={"queuePosition": 3, "attempts": 0, "id": UID, "runnerPod": None}),
    Case("new job admitted at once: offered to runners with no status written", None, slot=Slot(admit=True),
         now=T0 + SEC, actions=["Offer"]),
    Case("new job admitted but still untaken 10 s after its submission: written IN_QUEUE", None,
         slot=Slot(admit=True), now=T0 + 10 * SEC, actions=["WriteStatus", "Offer"], state="IN_QUEUE",
         extra={"attempts": 0, "runnerPod": None, "queuePosition": None}),
    Case("new job held back by admission: IN_QUEUE with its position at once", None, slot=Slot(position=1),
         now=T0 + SEC, actions=["WriteStatus"], state="IN_QUEUE", extra={"queuePosition": 1}),
    Case("refused spec fails at once", None, slot=Slot(admit=True), actions=["WriteStatus", "Emit"],
         state="FAILED", controls={"retries": 99, "priority": "high"}, extra={"attempts": 0, "runnerPod": None}, failure="InvalidSpec"),
    Case("unknown GPU class fails at once", None, slot=Slot(admit=True), actions=["WriteStatus", "Emit"],
         state="FAILED", controls={"gpuClass": "h200"}, failure="InvalidSpec"),
    Case("cancelled before it started", None, slot=Slot(admit=True), actions=["WriteStatus", "Emit"],
         state="CANCELLED", controls={"cancel": True}),
    # --- queued
    Case("queued, nothing changed: nothing to write", queued_status(queuePosition=2), slot=Slot(position=2)),
    Case("queued, moved up", queued_status(queuePosition=2), slot=Slot(position=1), actions=["WriteStatus"],
         state="IN_QUEUE", extra={"queuePosition": 1}),
    Case("queued, admitted: offered", queued_status(queuePosition=1), slot=Slot(admit=True),
         actions=["WriteStatus", "Offer"], state="IN_QUEUE", extra={"attempts": 0, "queuePosition": None}),
    Case("admitted and still untaken: offered again, nothing written", queued_status(), slot=Slot(admit=True),
         actions=["Offer"]),
    # --- running
    Case("running, nothing changed: nothing", running_status(), running()),
    Case("running with progress: written", running_status(), running(step=3, steps=20), actions=["WriteStatus"],
         state="IN_PROGRESS", extra={"progress": {"step": 3, "steps": 20}}),
    Case("progress within a second of the last write: not yet", running_status(),
         running(step=3, steps=20, written_ms=T - 500)),
    Case("progress unchanged: nothing", running_status(progress={"step": 3, "steps": 20}),
         running(step=3, steps=20)),
    Case("just after an operator restart, no heartbeat yet: wait",
         running_status(), lease_state(None, T, LEASE_MS, runner_gone=False, adopt_until=T + 5 * SEC)),
    # --- success
    Case("done, result not read yet: read it", running_status(), done()),
    Case("done with its result: COMPLETED", running_status(progress={"step": 20, "steps": 20}), done(),
         result=RESULT, actions=["WriteStatus", "EndLease", "Emit"], state="COMPLETED",
         extra={"delayTime": 5_250, "executionTime": 4_500, "modelLoadTime": 1_250, "result": RESULT_URI,
                "error": None, "progress": None, "startedAt": format_time_ms(ASSIGNED),
                "completedAt": format_time_ms(ASSIGNED + 4_750)}),
    Case("done, result.json missing: retried", running_status(), done(),
         result=RunnerResult(RESULT_URI, problem="does not exist"), actions=["WriteStatus", "EndLease", "Emit"],
         state="IN_QUEUE", extra={"runnerPod": None, "attempts": 1}, failure="ResultUnreadable"),
    Case("done, result.json over the size the operator reads: FAILED, never retried", running_status(), done(),
         result=RunnerResult(RESULT_URI, problem="is 100,000,000 bytes", too_large=True), controls={"retries": 5},
         actions=["WriteStatus", "EndLease", "Emit"], state="FAILED", failure="ResultTooLarge"),
    # --- permanent failures: FAILED at once, whatever the retries
    Case("bad input: FAILED, no retry", running_status(),
         done(failed_outcome("BAD_INPUT", "must be at least 1", "input.payload.steps")),
         actions=["WriteStatus", "EndLease", "Emit"], state="FAILED", controls={"retries": 5},
         extra={"lastFailure": {"reason": "BadInput", "exitCode": 2,
                                "message": "input.payload.steps: must be at least 1"}}, failure="BadInput"),
    Case("unknown model: FAILED, no retry", running_status(), done(failed_outcome("MODEL", "unknown model 'x'")),
         actions=["WriteStatus", "EndLease", "Emit"], state="FAILED", failure="ModelError"),
    Case("CUDA out of memory: FAILED", running_status(), done(failed_outcome("CUDA_OOM")),
         actions=["WriteStatus", "EndLease", "Emit"], state="FAILED",
         extra={"lastFailure": {"reason": "CudaOutOfMemory", "exitCode": 4, "message": "CUDA_OOM"}}, failure="CudaOutOfMemory"),
    # --- transient failures: retried with back-off while retries last
    Case("storage error: retried", running_status(), done(failed_outcome("STORAGE", "S3 is down")),
         actions=["WriteStatus", "EndLease", "Emit"], state="IN_QUEUE",
         extra={"runnerPod": None, "attempts": 1, "queuePosition": None,
                "lastFailure": {"reason": "StorageError", "exitCode": 5, "message": "S3 is down"}}, failure="StorageError"),
    Case("crash: retried", running_status(), done(failed_outcome("CRASH", "boom")),
         actions=["WriteStatus", "EndLease", "Emit"], state="IN_QUEUE", failure="RunnerCrashed"),
    Case("a code this operator does not know: a crash, retried", running_status(),
         done(failed_outcome("SOMETHING_NEW")), actions=["WriteStatus", "EndLease", "Emit"], state="IN_QUEUE",
         extra={"lastFailure": {"reason": "RunnerCrashed", "exitCode": None,
                                "message": "the runner failed (SOMETHING_NEW)"}}, failure="RunnerCrashed"),
    Case("runner pod gone mid-job: RunnerLost, retried", running_status(progress={"step": 2, "steps": 4}),
         lapsed(), actions=["WriteStatus", "EndLease", "Emit", "RetireRunner"], state="IN_QUEUE",
         extra={"runnerPod": None, "progress": None,
                "lastFailure": {"reason": "RunnerLost", "exitCode": None,
                                "message": f"the runner pod {RUNNER} is gone"}}, failure="RunnerLost"),
    Case("no heartbeat for leaseSeconds: RunnerLost, retried, the silent runner removed", running_status(),
         running(renewed=T - 16 * SEC), actions=["WriteStatus", "EndLease", "Emit", "RetireRunner"],
         state="IN_QUEUE", failure="RunnerLost"),
    Case("IN_PROGRESS and its runner silent since the operator started: RunnerLost, retried", running_status(),
         lease_state(None, T, LEASE_MS, runner_gone=False, adopt_until=T - 1),
         actions=["WriteStatus", "Emit", "RetireRunner"], state="IN_QUEUE", failure="RunnerLost"),
    Case("last retry lost: FAILED", running_status(3), lapsed(attempt=3),
         actions=["WriteStatus", "EndLease", "Emit", "RetireRunner"], state="FAILED", extra={"attempts": 3}, failure="RunnerLost"),
    Case("retries: 0 means one attempt", running_status(), done(failed_outcome("STORAGE")),
         actions=["WriteStatus", "EndLease", "Emit"], state="FAILED", controls={"retries": 0}, failure="StorageError"),
    # --- deadline (from the assignment)
    Case("past the deadline: TIMED_OUT at once, the runner told to stop (lease kept)", running_status(),
         running(now=ASSIGNED + 600 * SEC, renewed=ASSIGNED + 599 * SEC), now=ASSIGNED + 600 * SEC,
         actions=["WriteStatus", "Emit"], state="TIMED_OUT",
         extra={"lastFailure": {"reason": "DeadlineExceeded", "exitCode": None,
                                "message": "the job did not finish within timeoutSeconds (600 s) of reaching its "
                                           "runner"}}, failure="DeadlineExceeded"),
    Case("per-job timeout applies", running_status(), running(now=ASSIGNED + 60 * SEC, renewed=ASSIGNED + 59 * SEC),
         now=ASSIGNED + 60 * SEC, controls={"timeoutSeconds": 60}, actions=["WriteStatus", "Emit"],
         state="TIMED_OUT", failure="DeadlineExceeded"),
    Case("the runner stopped at the deadline and says so: TIMED_OUT", running_status(),
         done(failed_outcome("TIMED_OUT", "the job was stopped (deadline) at step 3 of 20")),
         actions=["WriteStatus", "EndLease", "Emit"], state="TIMED_OUT", failure="DeadlineExceeded"),
    # --- cancel
    Case("cancel while running: CANCELLED at once, the runner told to stop (lease kept)", running_status(),
         running(), controls={"cancel": True}, actions=["WriteStatus", "Emit"], state="CANCELLED",
         extra={"progress": None}),
    Case("cancel while queued", queued_status(queuePosition=4), controls={"cancel": True},
         actions=["WriteStatus", "Emit"], state="CANCELLED", extra={"queuePosition": None}),
    Case("cancel while waiting for a retry", retrying_status(), controls={"cancel": True},
         actions=["WriteStatus", "Emit"], state="CANCELLED", failure="RunnerLost"),
    Case("the runner reports it stopped on cancel: CANCELLED", running_status(),
         done(failed_outcome("CANCELLED", "the job was stopped (cancelled) at step 2")),
         actions=["WriteStatus", "EndLease", "Emit"], state="CANCELLED", failure="Cancelled"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_next_step(case: Case):
    j = job(case.status, **case.controls)
    decision = next_step(j, case.now, CONFIG, checked=checked(j), slot=case.slot, attempt=case.attempt,
                         result=case.result)
    assert kinds(decision) == case.actions
    if case.state is None:
        assert decision.status_patch is None
        return
    after = status_after(j, decision)
    assert after["status"] == case.state
    assert after["observedGeneration"] == 1 and after["id"] == UID
    assert after["submittedAt"] == format_time_ms(T0)
    for key, value in case.extra.items():
        assert after.get(key) == value, key
    assert (after.get("lastFailure") or {}).get("reason") == case.failure
    ready, reconciling, stalled = (cond(after, k)["status"] for k in ("Ready", "Reconciling", "Stalled"))
    assert (ready, reconciling, stalled) == {
        "IN_QUEUE": ("False", "True", "False"), "IN_PROGRESS": ("False", "True", "False"),
        "COMPLETED": ("True", "False", "False"), "FAILED": ("False", "False", "True"),
        "TIMED_OUT": ("False", "False", "True"), "CANCELLED": ("False", "False", "True")}[case.state]
    if case.state in ("FAILED", "TIMED_OUT"):
        assert after["error"] and after["lastFailure"]["reason"]
        assert after["completedAt"]
    for action in decision.actions:
        if isinstance(action, EndLease):
            assert action.lease == case.attempt.lease.id
            assert decision.actions.index(action) > 0  # after the write that records the end
        if isinstance(action, RetireRunner):
            assert action.runner == RUNNER
    # a decision taken again on its own result writes nothing more
    again = next_step(job(after, **case.controls), case.now, CONFIG, slot=case.slot, attempt=case.attempt,
                      result=case.result)
    assert again.status_patch is None


def run(status, attempt=None, now=T, slot=Slot(), result=None, cfg=CONFIG, ended_ms=None, **controls):
    j = job(status, **controls)
    decision = next_step(j, now, cfg, checked=checked(j, cfg), slot=slot, attempt=attempt, ended_ms=ended_ms,
                         result=result)
    return decision, status_after(j, decision)


# ---- what the table does not say ------------------------------------------------------------------------------------
def test_refused_spec_names_every_bad_field():
    d, after = run(None, slot=Slot(admit=True), priority="high", gpuClass="h200")
    assert "spec.priority" in after["error"] and "spec.gpuClass: unknown GPU class 'h200'" in after["error"]
    assert after["lastFailure"]["reason"] == "InvalidSpec"
    assert [a for a in d.actions if isinstance(a, Emit)][0].type == "Warning"


def test_refused_payload_field_is_named_with_its_path():
    from img2img_operator.views import JobView
    from operator_samples import job_body

    body = job_body(None)
    body["spec"]["input"]["payload"]["steps"] = 0
    j = JobView.from_body(body)
    after = status_after(j, next_step(j, T, CONFIG, slot=Slot(admit=True)))
    assert after["status"] == "FAILED"
    assert "spec.input.payload.steps: must be at least 1" in after["error"]


def test_a_failed_or_timed_out_attempt_still_reports_runpods_timings():
    _, after = run(running_status(), done(failed_outcome("MODEL", "unknown model")), retries=0)
    assert after["status"] == "FAILED" and (after["delayTime"], after["executionTime"]) == (5_250, 4_500)
    _, after = run(running_status(), running(now=ASSIGNED + 61 * SEC, renewed=ASSIGNED + 60 * SEC),
                   now=ASSIGNED + 61 * SEC, timeoutSeconds=60)
    assert after["status"] == "TIMED_OUT" and (after["delayTime"], after["executionTime"]) == (5_000, 61_000)
    # refused before any runner took it: nothing ran, so no timings
    _, after = run(None, slot=Slot(admit=True), gpuClass="h200")
    assert after["status"] == "FAILED" and "delayTime" not in after


def test_completed_status_is_runpod_shaped_and_a_warm_runner_loaded_nothing():
    d, after = run(running_status(), done(outcome(modelLoadTime=0, modelsLoadedAt=ASSIGNED + 250)), result=RESULT)
    assert after["output"] == {"images": ["s3://img2img/jobs/team-a/seed/x/attempt-1/images/0.png"],
                               "info": '{"seed": 1}', "parameters": {"steps": 30}}
    assert after["modelLoadTime"] == 0 and after["delayTime"] == 5_250 and after["executionTime"] == 4_500
    assert cond(after, "Ready")["reason"] == "Completed"
    emit = [a for a in d.actions if isinstance(a, Emit)][0]
    assert (emit.type, emit.reason) == ("Normal", "Completed")


ETCD_LIMIT = 1_572_864  # etcd's default --max-request-bytes: the API server cannot store a larger object


def stored_size(j, status: dict) -> int:
    """The job as etcd would hold it (without managedFields), in bytes of JSON."""
    body = {"metadata": {"name": j.name, "namespace": j.namespace, "uid": j.uid, "annotations": dict(j.annotations)},
            "spec": j.spec, "status": status}
    return len(json.dumps(body).encode())


def test_an_answer_too_large_for_the_status_leaves_out_what_does_not_fit_and_the_job_stays_storable():
    # include_init_images with a 1 MB inline image: A1111 echoes the image in parameters (2.6 MB in the object)
    image = base64.b64encode(random.Random(1).randbytes(1_000_000)).decode()
    payload = {**seed_request()["input"]["payload"], "init_images": [image], "include_init_images": True}
    echo = {"prompt": "an astronaut", "steps": 30, "seed": 7, "init_images": [image]}
    images = [f"{RESULT_URI.removesuffix('result.json')}images/0.png"]
    answer = RunnerResult(RESULT_URI, data={"images": images, "info": '{"seed": 7}', "parameters": echo})
    j = job(running_status(), input={"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"}, "payload": payload})
    assert stored_size(j, {**j.status, "output": answer.output}) > ETCD_LIMIT  # what used to be written, forever
    _, after = run(running_status(), done(), result=answer, input=j.spec["input"])
    assert after["status"] == "COMPLETED"
    assert after["output"] == {"images": images, "info": '{"seed": 7}', "parameters": {**echo, "init_images": None},
                               "omitted": ["parameters.init_images"]}
    assert stored_size(j, after) < ETCD_LIMIT
    assert RESULT_URI in cond(after, "Ready")["message"] and "parameters.init_images" in cond(after, "Ready")["message"]

    # batch_size 8 x n_iter 100 with long prompts: a 2.8 MB info; the parameters still fit
    info = json.dumps({"infotexts": ["a very long prompt, " * 175] * 800, "all_seeds": list(range(800))})
    assert len(info) > 2_800_000
    answer = RunnerResult(RESULT_URI, data={"images": images, "info": info, "parameters": {"steps": 30}})
    _, after = run(running_status(), done(), result=answer)
    assert after["output"] == {"images": images, "parameters": {"steps": 30}, "omitted": ["info"]}


def test_presigned_urls_that_do_not_fit_are_left_to_the_reader():
    from img2img_operator.report import bounded_output

    output = {"images": ["s3://b/0.png"], "info": "{}", "parameters": {}, "presigned": ["https://s3/x" * 40] * 800,
              "presignedExpiresAt": "2026-01-01T01:00:00.000Z"}
    assert bounded_output(output, 64 * 1024) == {"images": ["s3://b/0.png"], "info": "{}", "parameters": {},
                                                 "omitted": ["presigned"]}
    assert bounded_output(output, 1 << 20) == output  # all of it, when it fits


def test_the_operators_presigned_urls_reach_the_status():
    urls = ["https://s3.example.com/img2img/jobs/team-a/seed/x/attempt-1/images/0.png?X-Amz-Signature=ab"]
    _, after = run(running_status(), done(), result=RESULT.signed(urls, "2026-01-01T01:00:00.000Z"))
    assert after["output"]["presigned"] == urls and after["output"]["presignedExpiresAt"] == "2026-01-01T01:00:00.000Z"


def test_the_result_is_read_from_the_attempts_own_uri_whatever_the_runner_reports():
    """The operator reads result.json with its own credentials: a runner naming another object (another namespace's
    result, say) does not make it read that."""
    other = "s3://img2img/jobs/team-b/theirs/u/attempt-1/result.json"
    d, _ = run(running_status(), done(outcome(result=other)))
    assert d.fetch_result == RESULT_URI and not d.actions
    d, after = run(running_status(), done(outcome(result=other)), result=RESULT)
    assert d.fetch_result is None and after["status"] == "COMPLETED" and after["result"] == RESULT_URI


def test_submitted_at_comes_from_a_consistent_annotation_with_milliseconds():
    d, after = run(None, slot=Slot(position=1))
    assert after["submittedAt"] == format_time_ms(T0)
    j = job(None, annotations={"img2img.dev/submitted-at": "2026-01-01T00:00:00.734Z"})
    after = status_after(j, next_step(j, T, CONFIG))
    assert after["submittedAt"] == "2026-01-01T00:00:00.734Z"


def test_the_take_records_the_assignment_before_the_runner_hears_of_it():
    j = job(queued_status())
    after = applied(j.status, assignment_status(j, T, RUNNER, 1))
    JobStatus.model_validate(after)
    assert (after["status"], after["attempts"], after["runnerPod"]) == ("IN_PROGRESS", 1, RUNNER)
    assert after["startedAt"] == format_time_ms(T) and "queuePosition" not in after
    # the running job's next pass writes nothing: the take wrote what the lifecycle wants
    d = next_step(job(after), T + SEC, CONFIG, attempt=running(now=T + SEC, renewed=T))
    assert d.status_patch is None


def test_retry_waits_for_its_back_off_then_is_offered_again():
    d, after = run(running_status(), done(failed_outcome("STORAGE")))
    assert d.wake_at == T + 10 * SEC  # initialSeconds after the attempt ended (now)
    assert cond(after, "Reconciling")["reason"] == "Retrying"
    j = job(after)
    # during the back-off: queued, not startable even if admission offers a slot
    entry = queue_entry(j, T + 5 * SEC, CONFIG, checked(j), holds=False, ended_ms=T)
    assert entry is not None and not entry.eligible and not entry.running
    d2 = next_step(j, T + 5 * SEC, CONFIG, slot=Slot(admit=True, position=1), ended_ms=T)
    assert not any(isinstance(a, Offer) for a in d2.actions) and d2.wake_at == T + 10 * SEC
    # after it: offered; the next take writes attempt 2
    assert queue_entry(j, T + 10 * SEC, CONFIG, checked(j), holds=False, ended_ms=T).eligible
    d3 = next_step(j, T + 10 * SEC, CONFIG, slot=Slot(admit=True), ended_ms=T)
    assert Offer() in d3.actions
    assert applied(j.status, assignment_status(j, T + 11 * SEC, "l4-zzzzz", 2))["attempts"] == 2
    # after an operator restart the end is unknown: offered at once
    assert Offer() in next_step(j, T + 5 * SEC, CONFIG, slot=Slot(admit=True)).actions


def test_back_off_doubles_up_to_its_maximum():
    cfg = config(retryBackoff={"initialSeconds": 10, "maxSeconds": 25}, defaults={"retries": 5},
                 policy={"default": {"maxRetries": 5}})
    for attempt, delay in ((1, 10), (2, 20), (3, 25), (4, 25)):
        d, _ = run(running_status(attempt), lapsed(attempt=attempt), cfg=cfg)
        assert d.wake_at == T + delay * SEC


def test_a_job_held_by_a_runner_holds_its_slot():
    j = job(running_status())
    assert queue_entry(j, T, CONFIG, checked(j), holds=True, ended_ms=None).running
    # cancelled, its runner still stopping: the GPU is not free yet
    cancelled = job({**running_status(), "status": "CANCELLED"}, cancel=True)
    assert queue_entry(cancelled, T, CONFIG, checked(cancelled), holds=True, ended_ms=None).running
    assert queue_entry(cancelled, T, CONFIG, checked(cancelled), holds=False, ended_ms=None) is None
    # being taken right now
    queued = job(queued_status())
    assert queue_entry(queued, T, CONFIG, checked(queued), holds=True, ended_ms=None).running


# ---- heartbeats: stop or go on ------------------------------------------------------------------------------------
def test_a_heartbeat_is_told_to_stop_on_cancel_deletion_deadline_or_a_lease_not_current():
    current = lease()
    assert stop_reason(job(running_status()), current, T, CONFIG) is None
    assert stop_reason(job(running_status(), cancel=True), current, T, CONFIG) == "cancelled"
    assert stop_reason(job({**running_status(), "status": "CANCELLED"}), current, T, CONFIG) == "cancelled"
    assert stop_reason(None, current, T, CONFIG) == "cancelled"  # deleted
    assert stop_reason(job(running_status(), deleting=True), current, T, CONFIG) == "cancelled"
    assert stop_reason(job({**running_status(), "status": "TIMED_OUT"}), current, T, CONFIG) == "deadline"
    assert stop_reason(job(running_status(), timeoutSeconds=5), current, ASSIGNED + 5 * SEC, CONFIG) == "deadline"
    assert stop_reason(job(running_status(2)), current, T, CONFIG) == "lost"  # a newer attempt
    assert stop_reason(job(running_status(runner="l4-other")), current, T, CONFIG) == "lost"
    assert stop_reason(job(retrying_status()), current, T, CONFIG) == "lost"


# ---- finished jobs ------------------------------------------------------------------------------------------------
def finished(state="COMPLETED", completed_at=T0 + 10 * SEC, **extra):
    return {**running_status(), "status": state, "completedAt": format_time_ms(completed_at), "observedGeneration": 1,
            "conditions": [], **extra}


def test_finished_job_is_left_alone():
    d, _ = run(finished(), now=T0 + 10_000 * SEC)
    assert d == Decision()


def test_a_cancelled_jobs_runner_has_its_lease_forgotten_once_it_reports():
    d, _ = run(finished("CANCELLED"), running(), cancel=True)
    assert d.actions == () and d.wake_at is not None  # still stopping: look again when the lease would lapse
    state = done(failed_outcome("CANCELLED"))
    d, _ = run(finished("CANCELLED"), state, cancel=True)
    assert d.actions == (EndLease(state.lease.id),)


def test_ttl_after_finished_deletes_the_job_then():
    d, _ = run(finished(), now=T0 + 20 * SEC, ttlSecondsAfterFinished=60)
    assert not d.actions and d.wake_at == T0 + 70 * SEC
    d, _ = run(finished(), now=T0 + 70 * SEC, ttlSecondsAfterFinished=60)
    assert d.actions == (DeleteJob(),)
    d, _ = run(finished("FAILED"), now=T0 + 100 * SEC, cfg=config(defaults={"ttlSecondsAfterFinished": 30}))
    assert d.actions == (DeleteJob(),)


def test_finished_job_edited_later_only_catches_up_observed_generation():
    j = job(finished(conditions=[{"type": "Ready", "status": "True", "reason": "Completed", "message": "",
                                  "lastTransitionTime": "2026-01-01T00:00:10Z", "observedGeneration": 1}]),
            generation=2, cancel=True)
    d = next_step(j, T, CONFIG)
    (write,) = d.actions
    assert write.patch["observedGeneration"] == 2 and write.patch["conditions"][0]["observedGeneration"] == 2
    assert "status" not in write.patch


def test_a_job_being_deleted_gets_no_writes():
    d, _ = run(running_status(), running(), deleting=True)
    assert d == Decision()


# ---- conditions ---------------------------------------------------------------------------------------------------
def test_conditions_keep_their_transition_time_while_their_status_holds():
    _, queued = run(None, slot=Slot(position=1), now=T0 + 1 * SEC)
    j = job(queued)
    taken = applied(queued, assignment_status(j, T0 + 5 * SEC, RUNNER, 1))
    assert cond(taken, "Reconciling")["lastTransitionTime"] == cond(queued, "Reconciling")["lastTransitionTime"]
    _, completed = run(taken, done(), result=RESULT, now=T0 + 11 * SEC)
    assert cond(completed, "Ready")["lastTransitionTime"] == "2026-01-01T00:00:11Z"
    assert cond(completed, "Stalled")["lastTransitionTime"] == cond(queued, "Stalled")["lastTransitionTime"]


# ---- the happy path's API writes ----------------------------------------------------------------------------------
def test_an_unwritten_offered_job_is_decided_again_when_its_in_queue_write_is_due():
    d = next_step(job(None), T0 + 2 * SEC, CONFIG, slot=Slot(admit=True))
    assert d.status_patch is None and d.wake_at == T0 + 10 * SEC


def test_happy_path_writes():
    """Admitted at once and taken: (the take) IN_PROGRESS + COMPLETED + Event = 3 writes, without progress."""
    writes = []
    j = job(None)
    d = next_step(j, T0 + SEC, CONFIG, slot=Slot(admit=True))
    writes += [type(a).__name__ for a in d.actions]
    j = job(applied(j.status, d.status_patch or {}))
    j = job(applied(j.status, assignment_status(j, ASSIGNED, RUNNER, 1)))
    writes.append("WriteStatus")  # the take's
    for attempt, result in ((running(now=ASSIGNED + SEC, renewed=ASSIGNED), None), (done(), None), (done(), RESULT),
                            (None, None)):
        d = next_step(j, T, CONFIG, attempt=attempt, result=result)
        writes += [type(a).__name__ for a in d.actions if not isinstance(a, EndLease)]
        j = job(applied(j.status, d.status_patch or {}))
    assert writes == ["Offer", "WriteStatus", "WriteStatus", "Emit"]
    assert j.status["status"] == "COMPLETED"
    assert WriteStatus not in {type(a) for a in next_step(j, T, CONFIG).actions}
