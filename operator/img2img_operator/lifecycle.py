"""The heart of the operator: job + its attempt's lease + the clock → the next status and actions. Pure.

Attempts (a job is never handed out twice, and only one attempt's end counts):

- ``status.attempts`` = attempts started. A queued job that admission lets start is offered to runners (``Offer``;
  its input was staged when its verdict was reached, ``verdicts``); a new one admitted at once gets no IN_QUEUE
  status unless it is still untaken after ``QUEUED_WRITE_AFTER_MS`` (``unwritten_while_offered``). Attempt n starts
  when a runner takes the job: the take writes IN_PROGRESS, ``attempts: n``, ``runnerPod`` and ``startedAt``
  (``assignment_status``) under the job's resourceVersion before the runner hears of it.
- While IN_PROGRESS the attempt is seen through its lease (``leases.lease_state``): running (with progress, written
  at most once a second), done (the runner's outcome), or lapsed (``RunnerLost``). ``EndLease`` forgets a lease once
  the attempt's end is recorded in the status.
- A failed attempt is recorded by ``lastFailure`` and removing ``runnerPod``; the job waits in the queue (IN_QUEUE)
  for its retry, after a back-off counted from when the attempt ended (after an operator restart that moment is
  unknown: the retry may start at once).
- Cancel and deadline (counted from ``startedAt``, the assignment) end the job at once (CANCELLED, TIMED_OUT); the
  runner is told to stop at its next heartbeat (``stop_reason``) and its lease ends when it reports.

Happy path writes: IN_PROGRESS (the take) → COMPLETED, and one Event "Completed": 2 status writes and an Event (plus
IN_QUEUE first, once its verdict is in, for a job that waits; progress at most one write a second; the delete with
``ttlSecondsAfterFinished``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from img2img.api.status import TERMINAL, JobState
from img2img.api.termination import TerminationMessage
from img2img.api.times import format_time_ms, parse_time_ms

from .config import OperatorConfig
from .controls import Checked, Controls, check_spec, controls_from
from .deliveries import owed
from .leases import DONE, LAPSED, PENDING, Lease, LeaseState
from .outcomes import Failure, read_outcome, runner_lost
from .queue import QueueEntry
from .report import RunnerResult, bounded_output
from .runpod_timings import submitted_at_ms, timings
from .staging import job_location, result_uri
from .status import changes, desired, error_text, last_failure, output_budget
from .views import JobView

QUEUED_MESSAGE = "waiting for a runner"
PROGRESS_INTERVAL_MS = 1000  # at most one progress write a second per job
QUEUED_WRITE_AFTER_MS = 10_000  # a new job offered at once is written IN_QUEUE only if still untaken then

IN_QUEUE = JobState.IN_QUEUE.value
IN_PROGRESS = JobState.IN_PROGRESS.value
COMPLETED = JobState.COMPLETED.value
FAILED = JobState.FAILED.value
CANCELLED = JobState.CANCELLED.value
TIMED_OUT = JobState.TIMED_OUT.value

STOP_CANCELLED, STOP_DEADLINE, STOP_LOST = "cancelled", "deadline", "lost"


# ---- actions ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WriteStatus:
    patch: dict[str, Any]  # the top-level .status keys that change (None = remove): status.changes


@dataclass(frozen=True)
class Offer:
    """Offer the job to runners until one takes it (its input was staged with its verdict)."""


@dataclass(frozen=True)
class EndLease:
    lease: str  # the attempt's end is in the status (written just before): forget its lease


@dataclass(frozen=True)
class RetireRunner:
    # its lease lapsed: remove its pod (if it is still there, it hangs or lost its way; a new one comes), unless it
    # heartbeats on another job (then the attempt was lost on the way to it: the dispatcher keeps it)
    runner: str


@dataclass(frozen=True)
class DeleteJob:
    pass


@dataclass(frozen=True)
class Deliver:
    """The job ended and its webhook is owed: see that its delivery runs (``webhooks``; it does not hold the pass)."""


@dataclass(frozen=True)
class Emit:
    type: str  # Normal | Warning
    reason: str
    message: str


Action = WriteStatus | Offer | EndLease | RetireRunner | DeleteJob | Deliver | Emit


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
def retry_at(attempt: int, ended_ms: int | None, config: OperatorConfig) -> int | None:
    """When the next attempt may start after attempt ``attempt`` failed at ``ended_ms``; None = now (unknown)."""
    if attempt < 1 or ended_ms is None:
        return None
    return ended_ms + int(config.retry_backoff.delay(attempt) * 1000)


def queue_entry(job: JobView, now: int, config: OperatorConfig, checked: Checked, holds: bool,
                ended_ms: int | None) -> QueueEntry | None:
    """The job as admission sees it: holding a slot, waiting (eligible or in back-off), or not queued at all.
    ``holds``: a take is claiming the job, or an attempt of it still holds a runner (a cancelled job's runner
    stopping: the GPU is not free yet)."""
    c = checked.controls
    in_flight = job.state == IN_PROGRESS
    base = dict(uid=job.uid, namespace=job.namespace, name=job.name, gpu_class=c.gpu_class, priority=c.priority,
                submitted_at=submitted_at_ms(job))
    if job.deleting or job.state in TERMINAL or c.cancel or (not checked.ok and not in_flight):
        return QueueEntry(**base, running=True) if holds else None
    if in_flight or holds:
        return QueueEntry(**base, running=True)
    when = retry_at(job.attempts, ended_ms, config)
    return QueueEntry(**base, eligible=when is None or now >= when)


def stop_reason(job: JobView | None, lease: Lease, now: int, config: OperatorConfig) -> str | None:
    """What a heartbeat of ``lease`` is answered: stop (cancelled, deadline, or lost: not the job's attempt any
    more), or None: go on."""
    if job is None or job.deleting:
        return STOP_CANCELLED
    c = controls_from(job.spec, config)
    if job.state == CANCELLED or c.cancel:
        return STOP_CANCELLED
    if job.state == TIMED_OUT:
        return STOP_DEADLINE
    if job.state != IN_PROGRESS or job.attempts != lease.attempt or job.status.get("runnerPod") != lease.runner:
        return STOP_LOST
    started = parse_time_ms(job.status.get("startedAt"))
    if started is not None and now >= started + c.timeout_seconds * 1000:
        return STOP_DEADLINE
    return None


def assignment_status(job: JobView, now: int, runner: str, attempt: int) -> dict[str, Any]:
    """The status a take writes before the runner hears of its assignment (the patch: what changes)."""
    wanted = desired(job, now, IN_PROGRESS, "Running", _running(attempt, runner), **_first_fields(job),
                     attempts=attempt, runnerPod=runner, startedAt=format_time_ms(now), queuePosition=None,
                     progress=None)
    return changes(job.status, wanted)


# ---- deciding -----------------------------------------------------------------------------------------------------
def next_step(job: JobView, now: int, config: OperatorConfig, *, checked: Checked | None = None,
              slot: Slot = Slot(), attempt: LeaseState | None = None, ended_ms: int | None = None,
              result: RunnerResult | None = None) -> Decision:
    """Everything the operator does to a job goes through here. ``attempt``: the lease of the job's attempt, for a
    job IN_PROGRESS (and for a finished one whose runner still stops); ``ended_ms``: when its last attempt ended."""
    checked = checked or check_spec(job.spec, job.namespace, config)
    if job.deleting:
        return Decision(_lease_over(attempt))  # going away: nothing to write on it
    if job.state in TERMINAL:
        return _finished(job, now, checked.controls, attempt)
    return _active(job, now, config, checked, slot, attempt, ended_ms, result)


def _lease_over(attempt: LeaseState | None) -> tuple[Action, ...]:
    """Forget a lease whose runner reported or vanished (of a job that no longer waits for it)."""
    if attempt is not None and attempt.lease is not None and attempt.kind in (DONE, LAPSED):
        return (EndLease(attempt.lease.id),)
    return ()


def _write(job: JobView, wanted: dict[str, Any], *rest: Action, wake_at: int | None = None) -> Decision:
    patch = changes(job.status, wanted)
    actions: tuple[Action, ...] = ((WriteStatus(patch),) if patch else ()) + tuple(rest)
    return Decision(actions, wake_at=wake_at)


def _first_fields(job: JobView) -> dict[str, Any]:
    """What the first status write records once: when the job was submitted."""
    return {"submittedAt": format_time_ms(submitted_at_ms(job))}


def _active(job: JobView, now: int, config: OperatorConfig, checked: Checked, slot: Slot,
            attempt: LeaseState | None, ended_ms: int | None, result: RunnerResult | None) -> Decision:
    c = checked.controls
    first = _first_fields(job)
    in_flight = job.state == IN_PROGRESS

    if c.cancel:
        # a runner still on it is told to stop at its next heartbeat; its lease ends when it reports
        return _write(
            job,
            desired(job, now, CANCELLED, "Cancelled", "cancelled by spec.cancel", **first, attempts=job.attempts,
                    completedAt=format_time_ms(now), queuePosition=None, progress=None),
            *_lease_over(attempt),
            Emit("Normal", "Cancelled", "cancelled by spec.cancel"),
        )

    if not checked.ok and not in_flight:
        message = checked.describe()
        return _write(
            job,
            desired(job, now, FAILED, "InvalidSpec", message, **first, attempts=job.attempts, error=message,
                    completedAt=format_time_ms(now), queuePosition=None,
                    lastFailure=last_failure("InvalidSpec", message)),
            Emit("Warning", "InvalidSpec", message),
        )

    if in_flight:
        return _in_flight(job, now, config, c, attempt or LeaseState(PENDING), result)
    return _waiting(job, now, config, slot, ended_ms)


def _waiting(job: JobView, now: int, config: OperatorConfig, slot: Slot, ended_ms: int | None) -> Decision:
    """Queued: for the first attempt, or for a retry; offered to runners once admitted."""
    n = job.attempts
    when = retry_at(n, ended_ms, config)
    ready = when is None or now >= when
    if n == 0:
        reason, message = "Queued", QUEUED_MESSAGE
    else:
        failure = job.status.get("lastFailure") or {}
        reason = "Retrying"
        message = _retrying(n, str(failure.get("reason") or "Unknown"), str(failure.get("message") or ""), config)
    offer = (Offer(),) if slot.admit and ready else ()
    if offer and unwritten_while_offered(job, now):
        return Decision(offer, wake_at=submitted_at_ms(job) + QUEUED_WRITE_AFTER_MS)
    wanted = desired(job, now, IN_QUEUE, reason, message, **_first_fields(job), attempts=n,
                     queuePosition=slot.position)
    return _write(job, wanted, *offer, wake_at=None if ready else when)


def unwritten_while_offered(job: JobView, now: int) -> bool:
    """A new job admitted at once is offered to runners without a status: the take writes IN_PROGRESS as its first
    status. Every reader (the gateway, the CLI) already reads a job without a status as IN_QUEUE, so the IN_QUEUE
    write would say nothing new to them; it is made only for a job still untaken ``QUEUED_WRITE_AFTER_MS`` after its
    submission, for ``kubectl`` and its ``submittedAt``. A job held back by admission (a queue position) or waiting
    for a retry is written at once."""
    return job.state is None and job.attempts == 0 and now < submitted_at_ms(job) + QUEUED_WRITE_AFTER_MS


def _in_flight(job: JobView, now: int, config: OperatorConfig, c: Controls, attempt: LeaseState,
               result: RunnerResult | None) -> Decision:
    n = job.attempts
    runner = str(job.status.get("runnerPod") or "")
    if attempt.kind == PENDING:
        return Decision(wake_at=attempt.wake_at)
    lease = attempt.lease
    if attempt.kind == LAPSED:
        lost = _failed_attempt(job, now, config, c, runner_lost(attempt.reason), None, lease)
        return Decision(lost.actions + (RetireRunner(runner),), wake_at=lost.wake_at)
    assert lease is not None
    if attempt.kind == DONE:
        outcome = read_outcome(lease.outcome or {})
        if outcome.failure is not None:
            return _failed_attempt(job, now, config, c, outcome.failure, outcome.report, lease)
        # the attempt's own result.json, whatever the runner names: the operator reads only what it granted
        uri = result_uri(job_location(job, c, config), lease.attempt)
        if result is None or result.uri != uri:
            return Decision(fetch_result=uri)
        if result.problem is not None:
            return _failed_attempt(job, now, config, c, Failure(
                "ResultTooLarge" if result.too_large else "ResultUnreadable",
                f"the runner succeeded but its result cannot be used: {result.problem}",
                retriable=not result.too_large, exit_code=0), outcome.report, lease)
        return _completed(job, now, outcome.report, result, lease)

    # running: the deadline counts from the assignment
    started = parse_time_ms(job.status.get("startedAt")) or now
    deadline = started + c.timeout_seconds * 1000
    if now >= deadline:
        return _failed_attempt(job, now, config, c, Failure(
            "DeadlineExceeded", f"the job did not finish within timeoutSeconds ({c.timeout_seconds} s) of reaching "
            f"its runner", retriable=False, timed_out=True), None, None)
    wanted = desired(job, now, IN_PROGRESS, "Running", _running(n, runner), **_first_fields(job), attempts=n,
                     runnerPod=runner, queuePosition=None)
    wake = min(w for w in (attempt.wake_at, deadline) if w is not None)
    progress = {"step": lease.step, "steps": lease.steps} if lease.step is not None and lease.steps else None
    if progress is not None and progress != job.status.get("progress"):
        due = (lease.written_ms or 0) + PROGRESS_INTERVAL_MS
        if now >= due:
            wanted["progress"] = progress
        else:
            wake = min(wake, due)
    return _write(job, wanted, wake_at=wake)


def _running(n: int, runner: str) -> str:
    return f"attempt {n} running on runner {runner}"


def _retrying(n: int, reason: str, message: str, config: OperatorConfig) -> str:
    """The same words while the retry waits as when it was decided: nothing to write in between."""
    delay = config.retry_backoff.delay(n)
    return f"attempt {n} failed, retrying after {delay:g} s: {error_text(reason, message)}"


def _ran_for(job: JobView, report: TerminationMessage | None, now: int) -> dict[str, Any]:
    """The RunPod timings of a job whose runner started and then failed or ran out of time (RunPod reports
    delayTime and executionTime on a failed job too)."""
    assigned = parse_time_ms(job.status.get("startedAt"))
    if assigned is None:
        return {}
    return timings(submitted_at_ms(job), report or TerminationMessage(), assigned, now).as_status()


def _completed(job: JobView, now: int, report: TerminationMessage, result: RunnerResult, lease: Lease) -> Decision:
    assigned = parse_time_ms(job.status.get("startedAt")) or now
    t = timings(submitted_at_ms(job), report, assigned, now)
    output = bounded_output(result.output, output_budget(job))
    fields: dict[str, Any] = {
        **_first_fields(job),
        "output": output,
        **t.as_status(),
        "result": result.uri,
        "completedAt": format_time_ms(report.finishedAt or now),
        "queuePosition": None,
        "error": None,
        "progress": None,
    }
    images = len(output["images"])
    message = f"{images} image(s) in {t.execution_time} ms after {t.delay_time} ms of delay"
    if output.get("omitted"):
        message += f"; {', '.join(output['omitted'])} only in {result.uri} (over the status's budget)"
    return _write(job, desired(job, now, COMPLETED, "Completed", message, **fields), EndLease(lease.id),
                  Emit("Normal", "Completed", message))


def _failed_attempt(job: JobView, now: int, config: OperatorConfig, c: Controls, failure: Failure,
                    report: TerminationMessage | None, ended: Lease | None) -> Decision:
    """Attempt n ended without a result: retry it, or end the job. ``ended``: its lease, forgotten once this is
    written (None: the runner still works on it and is told to stop)."""
    n = job.attempts
    first = _first_fields(job)
    record = last_failure(failure.reason, failure.message, failure.exit_code)
    end: tuple[Action, ...] = (EndLease(ended.id),) if ended is not None else ()
    message = error_text(failure.reason, failure.message)
    final = dict(**first, attempts=n, completedAt=format_time_ms(now), queuePosition=None, progress=None,
                 lastFailure=record)

    if failure.cancelled:
        return _write(job, desired(job, now, CANCELLED, "Cancelled", message, **final), *end,
                      Emit("Normal", "Cancelled", message))
    if failure.timed_out:
        return _write(job, desired(job, now, TIMED_OUT, "TimedOut", message, **final, **_ran_for(job, report, now),
                                   error=message), *end, Emit("Warning", "TimedOut", message))
    if failure.retriable and n < 1 + c.retries:
        message = _retrying(n, failure.reason, failure.message, config)
        return _write(
            job,
            desired(job, now, IN_QUEUE, "Retrying", message, **first, attempts=n, runnerPod=None,
                    queuePosition=None, progress=None, lastFailure=record),
            *end,
            Emit("Warning", "Retrying", message),
            wake_at=retry_at(n, now, config),
        )
    if failure.retriable:
        message += f" (after {n} attempt{'s' if n > 1 else ''})"
    return _write(job, desired(job, now, FAILED, failure.reason, message, **final, **_ran_for(job, report, now),
                               error=message), *end, Emit("Warning", failure.reason, message))


def staging_refused(job: JobView, now: int, config: OperatorConfig, checked: Checked, reason: str,
                    message: str) -> Decision:
    """Staging the job's input was refused for a reason another try will not cure (no such bucket): FAILED."""
    return _failed_attempt(job, now, config, checked.controls, Failure(reason, message, retriable=False), None,
                           None)


def status_refused(job: JobView, now: int, config: OperatorConfig, checked: Checked, ended: Lease | None,
                   message: str, result: str | None) -> Decision:
    """The API server refused the job's status for good (too large for etcd, or invalid): the job ends FAILED with
    that reason, its runner's lease ended and its slot freed, instead of the write being retried forever.
    ``result``: the runner's result.json, when the refused status was its answer."""
    where = f"; the runner's answer is in {result}" if result else ""
    return _failed_attempt(job, now, config, checked.controls, Failure(
        "StatusRefused", f"the API server refused the job's status ({message[:2000]}){where}", retriable=False),
        None, ended)


def _finished(job: JobView, now: int, c: Controls, attempt: LeaseState | None) -> Decision:
    """A finished job: observedGeneration kept current, its webhook delivered, deleted after its TTL (not before
    its webhook is delivered or given up: the delivery is recorded on it); a runner that still stopped on it has its
    lease forgotten once it reports (or vanishes)."""
    actions: list[Action] = list(_lease_over(attempt))
    if job.status.get("observedGeneration") != job.generation:
        conds = [{**cond, "observedGeneration": job.generation} for cond in job.status.get("conditions") or []]
        actions.insert(0, WriteStatus({"observedGeneration": job.generation, "conditions": conds}))
    wake_at = attempt.wake_at if attempt is not None else None
    if owed(job.spec, job.status):
        return Decision((*actions, Deliver()), wake_at=wake_at)  # each record written brings the job back here
    ttl = c.ttl_seconds_after_finished
    completed = parse_time_ms(job.status.get("completedAt"))
    if ttl is not None and completed is not None:
        expires = completed + ttl * 1000
        if now >= expires:
            return Decision((*actions, DeleteJob()))
        wake_at = expires if wake_at is None else min(wake_at, expires)
    return Decision(tuple(actions), wake_at=wake_at)
