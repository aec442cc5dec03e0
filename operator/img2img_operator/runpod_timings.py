"""Submission time and the RunPod timings of a job (docs/architecture.md "Timings"). Pure.

- ``submittedAt`` (ms): the annotation ``img2img.dev/submitted-at`` when a client set it (the CLI does) and it agrees
  with ``creationTimestamp``; else the operator's first sight of the job on a live watch event, when that is close to
  the creation (the operator was watching); else ``creationTimestamp`` (whole seconds). It is stored in
  ``status.submittedAt`` at the first status write and read from there afterwards.
- ``delayTime = modelsLoadedAt − submittedAt``; ``executionTime = finishedAt − modelsLoadedAt``;
  ``modelLoadTime = modelsLoadedAt − startedAt`` (the runner's clock, from its termination message).
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
    started_ms: int | None
    finished_ms: int | None

    def as_status(self) -> dict[str, int]:
        out = {"delayTime": self.delay_time, "executionTime": self.execution_time}
        if self.model_load_time is not None:
            out["modelLoadTime"] = self.model_load_time
        return out


def timings(submitted_ms: int, report: TerminationMessage | None, container_started_ms: int | None,
            container_finished_ms: int | None, now: int) -> Timings:
    """From the runner's report; without one, from the container's start and finish (whole seconds)."""
    r = report or TerminationMessage()
    started = r.startedAt if r.startedAt is not None else container_started_ms
    finished = r.finishedAt if r.finishedAt is not None else (container_finished_ms or now)
    loaded = r.modelsLoadedAt
    if loaded is None:
        if started is not None and r.modelLoadTime is not None:
            loaded = started + r.modelLoadTime
        else:
            loaded = started if started is not None else finished
    model_load = r.modelLoadTime
    if model_load is None and started is not None and r.modelsLoadedAt is not None:
        model_load = r.modelsLoadedAt - started
    return Timings(
        delay_time=max(0, loaded - submitted_ms),
        execution_time=max(0, finished - loaded),
        model_load_time=max(0, model_load) if model_load is not None else None,
        started_ms=started,
        finished_ms=finished,
    )
