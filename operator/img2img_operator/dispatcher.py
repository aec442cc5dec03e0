"""The task that decides: a pass over every job and every pool, then sleep until an event, a deadline, or the tick.

A pass: each job's verdict (``verdicts``: reached per generation in a worker thread, its input staged with it; a
job whose verdict is not in yet is left for a later pass) → the attempt of each job from its lease → admission over
all jobs (``queue.admit``) → ``lifecycle.next_step`` per job → the actions, jobs in parallel (bounded), each job's
actions in order → the jobs offered to runners (admitted) → each pool scaled (``pool_scaling``) and its status
written. A job whose action failed is left alone for a back-off (1 s doubling to 60 s) while the others
go on. The runner endpoint (``runner_api``) hands offered jobs to runners and records leases; a runner's ``done``
has its job decided at once (``settle``), so that the runner hears "accepted" only once the end is in the status.
A finished job whose webhook is owed has its delivery started (``webhooks``), which runs beside the passes.

Before the first pass the cache is filled from full lists of runner pods, pools and jobs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from img2img.api.pool import POOL_API_VERSION, POOL_KIND, RunnerPool
from img2img.api.status import TERMINAL
from img2img.api.times import format_time_ms

from .cache import Cache
from .config import OperatorConfig
from .controls import Checked, check_spec, controls_from
from .kube import Conflict, Gone, Kube, Refused, api_message
from .leases import DONE, LAPSED, LeaseState, LeaseTable, lease_state
from .lifecycle import (
    IN_PROGRESS,
    IN_QUEUE,
    Decision,
    DeleteJob,
    Deliver,
    EndLease,
    Emit,
    Offer,
    RetireRunner,
    Slot,
    WriteStatus,
    next_step,
    queue_entry,
    staging_refused,
    status_refused,
)
from .metrics import Metrics
from .pool_scaling import (
    Pool,
    Runner,
    all_pools,
    plan_scale,
    pool_status,
    problem_status,
    queue_shares,
    status_write_at,
)
from .queue import Limits, admit
from .report import check_result
from .routing import Candidate
from .runner_pods import build_pool_runner_pod, runner_name
from .runners import Registry, overdue_start, runner_view, why_ended
from .staging import Staging, StagingRefused, input_document, input_uri
from .status import applied
from .verdicts import Key, Verdicts, already_checked, key_of, without_input
from .views import JobView, PodView
from .webhooks import Webhooks

log = logging.getLogger("img2img_operator.dispatcher")

ERROR_BACKOFF_MS = (1_000, 2_000, 4_000, 8_000, 15_000, 30_000, 60_000)
# a pool whose runners end before they ask for work gets its next runner after this (by failures in a row)
CRASH_BACKOFF_MS = (5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 300_000)
BATCH_SECONDS = 0.05  # after a wake-up, let a burst of events land before the pass
VALIDATIONS = 4  # verdicts reached at once (each a read of the job when its input is not held, a check, a staging)


def limits_of(config: OperatorConfig) -> Limits:
    policy = config.policy
    return Limits(
        max_concurrent=config.queue.max_concurrent,
        max_concurrent_per_namespace=policy.default.max_concurrent,
        max_concurrent_by_namespace={name: policy.of(name).max_concurrent for name in policy.namespaces},
        max_concurrent_per_class={name: c.max_concurrent for name, c in config.gpu_classes.items()},
    )


def _ctx(job: JobView, attempt: int | None = None) -> dict[str, Any]:
    return {"job": job.name, "namespace": job.namespace, "uid": job.uid, "attempt": attempt}


def runner_pool_resources(bodies: list[Any]) -> tuple[list[RunnerPool], dict[str, str]]:
    """The RunnerPools as the API types read them; the ones that do not read, by name, with the reason."""
    pools, problems = [], {}
    for body in bodies:
        meta = body.get("metadata") or {}
        try:
            pools.append(RunnerPool.model_validate({"apiVersion": POOL_API_VERSION, "kind": POOL_KIND,
                                                    "metadata": meta, "spec": body.get("spec") or {}}))
        except ValueError as e:
            problems[meta.get("name", "")] = f"spec: {e}"
    return pools, problems


class Dispatcher:
    def __init__(self, config: OperatorConfig, cache: Cache, kube: Kube, staging: Staging, metrics: Metrics,
                 leases: LeaseTable, registry: Registry, key: bytes, webhooks: Webhooks,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None):
        self.config = config
        self.cache = cache
        self.kube = kube
        self.staging = staging
        self.metrics = metrics
        self.leases = leases
        self.registry = registry
        self.key = key  # signs runner tokens
        self.webhooks = webhooks
        self.clock = clock
        self.rng = rng or random.SystemRandom()
        self.wake = asyncio.Event()
        self.synced = False
        self.last_pass: float | None = None  # monotonic time of the last finished pass
        self.adopt_until = 0  # ms: until then a job IN_PROGRESS may still be adopted by its runner's heartbeat
        self.pools: dict[str, Pool] = {}  # by name: what the runner endpoint serves
        self._offers: dict[str, list[Candidate]] = {}  # GPU class → jobs offered to its runners, in queue order
        self._offers_changed = asyncio.Event()
        self.verdicts = Verdicts()
        cache.on_input = self.verdicts.arrived  # inputs arriving are held (within a budget) until their verdict
        self._validating: dict[Key, asyncio.Task] = {}  # verdicts being reached
        self._validators = asyncio.Semaphore(VALIDATIONS)
        self._offered: set[Key] = set()  # (uid, generation) whose Offer ran: its IN_QUEUE written
        self._errors: dict[str, tuple[int, int]] = {}  # uid → (failures in a row, not before ms)
        # finished jobs with nothing to do until they change, or until ``wake_at`` (a TTL): uid → (wake_at ms,
        # state, gpu class). A pass builds no view of them: with thousands of finished jobs present, a pass costs
        # what the unfinished ones cost.
        self._settled: dict[str, tuple[int | None, str, str]] = {}
        self._retiring: set[str] = set()  # runners being removed: no more work for them
        self._failed_before_take: dict[str, list[tuple[str, str, int]]] = {}  # pool → (runner, why, when)
        self._ended_pods: set[str] = set()  # runner pods seen ended (and being removed)
        self._pool_errors: dict[str, int] = {}  # pool → not before ms (creating its runners failed)
        self._pool_written: dict[str, int] = {}  # pool → when its status was last written (ms)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    @property
    def lease_ms(self) -> int:
        return int(self.config.runners.lease_seconds * 1000)

    def poke(self) -> None:
        self.wake.set()

    # ---- what the runner endpoint reads -----------------------------------------------------------------------
    def candidates(self, gpu_class: str) -> list[Candidate]:
        """The jobs offered to runners of ``gpu_class``, in queue order, still waiting and free to take."""
        out = []
        for candidate in self._offers.get(gpu_class, ()):
            job = self.cache.job_view(candidate.uid)
            if (job is not None and job.state in (None, IN_QUEUE) and not job.deleting
                    and job.spec.get("cancel") is not True and not self.leases.holds(candidate.uid)):
                out.append(candidate)
        return out

    def retiring(self, runner: str) -> bool:
        return runner in self._retiring

    async def offers_changed(self, timeout: float) -> None:
        """Wait until the offers (or the runners that may take them) change, at most ``timeout`` seconds."""
        event = self._offers_changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def notify_takes(self) -> None:
        """Waiting takes look at the offers again."""
        self._offers_changed.set()
        self._offers_changed = asyncio.Event()

    # ---- the loop ---------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Act, forever: started once the reflectors have listed jobs, runner pods and pools (the cache is whole)."""
        self.adopt_until = self.now_ms() + self.lease_ms
        self.synced = True
        log.info("dispatcher started: %d jobs, %d runner pods", len(self.cache), self.cache.pod_count())
        while True:
            self.wake.clear()
            wake_at: int | None = None
            started = time.monotonic()
            try:
                wake_at = await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatcher pass failed")
            self.last_pass = time.monotonic()
            self.metrics.pass_seconds.observe(self.last_pass - started)
            timeout = self.config.timing.tick_seconds
            if wake_at is not None:
                timeout = min(timeout, max(0.0, (wake_at - self.now_ms()) / 1000))
            if timeout > 0 and not self.wake.is_set():
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
            await asyncio.sleep(BATCH_SECONDS)

    # ---- one pass ---------------------------------------------------------------------------------------------
    def check(self, job: JobView) -> Checked | None:
        """The job's verdict; None until it is reached (``_validate`` started now, unless under way or backing off
        after a failure)."""
        key = key_of(job)
        checked = self.verdicts.get(key) or without_input(job, self.config)
        if checked is None and key not in self._validating and self._errors.get(job.uid, (0, 0))[1] <= self.now_ms():
            self._validating[key] = asyncio.create_task(self._validate(job), name=f"validate {job.key}")
        return checked

    async def _validate(self, job: JobView) -> None:
        """Reach the job's verdict off the event loop: its input as it arrived (``verdicts``), else read again; the
        spec checked in a worker thread, its images decoded unless an earlier verdict on this generation did that
        (``already_checked``); a valid job's input.json staged, unless that verdict did. Then a pass decides on it."""
        key = key_of(job)
        step = "read_job"
        try:
            async with self._validators:
                spec_input = self.verdicts.take_input(key)
                if spec_input is None:
                    body = await self.kube.read_job(job.namespace, job.name)
                    fresh = JobView.from_body(body) if body is not None else None
                    if fresh is None or fresh.uid != job.uid:
                        self.cache.forget_job(job.uid)
                        return
                    if fresh.generation != job.generation:  # it changed: the new generation's verdict is due
                        self.cache.put_job(body)
                        return
                    spec_input = fresh.spec.get("input")
                step = "validate"
                decode = not already_checked(job)
                checked = await asyncio.to_thread(check_spec, {**job.spec, "input": spec_input}, job.namespace,
                                                  self.config, decode)
                if checked.ok and decode:
                    step = "stage_input"
                    try:
                        await self.staging.stage_input(input_uri(job, checked.controls, self.config),
                                                       input_document(job, spec_input))
                    except StagingRefused as refused:
                        log.warning("cannot stage the job: %s", refused.message, extra=_ctx(job))
                        failed = staging_refused(job, self.now_ms(), self.config, checked, refused.reason,
                                                 refused.message)
                        await self._guarded(asyncio.Semaphore(1), job, checked, Slot(), None, failed)
                        return
        except Exception as e:
            self._back_off(job, step, e)
            return
        finally:
            self._validating.pop(key, None)
        self.verdicts.record(key, checked)
        self._errors.pop(job.uid, None)
        self.poke()

    def _still_settled(self, uid: str, now: int) -> bool:
        settled = self._settled.get(uid)
        return settled is not None and (settled[0] is None or settled[0] > now) and not self.leases.holds(uid)

    def attempt(self, job: JobView, now: int) -> LeaseState | None:
        """The lease of the job's attempt: for a job IN_PROGRESS, and for any job whose runner still holds it."""
        lease = self.leases.of_job(job.uid)
        if lease is None and job.state != IN_PROGRESS:
            return None
        runner = lease.runner if lease is not None else str(job.status.get("runnerPod") or "")
        pod = self.cache.pod(runner)
        return lease_state(lease, now, self.lease_ms, pod is None or pod.finished, self.adopt_until)

    def _ended(self, job: JobView) -> int | None:
        return self.leases.ended_at(job.uid, job.attempts)

    async def pass_once(self) -> int | None:
        now = self.now_ms()
        for uid in self.cache.take_changed():
            self._settled.pop(uid, None)
        jobs = self.cache.snapshot(skip=lambda uid: self._still_settled(uid, now))
        self.verdicts.keep_only(key_of(job) for job in jobs)
        items: list[tuple[JobView, Checked]] = []
        unchecked: list[JobView] = []  # decided on once their verdict is in
        next_wake: int | None = None
        for job in jobs:
            checked = self.check(job)
            if checked is not None:
                items.append((job, checked))
                continue
            unchecked.append(job)
            not_before = self._errors.get(job.uid, (0, 0))[1]
            if not_before > now:  # its validation failed: tried again then
                next_wake = _min(next_wake, not_before)
        for wake_at, _, _ in self._settled.values():
            next_wake = _min(next_wake, wake_at)

        entries = [e for e in (queue_entry(job, now, self.config, checked, self.leases.holds(job.uid),
                                           self._ended(job)) for job, checked in items) if e is not None]
        admission = admit(entries, limits_of(self.config))
        admitted = set(admission.admit)

        semaphore = asyncio.Semaphore(self.config.dispatch_concurrency)
        work = []
        for job, checked in items:
            if self.leases.holds(job.uid) and self.leases.of_job(job.uid) is None:
                continue  # a take is recording its assignment: decided when it is done
            failures, not_before = self._errors.get(job.uid, (0, 0))
            if not_before > now:
                next_wake = _min(next_wake, not_before)
                continue
            slot = Slot(admit=job.uid in admitted, position=admission.positions.get(job.uid))
            attempt = self.attempt(job, now)
            decision = next_step(job, now, self.config, checked=checked, slot=slot, attempt=attempt,
                                 ended_ms=self._ended(job))
            next_wake = _min(next_wake, decision.wake_at)
            if decision.actions == (Offer(),) and key_of(job) in self._offered:
                continue  # offered already: a waiting job costs a pass no task
            if decision.actions or decision.fetch_result:
                work.append(self._guarded(semaphore, job, checked, slot, attempt, decision))
            elif job.state in TERMINAL and not job.deleting and attempt is None:
                self._settled[job.uid] = (decision.wake_at, job.state or "", checked.controls.gpu_class)
        next_wake = _min(next_wake, self._end_leases_of_gone_jobs(now))
        if work:
            await asyncio.gather(*work)

        by_uid = {job.uid: (job, checked) for job, checked in items}
        self._set_offers([by_uid[uid] for uid in admission.admit if uid in by_uid])
        next_wake = _min(next_wake, await self._scale_pools(now, [by_uid[uid] for uid in admission.admit
                                                                 if uid in by_uid]))

        states = [(job.state or "NEW", checked.controls.gpu_class) for job, checked in items
                  if job.uid not in self._settled]
        states += [(state, gpu_class) for _, state, gpu_class in self._settled.values()]
        states += [(job.state or "NEW", controls_from(job.spec, self.config).gpu_class) for job in unchecked]
        waiting = Counter(e.gpu_class for e in entries if e.uid in admission.positions)
        self.metrics.observe_jobs(states, waiting)
        return next_wake

    def _end_leases_of_gone_jobs(self, now: int) -> int | None:
        """A deleted job's runner is told to stop (``stop_reason``); its lease goes when it reports or vanishes."""
        wake = None
        for lease in self.leases:
            if self.cache.job(lease.uid) is not None:
                continue
            pod = self.cache.pod(lease.runner)
            state = lease_state(lease, now, self.lease_ms, pod is None or pod.finished, self.adopt_until)
            if state.kind == "running":
                wake = _min(wake, state.wake_at)
            else:
                self.leases.end(lease.uid, lease.id, now)
                self.leases.forget(lease.uid)
        return wake

    def _set_offers(self, admitted: list[tuple[JobView, Checked]]) -> None:
        offers: dict[str, list[Candidate]] = {}
        for job, checked in admitted:
            if key_of(job) in self._offered and checked.needs is not None:
                offers.setdefault(checked.controls.gpu_class, []).append(Candidate(job.uid, checked.needs.models))
        self._offered = {(uid, generation) for uid, generation in self._offered
                         if (job := self.cache.job_view(uid)) is not None and job.generation == generation
                         and job.state not in TERMINAL}
        if offers != self._offers:
            self._offers = offers
            self.notify_takes()

    async def settle(self, uid: str) -> None:
        """Decide on one job now and act (a runner reported its attempt's end and waits for the answer)."""
        now = self.now_ms()
        job = self.cache.job_view(uid)
        if job is None:
            self._end_leases_of_gone_jobs(now)
            return
        if job.state not in TERMINAL and job.state != IN_PROGRESS:
            return
        checked = self.check(job)
        if checked is None:  # after a restart, before its verdict is in: the runner asks again
            return
        attempt = self.attempt(job, now)
        decision = next_step(job, now, self.config, checked=checked, attempt=attempt, ended_ms=self._ended(job))
        if decision.actions or decision.fetch_result:
            await self._guarded(asyncio.Semaphore(1), job, checked, Slot(), attempt, decision)

    async def _guarded(self, semaphore: asyncio.Semaphore, job: JobView, checked: Checked, slot: Slot,
                       attempt: LeaseState | None, decision: Decision) -> None:
        async with semaphore:
            step = "decide"
            try:
                step = await self._act(job, checked, slot, attempt, decision)
                self._errors.pop(job.uid, None)
            except Conflict:
                # Decided on a stale job: read it again and decide again (soon, not after a back-off).
                fresh = await self._quietly(self.kube.read_job(job.namespace, job.name))
                if isinstance(fresh, dict):
                    self.cache.put_job(fresh)
                self.poke()
            except Gone:
                self.cache.forget_job(job.uid)
            except Exception as e:
                self._back_off(job, step, e)

    def _back_off(self, job: JobView, step: str, e: Exception) -> None:
        """The job is left alone for a while after ``step`` failed: longer with each failure in a row."""
        failures = self._errors.get(job.uid, (0, 0))[0] + 1
        delay = ERROR_BACKOFF_MS[min(failures, len(ERROR_BACKOFF_MS)) - 1]
        self._errors[job.uid] = (failures, self.now_ms() + delay)
        self.metrics.error(step)
        log.warning("%s failed (%s: %s); trying again in %.0f s", step, type(e).__name__, e, delay / 1000,
                    extra=_ctx(job, job.attempts or None))

    async def _act(self, job: JobView, checked: Checked, slot: Slot, attempt: LeaseState | None,
                   decision: Decision, refusable: bool = True) -> str:
        """Carry out the decision's actions in order; the step that was under way. A status the API server refuses
        for good ends the job FAILED (``refusable``: once; a refused ending raises, and the job backs off)."""
        if decision.fetch_result:
            uri = decision.fetch_result
            read = await self.staging.read_result(uri)
            result = await asyncio.to_thread(check_result, uri, *(read or (None, None)))  # megabytes of JSON
            expiry = self.config.s3.presign_expiry_seconds
            if result.problem is None and expiry:
                result = result.signed([self.staging.presign_get(u, expiry) for u in result.images],
                                       format_time_ms(self.now_ms() + expiry * 1000))
            decision = next_step(job, self.now_ms(), self.config, checked=checked, slot=slot, attempt=attempt,
                                 ended_ms=self._ended(job), result=result)
            if decision.fetch_result:
                return "read_result"
        current = job
        step = "decide"
        for action in decision.actions:
            if isinstance(action, WriteStatus):
                step = "write_status"
                try:
                    body = await self.kube.patch_job_status(job.namespace, job.name, action.patch,
                                                            current.resource_version, current.status)
                except Refused as refused:
                    if not refusable or current.state in TERMINAL:
                        raise
                    log.warning("the API server refused the job's status for good: %s", refused, extra=_ctx(job))
                    ended = attempt.lease if attempt is not None and attempt.kind in (DONE, LAPSED) else None
                    failed = status_refused(current, self.now_ms(), self.config, checked, ended, str(refused),
                                            action.patch.get("result"))
                    return await self._act(current, checked, slot, attempt, failed, refusable=False)
                self.metrics.observe_status_write(current.status, action.patch)
                self.cache.put_job(body)
                lease = self.leases.of_job(job.uid)
                if lease is not None:
                    lease.written_ms = self.now_ms()
                self._log_transition(current, action.patch)
                current = JobView.from_body(body, job.first_seen_ms)
            elif isinstance(action, Offer):
                self._offered.add(key_of(job))  # its input was staged when its verdict was reached
            elif isinstance(action, EndLease):
                self.leases.end(job.uid, action.lease, self.now_ms())
                self.poke()  # the runner is free: the pool's state moves
            elif isinstance(action, RetireRunner):
                pod = self.cache.pod(action.runner)
                if self.leases.working_elsewhere(action.runner, job.uid, self.now_ms(), self.lease_ms):
                    log.info("runner %s never got this attempt and works on another job: kept", action.runner,
                             extra=_ctx(job))
                elif pod is not None and not pod.deleting:
                    self._retiring.add(pod.name)
                    log.warning("runner %s lost its lease: removing it", pod.name, extra=_ctx(job))
                    await self._remove_runner(pod)
            elif isinstance(action, Deliver):
                self.webhooks.ensure(current)
            elif isinstance(action, DeleteJob):
                step = "delete_job"
                await self.kube.delete_job(job.namespace, job.name, job.uid)
                self.metrics.write("job_delete")
                log.info("deleted the job: ttlSecondsAfterFinished has passed", extra=_ctx(job))
            elif isinstance(action, Emit):
                step = "post_event"
                try:
                    await self.kube.post_event(
                        {"metadata": {"name": job.name, "namespace": job.namespace, "uid": job.uid}},
                        action.type, action.reason, action.message)
                    self.metrics.write("event")
                except Exception as e:  # events are a convenience; the status is the record
                    log.debug("cannot post event %s: %s", action.reason, e, extra=_ctx(job))
        return step

    def _log_transition(self, job: JobView, patch: dict[str, Any]) -> None:
        after = applied(job.status, patch)
        attempt = after.get("attempts")
        before_state, after_state = job.state, after.get("status")
        if before_state != after_state or patch.get("attempts") is not None:
            level = logging.WARNING if after_state in ("FAILED", "TIMED_OUT") else logging.INFO
            detail = after.get("error") or (after.get("lastFailure") or {}).get("message") if after_state in (
                "FAILED", "TIMED_OUT") else ""
            log.log(level, "%s → %s%s", before_state or "new", after_state, f": {detail}" if detail else "",
                    extra=_ctx(job, attempt))

    # ---- pools ------------------------------------------------------------------------------------------------
    async def _scale_pools(self, now: int, admitted: list[tuple[JobView, Checked]]) -> int | None:
        """Every pool to its planned size, its status written; the next moment a plan changes by itself."""
        resources, unreadable = runner_pool_resources(self.cache.pools())
        pools, problems = all_pools(resources, self.config)
        problems.update(unreadable)
        self.pools = {p.name: p for p in pools}
        busy_runners = {lease.runner for lease in self.leases if lease.outcome is None} | self.leases.claimers()
        wait_ms = int(self.config.runners.take_wait_seconds * 1000)

        runners: dict[str, list[Runner]] = {p.name: [] for p in pools}
        work = []
        pods = self.cache.pods()
        for pod in pods:
            seen = self.registry.get(pod.name)
            if pod.finished:
                if pod.name not in self._ended_pods:
                    self._ended_pods.add(pod.name)
                    if seen is None:  # it ended before it ever asked for work
                        self._failed_before_take.setdefault(pod.pool, []).append((pod.name, why_ended(pod), now))
                        log.warning("runner %s of pool %s ended before it asked for work: %s", pod.name, pod.pool,
                                    why_ended(pod))
                if not pod.deleting:
                    work.append(self._remove_runner(pod, grace=0))
                continue
            if pod.deleting:
                continue
            overdue = overdue_start(pod, seen, now, self.config.runners.max_pending_seconds)
            if overdue is not None:  # counts as a runner that ended before it asked for work
                self._ended_pods.add(pod.name)
                self._failed_before_take.setdefault(pod.pool, []).append((pod.name, overdue, now))
                self._retiring.add(pod.name)
                log.warning("runner %s of pool %s %s", pod.name, pod.pool, overdue)
                work += [self._remove_runner(pod, grace=0), self._pool_event(pod, "RunnerNotStarted",
                                                                             f"runner {pod.name} {overdue}")]
                continue
            view = runner_view(pod, seen, pod.name in busy_runners, now, wait_ms)
            if view is None:
                continue
            if pod.pool not in runners:
                if view.state != "busy":  # its pool is gone (or an implicit pool was replaced by a RunnerPool)
                    work.append(self._remove_runner(pod))
                continue
            runners[pod.pool].append(view)
        present = {pod.name for pod in pods}
        for name in self.registry.names():
            if name not in present:
                self.registry.forget(name)
        self._retiring &= present
        self._ended_pods &= present

        busy_by_pool = {name: sum(r.state == "busy" for r in rs) for name, rs in runners.items()}
        queued: dict[str, int] = {}
        for gpu_class in {p.gpu_class for p in pools}:
            waiting = [checked.needs.models if checked.needs else frozenset()
                       for job, checked in admitted if checked.controls.gpu_class == gpu_class]
            queued.update(queue_shares(waiting, [p for p in pools if p.gpu_class == gpu_class], busy_by_pool))

        wake = None
        for pool in pools:
            mine = runners[pool.name]
            if any(r.state != "starting" for r in mine):
                self._failed_before_take.pop(pool.name, None)  # it has a ready runner again
            plan = plan_scale(pool, mine, queued.get(pool.name, 0), now)
            wake = _min(wake, plan.wake_at)
            create = plan.create
            failed = self._failed_before_take.get(pool.name, [])
            if create and failed:  # its runners crash before they take: one at a time, slower and slower
                not_before = failed[-1][2] + CRASH_BACKOFF_MS[min(len(failed), len(CRASH_BACKOFF_MS)) - 1]
                create = 0 if now < not_before or any(r.state == "starting" for r in mine) else 1
                if now < not_before:
                    wake = _min(wake, not_before)
            if create and self._pool_errors.get(pool.name, 0) > now:
                wake = _min(wake, self._pool_errors[pool.name])
                create = 0
            work += [self._create_runner(pool, now) for _ in range(create)]
            for name in plan.remove:
                pod = self.cache.pod(name)
                if pod is not None:
                    self._retiring.add(name)
                    work.append(self._remove_runner(pod))
        if work:
            await asyncio.gather(*work)

        wake = _min(wake, await self._write_pool_statuses(pools, problems, runners, queued, now))
        self.metrics.observe_pools(
            Counter((name, r.state) for name, rs in runners.items() for r in rs), queued)
        return wake

    async def _create_runner(self, pool: Pool, now: int) -> None:
        name = runner_name(pool.name, self.rng)
        try:
            body = await self.kube.create_pod(build_pool_runner_pod(pool, name, self.key, self.config))
        except Exception as e:
            self._pool_errors[pool.name] = now + ERROR_BACKOFF_MS[2]
            self.metrics.error("create_runner")
            log.warning("cannot create a runner for pool %s: %s", pool.name, api_message(e))
            return
        if body is None:  # the name is taken (by someone else's pod: never adopted); another name next pass
            log.warning("cannot create runner %s for pool %s: a pod of that name exists", name, pool.name)
            return
        self.cache.put_pod(body)
        self.metrics.write("pod_create")
        log.info("created runner %s for pool %s", name, pool.name)

    async def _remove_runner(self, pod: PodView, grace: int | None = None) -> None:
        grace = self.config.runner.termination_grace_period_seconds if grace is None else grace
        try:
            body = await self.kube.delete_pod(pod.namespace, pod.name, pod.uid or None, grace)
        except Exception as e:
            self.metrics.error("remove_runner")
            log.warning("cannot remove runner %s: %s", pod.name, e)
            return
        self.metrics.write("pod_delete")
        if body is not None:
            self.cache.put_pod(body)
        log.info("removing runner %s of pool %s", pod.name, pod.pool)

    async def _pool_event(self, pod: PodView, reason: str, message: str) -> None:
        """A Warning event on the runner's RunnerPool (on the pod itself for an implicit pool: it has no object)."""
        pool = self.pools.get(pod.pool)
        if pool is not None and pool.uid:
            about = {"apiVersion": POOL_API_VERSION, "kind": POOL_KIND,
                     "metadata": {"name": pool.name, "namespace": self.config.runners.namespace, "uid": pool.uid}}
        else:
            about = {"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid}}
        try:
            await self.kube.post_event(about, "Warning", reason, message)
            self.metrics.write("event")
        except Exception as e:  # events are a convenience; the pool's status is the record
            log.debug("cannot post event %s: %s", reason, e)

    async def _write_pool_statuses(self, pools: list[Pool], problems: dict[str, str],
                                   runners: dict[str, list[Runner]], queued: dict[str, int], now: int) -> int | None:
        """Each pool's status written if it changed (``status_write_at``); the next moment one is due."""
        bodies = {(b.get("metadata") or {}).get("name"): b for b in self.cache.pools()}
        self._pool_written = {name: ms for name, ms in self._pool_written.items() if name in bodies}
        wake = None
        for name, body in bodies.items():
            stored = body.get("status") or {}
            generation = (body.get("metadata") or {}).get("generation")
            previous = stored.get("conditions") or []
            if name in problems:
                wanted = problem_status(problems[name], now, generation=generation, previous_conditions=previous)
            elif name in self.pools:
                pool = self.pools[name]
                failed = [(runner, why) for runner, why, _ in self._failed_before_take.get(name, [])][-3:]
                wanted = pool_status(pool, runners[name], queued.get(name, 0), now, generation=generation,
                                     previous_conditions=previous, failed_before_take=failed)
            else:
                continue
            at = status_write_at(wanted, stored, self._pool_written.get(name), now)
            if at is None or at > now:
                wake = _min(wake, at)
                continue
            try:
                fresh = await self.kube.patch_pool_status(self.config.runners.namespace, name, wanted)
                self.cache.put_pool(fresh)
                self._pool_written[name] = now
                self.metrics.write("pool_status")
            except Gone:
                pass
            except Exception as e:
                self.metrics.error("pool_status")
                log.warning("cannot write the status of pool %s: %s", name, e)
        return wake

    @staticmethod
    async def _quietly(coro: Any) -> Any:
        try:
            return await coro
        except Exception as e:
            return e


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)

