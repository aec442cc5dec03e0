"""``/health``: jobs by state in the endpoint's namespace, workers from the RunnerPools (pure).

``jobs`` as RunPod counts them: ``inQueue``, ``inProgress``, ``completed``, ``failed`` (FAILED and TIMED_OUT) and
``retried`` (jobs the operator ran more than once, and jobs ``/retry`` ran again; a retried job counts there, not
as failed). CANCELLED jobs are in no count, as in RunPod.

``workers`` from the pools' status (of the endpoint's GPU class when it names one, else every pool), with the five
keys the JS SDK types: ``ready`` = runners with their models loaded (idle or busy), ``idle`` = ready and not
busy, ``running`` = busy, ``initializing`` = starting, ``throttled`` = 0 (a runner is never throttled here).
"""

from __future__ import annotations

from typing import Any, Iterable

FAILED_STATES = ("FAILED", "TIMED_OUT")


def job_counts(jobs: Iterable[dict[str, Any]], superseded: set[str]) -> dict[str, int]:
    """``superseded``: names of jobs a ``/retry`` replaced."""
    counts = {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0}
    for job in jobs:
        status = job.get("status") or {}
        state = status.get("status") or "IN_QUEUE"
        if job["metadata"]["name"] in superseded or (status.get("attempts") or 0) > 1:
            counts["retried"] += 1
            if job["metadata"]["name"] in superseded:
                continue
        if state == "IN_QUEUE":
            counts["inQueue"] += 1
        elif state == "IN_PROGRESS":
            counts["inProgress"] += 1
        elif state == "COMPLETED":
            counts["completed"] += 1
        elif state in FAILED_STATES:
            counts["failed"] += 1
    return counts


def worker_counts(pools: Iterable[dict[str, Any]], gpu_class: str | None) -> dict[str, int]:
    ready = busy = starting = 0
    for pool in pools:
        if gpu_class and (pool.get("spec") or {}).get("gpuClass") != gpu_class:
            continue
        status = pool.get("status") or {}
        ready += int(status.get("readyRunners") or 0)
        busy += int(status.get("busyRunners") or 0)
        starting += int(status.get("startingRunners") or 0)
    return {"idle": max(ready - busy, 0), "initializing": starting, "ready": ready, "running": busy, "throttled": 0}


def health(jobs: Iterable[dict[str, Any]], superseded: set[str], pools: Iterable[dict[str, Any]],
           gpu_class: str | None) -> dict[str, Any]:
    return {"jobs": job_counts(jobs, superseded), "workers": worker_counts(pools, gpu_class)}
