"""Prometheus metrics, served on ``metricsPort`` at ``/metrics``.

| metric | kind | labels |
|---|---|---|
| ``img2img_jobs`` | gauge: jobs the operator sees, by state (``NEW`` = no status yet) | state, gpu_class |
| ``img2img_queue_depth`` | gauge: jobs waiting for a slot | gpu_class |
| ``img2img_runners`` | gauge: runners by pool and state (starting, idle, busy) | pool, state |
| ``img2img_jobs_waiting`` | gauge: admitted jobs no runner has taken yet, by the pool they wait for | pool |
| ``img2img_assignments_total`` | counter: jobs handed to runners; warm = the runner held every model | pool, warm |
| ``img2img_jobs_finished_total`` | counter: jobs that reached a final state | state |
| ``img2img_job_failures_total`` | counter: jobs ended FAILED / TIMED_OUT | reason |
| ``img2img_job_retries_total`` | counter: attempts retried | reason |
| ``img2img_job_delay_seconds`` | histogram: submission → a runner takes the job (RunPod's delayTime) | warm |
| ``img2img_job_execution_seconds`` | histogram: the runner's work (RunPod's executionTime) | |
| ``img2img_webhook_attempts_total`` | counter: webhook attempts by what they came to (``deliveries``) | outcome: delivered, retry, give_up |
| ``img2img_api_writes_total`` | counter: writes to the Kubernetes API | kind |
| ``img2img_dispatch_errors_total`` | counter: failed actions (retried later) | action |
| ``img2img_dispatch_pass_seconds`` | histogram: one pass of the dispatcher over all jobs | |
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter as PCounter, Gauge, Histogram, start_http_server
from prometheus_client.exposition import generate_latest

from img2img.api.status import TERMINAL, JobState

TIME_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))
FAILURES = {JobState.FAILED, JobState.TIMED_OUT}  # final states counted as failures, by reason


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.jobs = Gauge("img2img_jobs", "Img2ImgJobs by state", ["state", "gpu_class"], registry=r)
        self.queue_depth = Gauge("img2img_queue_depth", "Jobs waiting for a runner slot", ["gpu_class"], registry=r)
        self.runners = Gauge("img2img_runners", "Runners by pool and state", ["pool", "state"], registry=r)
        self.jobs_waiting = Gauge("img2img_jobs_waiting", "Admitted jobs waiting for a runner", ["pool"],
                                  registry=r)
        self.assignments = PCounter("img2img_assignments_total", "Jobs handed to runners", ["pool", "warm"],
                                    registry=r)
        self.finished = PCounter("img2img_jobs_finished_total", "Jobs that reached a final state", ["state"],
                                 registry=r)
        self.failures = PCounter("img2img_job_failures_total", "Jobs ended FAILED or TIMED_OUT", ["reason"],
                                 registry=r)
        self.retries = PCounter("img2img_job_retries_total", "Attempts retried", ["reason"], registry=r)
        self.delay = Histogram("img2img_job_delay_seconds", "Submission to a runner taking the job", ["warm"],
                               buckets=TIME_BUCKETS, registry=r)
        self.execution = Histogram("img2img_job_execution_seconds", "The runner's work", buckets=TIME_BUCKETS,
                                   registry=r)
        self.webhook_attempts = PCounter("img2img_webhook_attempts_total", "Webhook attempts by outcome", ["outcome"],
                                         registry=r)
        self.api_writes = PCounter("img2img_api_writes_total", "Writes to the Kubernetes API", ["kind"], registry=r)
        self.errors = PCounter("img2img_dispatch_errors_total", "Failed actions, retried later", ["action"],
                               registry=r)
        self.pass_seconds = Histogram("img2img_dispatch_pass_seconds", "One dispatcher pass",
                                      buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, float("inf")), registry=r)
        self._seen_states: set[tuple[str, str]] = set()
        self._seen_classes: set[str] = set()
        self._seen_runners: set[tuple[str, str]] = set()
        self._seen_pools: set[str] = set()

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # ---- from the dispatcher ----------------------------------------------------------------------------------
    def observe_jobs(self, states: Iterable[tuple[str, str]], waiting: Mapping[str, int]) -> None:
        """Set the gauges from one pass: (state, gpu_class) of every job, and per-class queue depths."""
        counts = Counter(states)
        for key in self._seen_states | set(counts):
            self.jobs.labels(*key).set(counts.get(key, 0))
        self._seen_states |= set(counts)
        self._seen_classes |= set(waiting)
        for gpu_class in self._seen_classes:
            self.queue_depth.labels(gpu_class).set(waiting.get(gpu_class, 0))

    def observe_pools(self, runners: Mapping[tuple[str, str], int], waiting: Mapping[str, int]) -> None:
        """Set the pool gauges from one pass: runners by (pool, state), admitted jobs waiting by pool."""
        self._seen_runners |= set(runners)
        for key in self._seen_runners:
            self.runners.labels(*key).set(runners.get(key, 0))
        self._seen_pools |= set(waiting)
        for pool in self._seen_pools:
            self.jobs_waiting.labels(pool).set(waiting.get(pool, 0))

    def assigned(self, pool: str, warm: bool, delay_seconds: float) -> None:
        """A runner took a job."""
        label = "true" if warm else "false"
        self.assignments.labels(pool, label).inc()
        self.delay.labels(label).observe(max(0.0, delay_seconds))

    def observe_status_write(self, before: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
        """Count what a status write meant: a final state, a failure, a retry, the timings of a completion."""
        self.api_writes.labels("status").inc()
        state = patch.get("status")
        if state in TERMINAL and state != before.get("status"):
            self.finished.labels(state).inc()
            if state in FAILURES:
                reason = (patch.get("lastFailure") or {}).get("reason") or state
                self.failures.labels(reason).inc()
            if state == JobState.COMPLETED:
                if isinstance(patch.get("executionTime"), int):
                    self.execution.observe(patch["executionTime"] / 1000)
        elif state == "IN_QUEUE" and patch.get("lastFailure") and "runnerPod" in patch and patch["runnerPod"] is None:
            self.retries.labels(patch["lastFailure"].get("reason") or "unknown").inc()

    def write(self, kind: str) -> None:
        self.api_writes.labels(kind).inc()

    def error(self, action: str) -> None:
        self.errors.labels(action).inc()
