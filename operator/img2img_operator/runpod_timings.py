"""Submission time and the RunPod timings of a job (docs/architecture.md "Timings"). Pure.

- ``submittedAt`` (ms): the annotation ``img2img.dev/submitted-at`` when a client set it (the CLI does) and it agrees
  with ``creationTimestamp``; else the operator's first sight of the job on a live watch event, when that is close to
  the creation (the operator was watching); else ``creationTimestamp`` (whole seconds). It is stored in
  ``status.submittedAt`` at the first status write and read from there afterwards.
- ``delayTime = startedAt − submittedAt`` (waiting for a runner); ``executionTime = finishedAt − startedAt`` (the
  runner's work, models it had to load included); ``modelLoadTime`` = the runner's time loading models for the job
  (0 on a warm runner). ``startedAt`` and ``finishedAt`` are the runner's (its outcome): the moment the assignment
  reached it, and the moment its result was uploaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from img2img.api.termination import TerminationMessage
from img2img.api.times import parse_time_ms

from .views import ANNOTATION_SUBMITTED_AT, JobView

# creationTimestamp has whole seconds: the true creation lies in [created, created + 1 s).
CREATION_RESOLUTION_MS = 1000
# A client's clock and the request's trip may put its annotation this much before the creation.
ANNOTATION_EARLY_MS = 10_000
# A first sight this long after the creation means the operator was not watching then.
FIRST_SIGHT_LATE_MS = 2_000


def submitted_at_ms(job: JobView) -> int:
    stored = parse_time_ms(job.status.get("submittedAt"))
    if stored is not None:
        return stored
    created = job.created_ms
    claimed = parse_time_ms(job.annotations.get(ANNOTATION_SUBMITTED_AT))
    if claimed is not None and created - ANNOTATION_EARLY_MS <= claimed < created + CREATION_RESOLUTION_MS:
        return claimed
    seen = job.first_seen_ms
    if seen is not None and created - CREATION_RESOLUTION_MS <= seen < created + FIRST_SIGHT_LATE_MS:
        return max(seen, created)
    return created


@dataclass(frozen=True)
class Timings:
    delay_time: int
    execution_time: int
    model_load_time: int | None

    def as_status(self) -> dict[str, int]:
        out = {"delayTime": self.delay_time, "executionTime": self.execution_time}
        if self.model_load_time is not None:
            out["modelLoadTime"] = self.model_load_time
        return out


def timings(submitted_ms: int, report: TerminationMessage, assigned_ms: int, now: int) -> Timings:
    """From the runner's outcome; what it left out from the assignment (the operator's clock) and now."""
    started = report.startedAt if report.startedAt is not None else assigned_ms
    finished = report.finishedAt if report.finishedAt is not None else now
    return Timings(
        delay_time=max(0, started - submitted_ms),
        execution_time=max(0, finished - started),
        model_load_time=max(0, report.modelLoadTime) if report.modelLoadTime is not None else None,
    )
