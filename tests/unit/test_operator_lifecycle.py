"""lifecycle.next_step: job + pods + clock → the next status and actions. Every case of the failure model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from img2img.api.status import JobStatus
from img2img_operator.lifecycle import (
    Decision,
    DeleteJob,
    Emit,
    Slot,
    StartRunner,
    StopRunner,
    WriteStatus,
    next_step,
    progress,
    queue_entry,
)
from img2img_operator.report import RunnerResult
from img2img_operator.status import applied
from img2img.api.times import format_time_ms

from operator_samples import (
    CONFIG,
    NAME,
    SEC,
    T0,
    UID,
    admitted_status,
    checked,
    config,
    disruption,
    job,
    pod,
    queued_status,
    report,
    running_container,
    running_status,
    terminated,
    waiting,
)

RESULT_URI = f"s3://img2img/jobs/team-a/{NAME}/{UID}/result.json"
RESULT = RunnerResult(RESULT_URI, data={"images": ["s3://img2img/jobs/team-a/seed/x/images/0.png"],
                                        "info": '{"seed": 1}', "parameters": {"steps": 30}})


def kinds(decision: Decision) -> list[str]:
    return [type(a).__name__ for a in decision.actions]


def status_after(j, decision: Decision) -> dict[str, Any]:
    """The stored status once the decision's write is applied; it must be a valid JobStatus."""
    patch = decision.status_patch or {}
    after = applied(j.status, patch)
    JobStatus.model_validate(after)
    return after


def cond(status: dict, kind: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == kind)


# ---- a table: (name, status, pods, now, slot, expected action kinds, expected status fields) ------------------------
@dataclass
class Case:
    name: str
    status: dict | None
    pods: list = field(default_factory=list)
    now: int = T0 + 10 * SEC
    slot: Slot = Slot()
    actions: list[str] = field(default_factory=list)
    state: str | None = None  # expected status.status after the write (None: no status write expected)
    controls: dict = field(default_factory=dict)
    result: RunnerResult | None = None
    extra: dict = field(default_factory=dict)  # expected status fields (None = absent)
    failure: str | None = None  # expected status.lastFailure.reason (None: no failure recorded)


T = T0 + 10 * SEC
OUT_MSG = report()

CASES = [
    # --- new jobs
    Case("new job waits in the queue", None, slot=Slot(position=3), actions=["WriteStatus"], state="IN_QUEUE",
         extra={"queuePosition": 3, "attempts": 0, "id": UID, "runnerPod": None}),
    Case("new job admitted at once: one write, then the pod", None, slot=Slot(admit=True),
         actions=["WriteStatus", "StartRunner"], state="IN_QUEUE",
         extra={"attempts": 1, "runnerPod": "seed-1", "queuePosition": None}),
    Case("refused spec fails at once", None, slot=Slot(admit=True), actions=["WriteStatus", "Emit"],
         state="FAILED", controls={"retries": 99, "priority": "high"},
         extra={"attempts": 0, "runnerPod": None}, failure="InvalidSpec"),
    Case("unknown GPU class fails at once", None, slot=Slot(admit=True), actions=["WriteStatus", "Emit"],
         state="FAILED", controls={"gpuClass": "h200"}, failure="InvalidSpec"),
    Case("cancelled before it started", None, slot=Slot(admit=True), actions=["WriteStatus", "Emit"],
         state="CANCELLED", controls={"cancel": True}),
    # --- queued
    Case("queued, nothing changed: nothing to write", queued_status(queuePosition=2), slot=Slot(position=2)),
    Case("queued, moved up", queued_status(queuePosition=2), slot=Slot(position=1), actions=["WriteStatus"],
         state="IN_QUEUE", extra={"queuePosition": 1}),
    Case("queued, admitted", queued_status(queuePosition=1), slot=Slot(admit=True),
         actions=["WriteStatus", "StartRunner"], state="IN_QUEUE",
         extra={"attempts": 1, "runnerPod": "seed-1", "queuePosition": None}),
    # --- admitted, pod not there yet (or the operator stopped between the status write and the create)
    Case("admitted, no pod yet: create it (same name)", admitted_status(), actions=["StartRunner"]),
    Case("admitted, pod pending: nothing", admitted_status(), [pod(1, "Pending")]),
    Case("admitted, pod pulling: nothing", admitted_status(), [pod(1, "Pending", container=waiting("ContainerCreating"))]),
    Case("pod running: IN_PROGRESS", admitted_status(), [pod(1, "Running", container=running_container())],
         actions=["WriteStatus"], state="IN_PROGRESS", extra={"startedAt": format_time_ms(T0 + 3 * SEC)}),
    Case("running, nothing changed: nothing", running_status(), [pod(1, "Running", container=running_container())]),
    # --- success
    Case("succeeded, result not read yet: read it", running_status(),
         [pod(1, "Succeeded", container=terminated(0, OUT_MSG))]),
    Case("succeeded with its result: COMPLETED", running_status(),
         [pod(1, "Succeeded", container=terminated(0, OUT_MSG))], result=RESULT, actions=["WriteStatus", "Emit"],
         state="COMPLETED", extra={"delayTime": 4_500, "executionTime": 4_250, "modelLoadTime": 1_250,
                                   "result": RESULT_URI, "error": None,
                                   "startedAt": format_time_ms(T0 + 3_250),
                                   "completedAt": format_time_ms(T0 + 8_750)}),
    Case("succeeded before the operator saw it run: COMPLETED from IN_QUEUE", admitted_status(),
         [pod(1, "Succeeded", container=terminated(0, OUT_MSG))], result=RESULT, actions=["WriteStatus", "Emit"],
         state="COMPLETED"),
    Case("succeeded, pod deleted since: still COMPLETED", running_status(),
         [pod(1, "Succeeded", container=terminated(0, OUT_MSG), gone_ms=T)], result=RESULT,
         actions=["WriteStatus", "Emit"], state="COMPLETED"),
    Case("succeeded but result.json missing: retried", running_status(),
         [pod(1, "Succeeded", container=terminated(0, OUT_MSG))],
         result=RunnerResult(RESULT_URI, problem="does not exist"), actions=["WriteStatus", "Emit"],
         state="IN_QUEUE", extra={"runnerPod": None, "attempts": 1}, failure="ResultUnreadable"),
    # --- permanent failures: FAILED at once, whatever the retries
    Case("bad input: FAILED, no retry", running_status(),
         [pod(1, "Failed", container=terminated(2, report(error={"code": "BAD_INPUT", "field": "input.payload.steps",
                                                                  "message": "must be at least 1"})))],
         actions=["WriteStatus", "Emit"], state="FAILED", controls={"retries": 5}, failure="BadInput"),
    Case("unknown model: FAILED, no retry", running_status(),
         [pod(1, "Failed", container=terminated(3, report(error={
             "code": "MODEL", "field": "input.payload.override_settings.sd_model_checkpoint",
             "message": "unknown model 'nope_xl' (catalog has: sd_xl_base_1.0)"})))],
         actions=["WriteStatus", "Emit"], state="FAILED", failure="ModelError"),
    Case("CUDA out of memory: FAILED", running_status(), [pod(1, "Failed", container=terminated(4))],
         actions=["WriteStatus", "Emit"], state="FAILED", failure="CudaOutOfMemory"),
    Case("container OOMKilled: FAILED", running_status(),
         [pod(1, "Failed", container=terminated(137, reason="OOMKilled"))], actions=["WriteStatus", "Emit"],
         state="FAILED", failure="OOMKilled"),
    Case("invalid image name: FAILED", admitted_status(), [pod(1, "Pending", container=waiting("InvalidImageName"))],
         actions=["WriteStatus", "StopRunner", "Emit"], state="FAILED", failure="InvalidImage"),
    Case("missing Secret past its grace: FAILED", admitted_status(),
         [pod(1, "Pending", container=waiting("CreateContainerConfigError", 'secret "img2img-s3" not found'))],
         now=T0 + 200 * SEC, actions=["WriteStatus", "StopRunner", "Emit"], state="FAILED",
         failure="ContainerConfigError"),
    Case("missing Secret within its grace: wait", admitted_status(),
         [pod(1, "Pending", container=waiting("CreateContainerConfigError"))], now=T0 + 20 * SEC),
    # --- transient failures: retried with back-off while retries last
    Case("storage error: retried", running_status(), [pod(1, "Failed", container=terminated(5))],
         actions=["WriteStatus", "Emit"], state="IN_QUEUE",
         extra={"runnerPod": None, "attempts": 1, "queuePosition": None}, failure="StorageError"),
    Case("crash: retried", running_status(), [pod(1, "Failed", container=terminated(1))],
         actions=["WriteStatus", "Emit"], state="IN_QUEUE", failure="RunnerCrashed"),
    Case("killed by a signal: retried", running_status(), [pod(1, "Failed", container=terminated(143))],
         actions=["WriteStatus", "Emit"], state="IN_QUEUE", failure="RunnerCrashed"),
    Case("evicted through the API (DisruptionTarget): retried", running_status(),
         [pod(1, "Failed", container=terminated(137), conditions=[disruption("EvictionByEvictionAPI")])],
         actions=["WriteStatus", "Emit"], state="IN_QUEUE", failure="Evicted"),
    Case("node-pressure eviction (reason Evicted): retried", running_status(),
         [pod(1, "Failed", reason="Evicted", message="The node was low on resource: memory.")],
         actions=["WriteStatus", "Emit"], state="IN_QUEUE", failure="Evicted"),
    Case("preempted: retried", running_status(),
         [pod(1, "Failed", conditions=[disruption("PreemptionByScheduler")])],
         actions=["WriteStatus", "Emit"], state="IN_QUEUE", failure="Preempted"),
    Case("graceful node shutdown: retried", running_status(),
         [pod(1, "Failed", reason="Terminated", conditions=[disruption("TerminationByKubelet")])],
         actions=["WriteStatus", "Emit"], state="IN_QUEUE", failure="NodeShutdown"),
    Case("pod deleted while running: retried", running_status(),
         [pod(1, "Running", container=running_container(), gone_ms=T)], actions=["WriteStatus", "Emit"],
         state="IN_QUEUE", failure="PodLost"),
    Case("pod deleted before it ran: retried, not re-created", admitted_status(), [pod(1, "Pending", gone_ms=T)],
         actions=["WriteStatus", "Emit"], state="IN_QUEUE", extra={"runnerPod": None}, failure="PodLost"),
    Case("IN_PROGRESS but its pod is not there (deleted while the operator was down)", running_status(),
         actions=["WriteStatus", "Emit"], state="IN_QUEUE", failure="PodLost"),
    Case("terminating on a lost node past the grace: retried", running_status(),
         [pod(1, "Running", conditions=[disruption("DeletionByTaintManager")], deleted=T0 + 10 * SEC)],
         now=T0 + 400 * SEC, actions=["WriteStatus", "Emit"], state="IN_QUEUE", failure="NodeLost"),
    Case("terminating on a lost node within the grace: wait", running_status(),
         [pod(1, "Running", conditions=[disruption("DeletionByTaintManager")], deleted=T0 + 10 * SEC)],
         now=T0 + 60 * SEC),
    Case("image pull back-off within the grace: wait", admitted_status(),
         [pod(1, "Pending", container=waiting("ImagePullBackOff"))], now=T0 + 60 * SEC),
    Case("image pull back-off past the grace: pod removed, retried", admitted_status(),
         [pod(1, "Pending", container=waiting("ErrImagePull", "pull access denied"))], now=T0 + 200 * SEC,
         actions=["WriteStatus", "StopRunner", "Emit"], state="IN_QUEUE", failure="ImagePullBackOff"),
    Case("last retry failed: FAILED", running_status(3), [pod(3, "Failed", container=terminated(1))],
         actions=["WriteStatus", "Emit"], state="FAILED", extra={"attempts": 3}, failure="RunnerCrashed"),
    Case("retries: 0 means one attempt", running_status(), [pod(1, "Failed", container=terminated(5))],
         actions=["WriteStatus", "Emit"], state="FAILED", controls={"retries": 0}, failure="StorageError"),
    # --- deadline
    Case("kubelet deadline: TIMED_OUT, pod removed", running_status(),
         [pod(1, "Failed", reason="DeadlineExceeded", message="Pod was active on the node longer than the specified deadline")],
         actions=["WriteStatus", "StopRunner", "Emit"], state="TIMED_OUT", failure="DeadlineExceeded"),
    Case("past the deadline, kubelet silent: TIMED_OUT and pod removed", running_status(),
         [pod(1, "Running", container=running_container())], now=T0 + 2 * SEC + 601 * SEC + 30 * SEC,
         actions=["WriteStatus", "StopRunner", "Emit"], state="TIMED_OUT", failure="DeadlineExceeded"),
    Case("per-job timeout applies", running_status(), [pod(1, "Running", container=running_container())],
         now=T0 + 2 * SEC + 61 * SEC + 30 * SEC, controls={"timeoutSeconds": 60},
         actions=["WriteStatus", "StopRunner", "Emit"], state="TIMED_OUT", failure="DeadlineExceeded"),
    Case("unschedulable past the deadline: TIMED_OUT", admitted_status(), [pod(1, "Pending", started=None)],
         now=T0 + 1 * SEC + 631 * SEC, actions=["WriteStatus", "StopRunner", "Emit"], state="TIMED_OUT",
         failure="DeadlineExceeded"),
    # --- cancel
    Case("cancel while running: CANCELLED, pod removed", running_status(),
         [pod(1, "Running", container=running_container())], controls={"cancel": True},
         actions=["WriteStatus", "StopRunner", "Emit"], state="CANCELLED"),
    Case("cancel while queued", queued_status(queuePosition=4), controls={"cancel": True},
         actions=["WriteStatus", "Emit"], state="CANCELLED", extra={"queuePosition": None}),
    Case("cancel while waiting for a retry", admitted_status(lastFailure={"reason": "Evicted", "message": ""},
                                                             runnerPod=None),
         [pod(1, "Failed", reason="Evicted")], controls={"cancel": True},
         actions=["WriteStatus", "StopRunner", "Emit"], state="CANCELLED", failure="Evicted"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_next_step(case: Case):
    j = job(case.status, **case.controls)
    decision = next_step(j, case.pods, case.now, CONFIG, checked=checked(j), slot=case.slot, result=case.result)
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
    # a decision taken again on its own result writes nothing more
    again = next_step(job(after, **case.controls), case.pods, case.now, CONFIG, slot=case.slot, result=case.result)
    assert again.status_patch is None


def run(status, pods=(), now=T, slot=Slot(), result=None, cfg=CONFIG, **controls) -> tuple[Decision, dict]:
    j = job(status, **controls)
    decision = next_step(j, list(pods), now, cfg, checked=checked(j, cfg), slot=slot, result=result)
    return decision, status_after(j, decision)


# ---- what the table does not say ------------------------------------------------------------------------------------
def test_refused_spec_names_every_bad_field():
    d, after = run(None, slot=Slot(admit=True), priority="high", gpuClass="h200")
    assert "spec.priority" in after["error"] and "spec.gpuClass: unknown GPU class 'h200'" in after["error"]
    assert after["lastFailure"]["reason"] == "InvalidSpec"
    assert [a for a in d.actions if isinstance(a, Emit)][0].type == "Warning"


def test_refused_payload_field_is_named_with_its_path():
    from operator_samples import job_body

    body = job_body(None)
    body["spec"]["input"]["payload"]["steps"] = 0
    from img2img_operator.views import JobView

    j = JobView.from_body(body)
    after = status_after(j, next_step(j, [], T, CONFIG, slot=Slot(admit=True)))
    assert after["status"] == "FAILED"
    assert "spec.input.payload.steps: must be at least 1" in after["error"]


def test_unknown_model_error_names_the_model_and_is_not_retried():
    failure = {"code": "MODEL", "field": "input.payload.override_settings.sd_model_checkpoint",
               "message": "unknown model 'nope_xl' (catalog has: sd_xl_base_1.0)"}
    d, after = run(running_status(), [pod(1, "Failed", container=terminated(3, report(error=failure)))], retries=5)
    assert after["status"] == "FAILED" and "nope_xl" in after["error"]
    assert after["lastFailure"] == {"reason": "ModelError", "exitCode": 3,
                                    "message": "input.payload.override_settings.sd_model_checkpoint: unknown model "
                                               "'nope_xl' (catalog has: sd_xl_base_1.0)"}
    assert not any(isinstance(a, StartRunner) for a in d.actions)


def test_a_failed_or_timed_out_runner_still_reports_runpods_timings():
    _, after = run(running_status(), [pod(1, "Failed", container=terminated(3, started=T0 + 3 * SEC,
                                                                            finished=T0 + 9 * SEC))], retries=0)
    assert after["status"] == "FAILED" and (after["delayTime"], after["executionTime"]) == (3_000, 6_000)
    _, after = run(running_status(), [pod(1, "Running", container=running_container())],
                   now=T0 + 2 * SEC + 61 * SEC + 30 * SEC, timeoutSeconds=60)
    assert after["status"] == "TIMED_OUT" and isinstance(after["executionTime"], int) and after["executionTime"] > 0
    # refused before any runner started: nothing ran, so no timings
    _, after = run(None, slot=Slot(admit=True), gpuClass="h200")
    assert after["status"] == "FAILED" and "delayTime" not in after


def test_runner_log_tail_is_the_message_when_there_is_no_report():
    d, after = run(running_status(), [pod(1, "Failed", container=terminated(1, "Traceback ...\nRuntimeError: boom"))],
                   retries=0)
    assert after["status"] == "FAILED" and "RuntimeError: boom" in after["error"]
    assert after["error"].endswith("(after 1 attempt)")


def test_completed_status_is_runpod_shaped():
    d, after = run(running_status(), [pod(1, "Succeeded", container=terminated(0, report()))], result=RESULT)
    assert after["output"] == {"images": ["s3://img2img/jobs/team-a/seed/x/images/0.png"], "info": '{"seed": 1}',
                               "parameters": {"steps": 30}}
    for key in ("delayTime", "executionTime", "modelLoadTime"):
        assert isinstance(after[key], int)
    assert cond(after, "Ready")["reason"] == "Completed"
    emit = [a for a in d.actions if isinstance(a, Emit)][0]
    assert (emit.type, emit.reason) == ("Normal", "Completed")


def test_presigned_urls_of_the_result_reach_the_status_and_a_half_signed_list_does_not():
    from img2img.api.status import JobStatus

    images = ["s3://img2img/jobs/team-a/seed/x/images/0.png", "s3://img2img/jobs/team-a/seed/x/images/1.png"]
    urls = [f"https://s3.example.com/img2img/jobs/team-a/seed/x/images/{n}.png?X-Amz-Signature=ab" for n in (0, 1)]
    signed = RunnerResult(RESULT_URI, data={"images": images, "info": "{}", "parameters": {},
                                            "presigned": urls, "presignedExpiresAt": "2026-01-01T01:00:00.000Z"})
    _, after = run(running_status(), [pod(1, "Succeeded", container=terminated(0, report()))], result=signed)
    assert after["output"]["presigned"] == urls and after["output"]["presignedExpiresAt"] == "2026-01-01T01:00:00.000Z"
    JobStatus.model_validate(after)  # the status model (and so the CRD schema) holds them
    half = RunnerResult(RESULT_URI, data={"images": images, "info": "{}", "parameters": {}, "presigned": urls[:1]})
    _, after = run(running_status(), [pod(1, "Succeeded", container=terminated(0, report()))], result=half)
    assert "presigned" not in after["output"]


def test_result_is_read_from_the_uri_in_the_termination_message():
    other = "s3://elsewhere/out/result.json"
    d, _ = run(running_status(), [pod(1, "Succeeded", container=terminated(0, report(result=other)))])
    assert d.fetch_result == other and not d.actions
    # without a report: the job's own location
    d, _ = run(running_status(), [pod(1, "Succeeded", container=terminated(0))])
    assert d.fetch_result == RESULT_URI
    # a result for another URI is not this one
    d, _ = run(running_status(), [pod(1, "Succeeded", container=terminated(0, report(result=other)))], result=RESULT)
    assert d.fetch_result == other


def test_completion_without_a_report_uses_the_container_times():
    d, after = run(running_status(), [pod(1, "Succeeded", container=terminated(0, started=T0 + 3 * SEC,
                                                                             finished=T0 + 9 * SEC))],
                   result=RESULT)
    assert after["delayTime"] == 3_000 and after["executionTime"] == 6_000
    assert "modelLoadTime" not in after


def test_submitted_at_comes_from_a_consistent_annotation_with_milliseconds():
    d, after = run(None, slot=Slot(position=1))
    assert after["submittedAt"] == format_time_ms(T0)
    j = job(None, annotations={"img2img.dev/submitted-at": "2026-01-01T00:00:00.734Z"})
    after = status_after(j, next_step(j, [], T, CONFIG))
    assert after["submittedAt"] == "2026-01-01T00:00:00.734Z"


def test_retry_waits_for_its_back_off_then_starts_the_next_attempt_in_a_new_pod():
    failed = pod(1, "Failed", container=terminated(5, finished=T0 + 9 * SEC))
    d, after = run(running_status(), [failed])
    assert after["lastFailure"]["reason"] == "StorageError" and after["lastFailure"]["exitCode"] == 5
    assert d.wake_at == T0 + 9 * SEC + 10 * SEC
    assert cond(after, "Reconciling")["reason"] == "Retrying"
    # during the back-off: queued, not startable even if admission offers a slot
    j = job(after)
    entry = queue_entry(j, [failed], T0 + 12 * SEC, CONFIG)
    assert entry is not None and not entry.eligible and not entry.running
    d2 = next_step(j, [failed], T0 + 12 * SEC, CONFIG, slot=Slot(admit=True, position=1))
    assert not any(isinstance(a, StartRunner) for a in d2.actions)
    assert d2.wake_at == T0 + 19 * SEC
    # after it: attempt 2 in pod seed-2
    entry = queue_entry(j, [failed], T0 + 20 * SEC, CONFIG)
    assert entry.eligible
    d3 = next_step(j, [failed], T0 + 20 * SEC, CONFIG, slot=Slot(admit=True))
    assert kinds(d3) == ["WriteStatus", "StartRunner"] and d3.actions[1] == StartRunner(2)
    after3 = status_after(j, d3)
    assert after3["attempts"] == 2 and after3["runnerPod"] == "seed-2"


def test_back_off_doubles_up_to_its_maximum():
    cfg = config(retryBackoff={"initialSeconds": 10, "maxSeconds": 25}, defaults={"retries": 5})
    for attempt, delay in ((1, 10), (2, 20), (3, 25), (4, 25)):
        failed = pod(attempt, "Failed", container=terminated(1, finished=T0 + 9 * SEC))
        d, _ = run(running_status(attempt), [failed], cfg=cfg)
        assert d.wake_at == T0 + 9 * SEC + delay * SEC


def test_no_new_attempt_while_the_previous_pod_still_terminates():
    status = admitted_status(runnerPod=None, lastFailure={"reason": "ImagePullBackOff", "message": ""})
    stopping = pod(1, "Pending", container=waiting("ImagePullBackOff"), deleted=T0 + 210 * SEC)
    j = job(status)
    entry = queue_entry(j, [stopping], T0 + 300 * SEC, CONFIG)
    assert entry.running  # it still holds the slot
    d = next_step(j, [stopping], T0 + 300 * SEC, CONFIG, slot=Slot(admit=True))
    assert not any(isinstance(a, StartRunner) for a in d.actions)


def test_a_pod_of_a_later_attempt_than_the_status_knows_is_adopted_never_recreated():
    # e.g. the status write of attempt 2 was lost but its pod exists
    status = admitted_status(1, runnerPod=None, lastFailure={"reason": "Evicted", "message": ""})
    pods = [pod(1, "Failed", reason="Evicted"), pod(2, "Running", container=running_container())]
    assert progress(job(status), pods).attempt == 2
    d, after = run(status, pods, slot=Slot(admit=True))
    assert not any(isinstance(a, StartRunner) for a in d.actions)
    assert after["attempts"] == 2 and after["runnerPod"] == "seed-2" and after["status"] == "IN_PROGRESS"


def test_a_pod_is_created_only_for_the_attempt_in_flight_and_only_if_never_seen():
    """Exhaustively over small states: StartRunner(n) ⇒ status says attempt n is in flight and pod n was never seen."""
    pod_states = [None, "Pending", "Running", "Succeeded", "Failed", "gone"]
    statuses = [None, queued_status(), admitted_status(1), running_status(1), admitted_status(2),
                admitted_status(1, runnerPod=None, lastFailure={"reason": "Evicted", "message": ""})]
    for status in statuses:
        for p1 in pod_states:
            for p2 in pod_states:
                pods = []
                for n, s in ((1, p1), (2, p2)):
                    if s == "gone":
                        pods.append(pod(n, "Running", gone_ms=T))
                    elif s is not None:
                        pods.append(pod(n, s, container=terminated(0 if s == "Succeeded" else 1)
                                        if s in ("Succeeded", "Failed") else None))
                j = job(status)
                for slot in (Slot(), Slot(admit=True)):
                    d = next_step(j, pods, T0 + 3600 * SEC, CONFIG, slot=slot)
                    for action in d.actions:
                        if isinstance(action, StartRunner):
                            n = action.attempt
                            assert not any(p.attempt == n for p in pods), (status, p1, p2)
                            after = applied(j.status, d.status_patch or {})
                            assert after["attempts"] == n and after["runnerPod"] == f"seed-{n}"
                            # the status that says so is written before the pod is created
                            writes = [i for i, a in enumerate(d.actions) if isinstance(a, WriteStatus)]
                            if j.status.get("runnerPod") != f"seed-{n}":
                                assert writes and writes[0] < d.actions.index(action)


# ---- finished jobs ------------------------------------------------------------------------------------------------
def finished(state="COMPLETED", completed_at=T0 + 10 * SEC, **extra):
    return {**running_status(), "status": state, "completedAt": format_time_ms(completed_at), "observedGeneration": 1,
            "conditions": [], **extra}


def test_finished_job_is_left_alone():
    d, _ = run(finished(), [pod(1, "Succeeded", container=terminated(0))], now=T0 + 10_000 * SEC)
    assert d == Decision()


def test_ttl_after_finished_deletes_the_job_then():
    d, _ = run(finished(), now=T0 + 20 * SEC, ttlSecondsAfterFinished=60)
    assert not d.actions and d.wake_at == T0 + 70 * SEC
    d, _ = run(finished(), now=T0 + 70 * SEC, ttlSecondsAfterFinished=60)
    assert d.actions == (DeleteJob(),)
    d, _ = run(finished("FAILED"), now=T0 + 100 * SEC, cfg=config(defaults={"ttlSecondsAfterFinished": 30}))
    assert d.actions == (DeleteJob(),)


def test_finished_job_with_a_live_pod_stops_it():
    grace = CONFIG.timing.cancel_grace_period_seconds
    d, _ = run(finished("FAILED"), [pod(1, "Running", container=running_container())])
    assert d.actions == (StopRunner("seed-1", "pod-uid-1", grace),)
    # a failed job keeps its finished pods (their logs); a timed-out or cancelled one does not
    d, _ = run(finished("FAILED"), [pod(1, "Failed", container=terminated(1))])
    assert d.actions == ()
    for state in ("TIMED_OUT", "CANCELLED"):
        d, _ = run(finished(state), [pod(1, "Failed", container=terminated(137)), pod(2, "Failed", deleted=T)])
        assert d.actions == (StopRunner("seed-1", "pod-uid-1", grace),)


def test_finished_job_edited_later_only_catches_up_observed_generation():
    j = job(finished(conditions=[{"type": "Ready", "status": "True", "reason": "Completed", "message": "",
                                  "lastTransitionTime": "2026-01-01T00:00:10Z", "observedGeneration": 1}]),
            generation=2, cancel=True)
    d = next_step(j, [], T, CONFIG)
    (write,) = d.actions
    assert write.patch["observedGeneration"] == 2 and write.patch["conditions"][0]["observedGeneration"] == 2
    assert "status" not in write.patch


def test_a_job_being_deleted_gets_no_writes():
    d, _ = run(running_status(), [pod(1, "Running")], deleting=True)
    assert d == Decision()


# ---- conditions ---------------------------------------------------------------------------------------------------
def test_conditions_keep_their_transition_time_while_their_status_holds():
    _, queued = run(None, slot=Slot(position=1), now=T0 + 1 * SEC)
    _, admitted = run(queued, slot=Slot(admit=True), now=T0 + 5 * SEC)
    assert cond(admitted, "Reconciling")["lastTransitionTime"] == cond(queued, "Reconciling")["lastTransitionTime"]
    _, done = run(running_status(conditions=admitted["conditions"]),
                  [pod(1, "Succeeded", container=terminated(0, report()))], result=RESULT, now=T0 + 9 * SEC)
    assert cond(done, "Ready")["lastTransitionTime"] == "2026-01-01T00:00:09Z"
    assert cond(done, "Stalled")["lastTransitionTime"] == cond(queued, "Stalled")["lastTransitionTime"]


# ---- the happy path's API writes ----------------------------------------------------------------------------------
def test_happy_path_writes():
    """Admitted at once: status (IN_QUEUE, attempt 1) + pod + IN_PROGRESS + COMPLETED + Event = 5 writes."""
    writes = []
    j = job(None)
    steps = [
        ([], Slot(admit=True), None),
        ([pod(1, "Pending")], Slot(), None),
        ([pod(1, "Pending", container=waiting("ContainerCreating"))], Slot(), None),
        ([pod(1, "Running", container=running_container())], Slot(), None),
        ([pod(1, "Running", container=running_container())], Slot(), None),
        ([pod(1, "Succeeded", container=terminated(0, report()))], Slot(), RESULT),
        ([pod(1, "Succeeded", container=terminated(0, report()))], Slot(), RESULT),
    ]
    created = set()
    for pods, slot, result in steps:
        d = next_step(j, pods, T, CONFIG, slot=slot, result=result)
        for a in d.actions:
            if isinstance(a, StartRunner):
                if a.attempt in created or any(p.attempt == a.attempt for p in pods):
                    continue
                created.add(a.attempt)
            writes.append(type(a).__name__)
        j = job(applied(j.status, d.status_patch or {}))
    assert writes == ["WriteStatus", "StartRunner", "WriteStatus", "WriteStatus", "Emit"]
    assert j.status["status"] == "COMPLETED"
