"""The one task that acts: a pass over every job, then sleep until an event, a deadline, or the tick.

A pass: check each job's spec (memoized per generation) → admission over all jobs (``queue.admit``) →
``lifecycle.next_step`` per job → the actions, jobs in parallel (bounded), each job's actions in order. The pass
ends when all its actions have; the next pass sees their results (write responses go into the cache at once).
A job whose action failed is left alone for a back-off (1 s doubling to 60 s) while the others go on.

Before the first pass the cache is filled from a full list of pods, then jobs: the first decisions see every pod
that exists, so an existing pod is adopted and never taken for missing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from img2img.api.status import TERMINAL

from .cache import Cache, kept_of_job
from .config import OperatorConfig
from .controls import Checked, check_job
from .kube import Conflict, Gone, Kube
from .lifecycle import (
    Decision,
    DeleteJob,
    Emit,
    Slot,
    StartRunner,
    StopRunner,
    WriteStatus,
    live_pods,
    next_step,
    progress,
    queue_entry,
    start_refused,
)
from .metrics import Metrics
from .placement import Placement, StartRefused
from .queue import Limits, admit
from .report import check_result
from .staging import Staging
from .status import applied
from .views import JobView, PodView

log = logging.getLogger("img2img_operator.dispatcher")

ERROR_BACKOFF_MS = (1_000, 2_000, 4_000, 8_000, 15_000, 30_000, 60_000)
BATCH_SECONDS = 0.05  # after a wake-up, let a burst of events land before the pass


def limits_of(config: OperatorConfig) -> Limits:
    return Limits(
        max_concurrent=config.queue.max_concurrent,
        max_concurrent_per_namespace=config.queue.max_concurrent_per_namespace,
        max_concurrent_per_class={name: c.max_concurrent for name, c in config.gpu_classes.items()},
    )


def _ctx(job: JobView, attempt: int | None = None) -> dict[str, Any]:
    return {"job": job.name, "namespace": job.namespace, "uid": job.uid, "attempt": attempt}


class Dispatcher:
    def __init__(self, config: OperatorConfig, cache: Cache, kube: Kube, placement: Placement, staging: Staging,
                 metrics: Metrics, clock: Callable[[], float] = time.time):
        self.config = config
        self.cache = cache
        self.kube = kube
        self.placement = placement
        self.staging = staging
        self.metrics = metrics
        self.clock = clock
        self.wake = asyncio.Event()
        self.synced = False
        self.last_pass: float | None = None  # monotonic time of the last finished pass
        self._checked: dict[tuple[str, int], Checked] = {}
        self._errors: dict[str, tuple[int, int]] = {}  # uid → (failures in a row, not before ms)
        # finished jobs with nothing to do until they or their pods change, or until ``wake_at`` (a TTL):
        # uid → (wake_at ms, state, gpu class). A pass builds no view of them: with thousands of finished jobs
        # present, a pass costs what the unfinished ones cost.
        self._settled: dict[str, tuple[int | None, str, str]] = {}

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def poke(self) -> None:
        self.wake.set()

    # ---- the loop ---------------------------------------------------------------------------------------------
    async def resync(self) -> None:
        namespaces = self.config.namespaces
        pods, pods_rv = await self.kube.list_pods(namespaces)
        jobs, jobs_rv = await self.kube.list_jobs(namespaces, keep=kept_of_job)
        self.cache.replace_pods(pods, pods_rv)
        self.cache.replace_jobs(jobs, jobs_rv)
        log.debug("resynced: %d jobs, %d runner pods", len(jobs), len(pods))

    async def run(self) -> None:
        delay = 1.0
        while True:
            try:
                await self.resync()
                break
            except Exception as e:  # the API may not be reachable yet: keep trying
                log.warning("cannot list jobs and pods yet (%s); retrying in %.0f s", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
        self.synced = True
        log.info("dispatcher started: %d jobs, %d runner pods", len(self.cache), self.cache.pod_count())
        last_resync = time.monotonic()
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
            if self.last_pass - last_resync >= self.config.timing.resync_seconds:
                try:
                    await self.resync()
                    last_resync = time.monotonic()
                except Exception as e:
                    log.warning("resync failed: %s", e)
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
    def check(self, job: JobView) -> Checked:
        key = (job.uid, job.generation)
        checked = self._checked.get(key)
        if checked is None:
            checked = self._checked[key] = check_job(job.state, job.spec, self.config)
        return checked

    def _still_settled(self, uid: str, now: int) -> bool:
        settled = self._settled.get(uid)
        return settled is not None and (settled[0] is None or settled[0] > now)

    async def pass_once(self) -> int | None:
        now = self.now_ms()
        for uid in self.cache.take_changed():
            self._settled.pop(uid, None)
        snapshot = self.cache.snapshot(skip=lambda uid: self._still_settled(uid, now))
        items = [(job, pods, self.check(job)) for job, pods in snapshot]
        live = {(job.uid, job.generation) for job, _, _ in items}
        for key in [k for k in self._checked if k not in live]:
            del self._checked[key]
        next_wake: int | None = None
        for wake_at, _, _ in self._settled.values():
            next_wake = _min(next_wake, wake_at)

        entries = [e for e in (queue_entry(job, pods, now, self.config, checked) for job, pods, checked in items)
                   if e is not None]
        admission = admit(entries, limits_of(self.config))
        admitted = set(admission.admit)

        semaphore = asyncio.Semaphore(self.config.dispatch_concurrency)
        work = []
        for job, pods, checked in items:
            failures, not_before = self._errors.get(job.uid, (0, 0))
            if not_before > now:
                next_wake = _min(next_wake, not_before)
                continue
            slot = Slot(admit=job.uid in admitted, position=admission.positions.get(job.uid))
            decision = next_step(job, pods, now, self.config, checked=checked, slot=slot)
            next_wake = _min(next_wake, decision.wake_at)
            if decision.actions or decision.fetch_result:
                work.append(self._guarded(semaphore, job, pods, checked, slot, decision))
            elif job.state in TERMINAL and not job.deleting and not live_pods(pods):
                self._settled[job.uid] = (decision.wake_at, job.state or "", checked.controls.gpu_class)
        for pod in self.cache.orphans():
            work.append(self._stop_orphan(semaphore, pod))
        if work:
            await asyncio.gather(*work)

        states = [(job.state or "NEW", checked.controls.gpu_class) for job, _, checked in items
                  if job.uid not in self._settled]
        states += [(state, gpu_class) for _, state, gpu_class in self._settled.values()]
        waiting = Counter(e.gpu_class for e in entries if e.uid in admission.positions)
        running = Counter(e.gpu_class for e in entries if e.running or e.uid in admitted)
        self.metrics.observe_jobs(states, waiting, running)
        return next_wake

    async def _guarded(self, semaphore: asyncio.Semaphore, job: JobView, pods: list[PodView], checked: Checked,
                       slot: Slot, decision: Decision) -> None:
        async with semaphore:
            step = "decide"
            try:
                step = await self._act(job, pods, checked, slot, decision)
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
                failures = self._errors.get(job.uid, (0, 0))[0] + 1
                delay = ERROR_BACKOFF_MS[min(failures, len(ERROR_BACKOFF_MS)) - 1]
                self._errors[job.uid] = (failures, self.now_ms() + delay)
                self.metrics.error(step)
                log.warning("%s failed (%s: %s); trying again in %.0f s", step, type(e).__name__, e, delay / 1000,
                            extra=_ctx(job, progress(job, pods).attempt or None))

    async def _act(self, job: JobView, pods: list[PodView], checked: Checked, slot: Slot,
                   decision: Decision) -> str:
        if decision.fetch_result:
            raw = await self.staging.read_result(decision.fetch_result)
            result = check_result(decision.fetch_result, raw)
            decision = next_step(job, pods, self.now_ms(), self.config, checked=checked, slot=slot, result=result)
            if decision.fetch_result:
                return "read_result"
        current = job
        step = "decide"
        for action in decision.actions:
            if isinstance(action, WriteStatus):
                step = "write_status"
                body = await self.kube.patch_job_status(job.namespace, job.name, action.patch,
                                                        current.resource_version, current.status)
                self.metrics.observe_status_write(current.status, action.patch)
                self.cache.put_job(body)
                self._log_transition(current, action.patch)
                current = JobView.from_body(body, job.first_seen_ms)
            elif isinstance(action, StartRunner):
                step = "start_runner"
                try:
                    created = await self.placement.start(current, checked.controls, action.attempt)
                except StartRefused as refused:
                    log.warning("cannot start attempt %d: %s", action.attempt, refused.message,
                                extra=_ctx(job, action.attempt))
                    failed = start_refused(current, pods, self.now_ms(), self.config, checked, action.attempt,
                                           refused.reason, refused.message)
                    return await self._act(current, pods, checked, slot, failed)
                if created:
                    self.metrics.write("pod_create")
                    log.info("created runner pod for attempt %d", action.attempt, extra=_ctx(job, action.attempt))
            elif isinstance(action, StopRunner):
                step = "stop_runner"
                await self.placement.stop(job.namespace, action.pod, action.uid, action.grace_seconds)
                self.metrics.write("pod_delete")
                log.info("stopping runner pod %s", action.pod, extra=_ctx(job))
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

    async def _stop_orphan(self, semaphore: asyncio.Semaphore, pod: PodView) -> None:
        """A runner pod whose job was deleted: the garbage collector removes it too, but this is sooner."""
        async with semaphore:
            try:
                await self.placement.stop(pod.namespace, pod.name, pod.uid or None,
                                          self.config.timing.cancel_grace_period_seconds)
                self.metrics.write("pod_delete")
                log.info("stopping runner pod %s/%s: its job is gone", pod.namespace, pod.name)
            except Exception as e:
                log.debug("cannot stop orphan pod %s/%s: %s", pod.namespace, pod.name, e)

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
