"""The heart of the operator: job + its runner pods + the clock → the next status and actions. Pure.

Level-based: the decision depends only on what is stored (the job's spec and status, the pods) and the time, never
on which event arrived, so it is the same after an operator restart as before it.

Attempts (restart safety — a job never runs twice):

- ``status.attempts`` = attempts started; attempt n runs in pod ``<job>-<n>``.
- Attempt n is *in flight* while ``status.runnerPod`` names its pod. Admission writes ``attempts: n`` and
  ``runnerPod`` **before** the pod is created: a crash in between leaves a status that says "create pod n", and
  creating the same name again is harmless (409). A pod is created only for the attempt in flight, and only while
  the job is IN_QUEUE and the pod has never been seen (a pod that vanished is a lost attempt, not a pod to re-create).
- A failed attempt is recorded by ``lastFailure`` and removing ``runnerPod``; the job waits in the queue (IN_QUEUE)
  for its retry, after a back-off counted from when the pod stopped.
- A pod with a higher attempt than the status knows is adopted as the attempt in flight.

Happy path writes (a job admitted at once): status IN_QUEUE with attempts 1 → create pod → IN_PROGRESS → COMPLETED
→ one Event "Completed": 5 API writes (6 with ``ttlSecondsAfterFinished``: the delete).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from img2img.api.status import TERMINAL, JobState
from img2img.api.times import format_time_ms, parse_time_ms

from . import attempts
from .attempts import Failure, Observation, observe
from .config import OperatorConfig
from .controls import Checked, Controls, check_spec
from .pods import job_location, runner_pod_name
from .queue import QueueEntry
from .report import RunnerResult
from .runpod_timings import Timings, submitted_at_ms, timings
from .status import changes, desired, error_text, last_failure
from .views import JobView, PodView

QUEUED_MESSAGE = "waiting for a free runner slot"

IN_QUEUE = JobState.IN_QUEUE.value
IN_PROGRESS = JobState.IN_PROGRESS.value
COMPLETED = JobState.COMPLETED.value
FAILED = JobState.FAILED.value
CANCELLED = JobState.CANCELLED.value
TIMED_OUT = JobState.TIMED_OUT.value


# ---- actions ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WriteStatus:
    patch: dict[str, Any]  # the top-level .status keys that change (None = remove): status.changes


@dataclass(frozen=True)
class StartRunner:
    attempt: int  # stage the input, create pod <job>-<attempt> (idempotent)


@dataclass(frozen=True)
class StopRunner:
    pod: str
    uid: str | None
    grace_seconds: int


@dataclass(frozen=True)
class DeleteJob:
    pass


@dataclass(frozen=True)
class Emit:
    type: str  # Normal | Warning
    reason: str
    message: str


Action = WriteStatus | StartRunner | StopRunner | DeleteJob | Emit


@dataclass(frozen=True)
class Slot:
    """What admission decided for this job in this pass."""

    admit: bool = False
    position: int | None = None


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...] = ()
    wake_at: int | None = None  # ms: decide again then, even without an event
    fetch_result: str | None = None  # read this result.json, then decide again with it

    @property
    def status_patch(self) -> dict[str, Any] | None:
        for action in self.actions:
            if isinstance(action, WriteStatus):
                return action.patch
        return None


# ---- reading the job ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    attempt: int  # attempts started (the current or last attempt's number), 0 = none yet
    in_flight: bool  # attempt ``attempt`` is running (or about to)
    adopted: bool = False  # a pod showed an attempt the status did not know


def pods_by_attempt(pods: Iterable[PodView]) -> dict[int, PodView]:
    """One pod per attempt; a live pod wins over a tombstone of an earlier pod with the same name."""
    out: dict[int, PodView] = {}
    for pod in pods:
        if pod.attempt < 1:
            continue
        seen = out.get(pod.attempt)
        if seen is None or (seen.gone and not pod.gone):
            out[pod.attempt] = pod
    return out


def progress(job: JobView, pods: Sequence[PodView]) -> Progress:
    attempt = job.attempts
    newest = max((p.attempt for p in pods), default=0)
    if newest > attempt:
        return Progress(newest, in_flight=True, adopted=True)
    in_flight = attempt >= 1 and job.status.get("runnerPod") == runner_pod_name(job.name, attempt)
    return Progress(attempt, in_flight=in_flight)


def retry_at(attempt: int, pod: PodView | None, config: OperatorConfig) -> int | None:
    """When the next attempt may start after attempt ``attempt`` failed; None = now (the failure time is unknown)."""
    if attempt < 1 or pod is None or pod.ended_ms is None:
        return None
    return pod.ended_ms + int(config.retry_backoff.delay(attempt) * 1000)


def live_pods(pods: Iterable[PodView]) -> list[PodView]:
    return [p for p in pods if p.live]


def queue_entry(job: JobView, pods: Sequence[PodView], now: int, config: OperatorConfig,
                checked: Checked | None = None) -> QueueEntry | None:
    """The job as admission sees it: holding a slot, waiting (eligible or in back-off), or not queued at all."""
    checked = checked or check_spec(job.spec, config)
    c = checked.controls
    holding = bool(live_pods(pods))
    p = progress(job, pods)
    base = dict(uid=job.uid, namespace=job.namespace, name=job.name, gpu_class=c.gpu_class, priority=c.priority,
                submitted_at=submitted_at_ms(job))
    if job.deleting or job.state in TERMINAL or c.cancel or (not checked.ok and not p.in_flight):
        return QueueEntry(**base, running=True) if holding else None
    if p.in_flight or holding:
        return QueueEntry(**base, running=True)
    when = retry_at(p.attempt, pods_by_attempt(pods).get(p.attempt), config)
    return QueueEntry(**base, eligible=when is None or now >= when)


# ---- deciding -----------------------------------------------------------------------------------------------------
def next_step(job: JobView, pods: Sequence[PodView], now: int, config: OperatorConfig, *,
              checked: Checked | None = None, slot: Slot = Slot(), result: RunnerResult | None = None) -> Decision:
    """Everything the operator does to a job goes through here."""
    checked = checked or check_spec(job.spec, config)
    if job.deleting:
        return Decision()  # going away: the garbage collector removes its pods; nothing to write on it
    if job.state in TERMINAL:
        return _finished(job, pods, now, config, checked.controls)
    return _active(job, pods, now, config, checked, slot, result)


def _write(job: JobView, wanted: dict[str, Any], *rest: Action, wake_at: int | None = None) -> Decision:
    patch = changes(job.status, wanted)
    actions: tuple[Action, ...] = ((WriteStatus(patch),) if patch else ()) + tuple(rest)
    return Decision(actions, wake_at=wake_at)


def _stop_all(pods: Iterable[PodView], grace: int, finished_too: bool = False) -> tuple[StopRunner, ...]:
    """Delete the live pods (and with ``finished_too`` the finished ones: a timed-out or cancelled job's pod goes)."""
    return tuple(StopRunner(p.name, p.uid or None, grace) for p in pods
                 if not p.gone and not p.deleting and (finished_too or p.live))


# final states whose pods are deleted, finished ones too: a timed-out or cancelled job leaves no pod behind
REMOVES_PODS = {CANCELLED, TIMED_OUT}


def _first_fields(job: JobView) -> dict[str, Any]:
    """What the first status write records once: when the job was submitted."""
    return {"submittedAt": format_time_ms(submitted_at_ms(job))}


def _active(job: JobView, pods: Sequence[PodView], now: int, config: OperatorConfig, checked: Checked, slot: Slot,
            result: RunnerResult | None) -> Decision:
    c = checked.controls
    grace = config.timing.cancel_grace_period_seconds
    p = progress(job, pods)
    first = _first_fields(job)
    attempts_field = {"attempts": p.attempt}

    if c.cancel:
        return _write(
            job,
            desired(job, now, CANCELLED, "Cancelled", "cancelled by spec.cancel", **first, **attempts_field,
                    completedAt=format_time_ms(now), queuePosition=None),
            *_stop_all(pods, grace, finished_too=True),
            Emit("Normal", "Cancelled", "cancelled by spec.cancel"),
        )

    if not checked.ok and not p.in_flight:
        message = checked.describe()
        return _write(
            job,
            desired(job, now, FAILED, "InvalidSpec", message, **first, **attempts_field, error=message,
                    completedAt=format_time_ms(now), queuePosition=None,
                    lastFailure=last_failure("InvalidSpec", message)),
            Emit("Warning", "InvalidSpec", message),
        )

    if p.in_flight:
        return _in_flight(job, pods, now, config, c, p, result)
    return _waiting(job, pods, now, config, c, p, slot)


def _waiting(job: JobView, pods: Sequence[PodView], now: int, config: OperatorConfig, c: Controls, p: Progress,
             slot: Slot) -> Decision:
    """Queued: for the first attempt, or for a retry."""
    first = _first_fields(job)
    when = retry_at(p.attempt, pods_by_attempt(pods).get(p.attempt), config)
    ready = when is None or now >= when
    if slot.admit and ready and not live_pods(pods):
        n = p.attempt + 1
        pod = runner_pod_name(job.name, n)
        return _write(
            job,
            desired(job, now, IN_QUEUE, "Starting", _starting(n, pod), **first, attempts=n, runnerPod=pod,
                    queuePosition=None),
            StartRunner(n),
        )
    if p.attempt == 0:
        reason, message = "Queued", QUEUED_MESSAGE
    else:
        failure = job.status.get("lastFailure") or {}
        reason = "Retrying"
        message = _retrying(p.attempt, str(failure.get("reason") or "Unknown"), str(failure.get("message") or ""),
                            config)
    wanted = desired(job, now, IN_QUEUE, reason, message, **first, attempts=p.attempt,
                     queuePosition=slot.position)
    return _write(job, wanted, wake_at=None if ready else when)


def _in_flight(job: JobView, pods: Sequence[PodView], now: int, config: OperatorConfig, c: Controls, p: Progress,
               result: RunnerResult | None) -> Decision:
    n = p.attempt
    name = runner_pod_name(job.name, n)
    first = _first_fields(job)
    pod = pods_by_attempt(pods).get(n)
    adopt = {"attempts": n, "runnerPod": name} if p.adopted else {}

    if pod is None:
        if job.state == IN_PROGRESS:
            return _failed_attempt(job, pods, now, config, c, n, None, Failure(
                "PodLost", f"the runner pod {name} no longer exists", retriable=True))
        # Admitted, pod not created yet (or the operator stopped in between): create it, same name.
        return _write(job, desired(job, now, IN_QUEUE, "Starting", _starting(n, name), **first, **adopt,
                                   queuePosition=None),
                      StartRunner(n), wake_at=now + int(config.timing.tick_seconds * 1000))

    obs = observe(pod, now, c.timeout_seconds, config.timing)
    if obs.kind == attempts.SUCCEEDED:
        uri = (obs.report.result if obs.report and obs.report.result else None) or \
            job_location(job, c, config) + "result.json"
        if result is None or result.uri != uri:
            return Decision(fetch_result=uri)
        if result.problem is not None:
            return _failed_attempt(job, pods, now, config, c, n, obs, Failure(
                "ResultUnreadable", f"the runner succeeded but its result cannot be used: {result.problem}",
                retriable=True, exit_code=0))
        return _completed(job, now, obs, result, adopt)
    if obs.kind == attempts.FAILED:
        assert obs.failure is not None
        return _failed_attempt(job, pods, now, config, c, n, obs, obs.failure)
    if obs.kind == attempts.RUNNING or (
            obs.kind in (attempts.PENDING, attempts.TERMINATING) and job.state == IN_PROGRESS):
        started = obs.started_ms or now
        wanted = desired(job, now, IN_PROGRESS, "Running", _running(n, name), **first, **adopt,
                         queuePosition=None)
        if job.state != IN_PROGRESS:
            wanted["startedAt"] = format_time_ms(started)
        return _write(job, wanted, wake_at=obs.wake_at)
    # pending (scheduling, pulling the image) or terminating before it ran: the same words as at admission, so that
    # nothing is written until the pod runs
    return _write(job, desired(job, now, IN_QUEUE, "Starting", _starting(n, name), **first, **adopt,
                               queuePosition=None), wake_at=obs.wake_at)


def _starting(n: int, pod: str) -> str:
    return f"starting attempt {n} in pod {pod}"


def _running(n: int, pod: str) -> str:
    return f"attempt {n} running in pod {pod}"


def _retrying(n: int, reason: str, message: str, config: OperatorConfig) -> str:
    """The same words while the retry waits as when it was decided: nothing to write in between."""
    delay = config.retry_backoff.delay(n)
    return f"attempt {n} failed, retrying after {delay:g} s: {error_text(reason, message)}"


def _timings(job: JobView, obs: Observation, now: int) -> Timings:
    term = obs.pod.container.terminated if obs.pod.container else None
    return timings(submitted_at_ms(job), obs.report, obs.started_ms, term.finished_ms if term else None, now)


def _ran_for(job: JobView, obs: Observation | None, now: int) -> dict[str, Any]:
    """The RunPod timings of a job whose runner started and then failed or ran out of time (RunPod reports
    delayTime and executionTime on a failed job too); nothing when no runner ever started."""
    if obs is None or obs.started_ms is None:
        return {}
    return _timings(job, obs, now).as_status()


def _completed(job: JobView, now: int, obs: Observation, result: RunnerResult, adopt: dict) -> Decision:
    t = _timings(job, obs, now)
    fields: dict[str, Any] = {
        **_first_fields(job),
        **adopt,
        "output": result.output,
        **t.as_status(),
        "result": result.uri,
        "completedAt": format_time_ms(t.finished_ms or now),
        "queuePosition": None,
        "error": None,
    }
    if t.started_ms is not None:
        fields["startedAt"] = format_time_ms(t.started_ms)
    images = len(result.output["images"])
    message = f"{images} image(s) in {t.execution_time} ms after {t.delay_time} ms of delay"
    return _write(job, desired(job, now, COMPLETED, "Completed", message, **fields),
                  Emit("Normal", "Completed", message))


def _failed_attempt(job: JobView, pods: Sequence[PodView], now: int, config: OperatorConfig, c: Controls, n: int,
                    obs: Observation | None, failure: Failure) -> Decision:
    grace = config.timing.cancel_grace_period_seconds
    first = _first_fields(job)
    failure_record = last_failure(failure.reason, failure.message, failure.exit_code)
    stop = _stop_all(pods, grace)
    name = runner_pod_name(job.name, n)

    if failure.timed_out:
        message = error_text(failure.reason, failure.message)
        return _write(
            job,
            desired(job, now, TIMED_OUT, "TimedOut", message, **first, **_ran_for(job, obs, now), attempts=n,
                    runnerPod=name, error=message, completedAt=format_time_ms(now), queuePosition=None,
                    lastFailure=failure_record),
            *_stop_all(pods, grace, finished_too=True),
            Emit("Warning", "TimedOut", message),
        )

    if failure.retriable and n < 1 + c.retries:
        pod = obs.pod if obs is not None else None
        when = retry_at(n, pod, config)
        message = _retrying(n, failure.reason, failure.message, config)
        return _write(
            job,
            desired(job, now, IN_QUEUE, "Retrying", message, **first, attempts=n, runnerPod=None,
                    queuePosition=None, lastFailure=failure_record),
            *stop,
            Emit("Warning", "Retrying", message),
            wake_at=when if when is not None and when > now else None,
        )

    message = error_text(failure.reason, failure.message)
    if failure.retriable:
        message += f" (after {n} attempt{'s' if n > 1 else ''})"
    return _write(
        job,
        desired(job, now, FAILED, failure.reason, message, **first, **_ran_for(job, obs, now), attempts=n,
                runnerPod=name, error=message, completedAt=format_time_ms(now), queuePosition=None,
                lastFailure=failure_record),
        *stop,
        Emit("Warning", failure.reason, message),
    )


def start_refused(job: JobView, pods: Sequence[PodView], now: int, config: OperatorConfig, checked: Checked,
                  attempt: int, reason: str, message: str) -> Decision:
    """Starting ``attempt`` was refused for a reason another try will not cure (bad bucket, pod rejected): FAILED."""
    return _failed_attempt(job, pods, now, config, checked.controls, attempt, None,
                           Failure(reason, message, retriable=False))


def _finished(job: JobView, pods: Sequence[PodView], now: int, config: OperatorConfig, c: Controls) -> Decision:
    """A finished job: its pods stopped, observedGeneration kept current, deleted after its TTL."""
    actions: list[Action] = list(_stop_all(pods, config.timing.cancel_grace_period_seconds,
                                           finished_too=job.state in REMOVES_PODS))
    if job.status.get("observedGeneration") != job.generation:
        conds = [{**cond, "observedGeneration": job.generation} for cond in job.status.get("conditions") or []]
        actions.insert(0, WriteStatus({"observedGeneration": job.generation, "conditions": conds}))
    wake_at = None
    ttl = c.ttl_seconds_after_finished
    completed = parse_time_ms(job.status.get("completedAt"))
    if ttl is not None and completed is not None:
        expires = completed + ttl * 1000
        if now >= expires:
            return Decision((DeleteJob(),))
        wake_at = expires
    return Decision(tuple(actions), wake_at=wake_at)
