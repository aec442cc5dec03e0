"""``/stream/{id}``: the job's progress as RunPod stream chunks, each delivered once (pure).

While a runner works it reports ``status.progress`` (``{step, steps}``); the gateway's watch sees every change and
keeps them, in order, per job (``ProgressLog``). A read answers the chunks not yet delivered and marks them
delivered (drained on read, as RunPod does); a read after the end answers the final state with what is left, then
``"stream": []``. The list is always there: the runpod SDK indexes it even for a finished job.

Delivery is counted per gateway replica (in memory): with several replicas a chunk may reach a client once per
replica that answers it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_CHUNKS_KEPT = 512  # per job; the oldest go first


@dataclass(frozen=True)
class Progress:
    step: int
    steps: int

    def chunk(self) -> dict[str, Any]:
        return {"output": {"step": self.step, "steps": self.steps}}


def progress_of(status: dict[str, Any]) -> Progress | None:
    """The progress a job's status reports, None when it has none (or not in a shape we read)."""
    progress = status.get("progress")
    if not isinstance(progress, dict):
        return None
    step, steps = progress.get("step"), progress.get("steps")
    if not isinstance(step, int) or not isinstance(steps, int) or isinstance(step, bool) or steps <= 0:
        return None
    return Progress(step, steps)


@dataclass
class ProgressLog:
    """The progress values a job went through, and how many a client has been given."""

    seen: list[Progress] = field(default_factory=list)
    dropped: int = 0  # values dropped from the front (MAX_CHUNKS_KEPT)
    delivered: int = 0  # values delivered, counted from the first ever seen

    def record(self, status: dict[str, Any]) -> None:
        progress = progress_of(status)
        if progress is None or (self.seen and self.seen[-1] == progress):
            return
        self.seen.append(progress)
        if len(self.seen) > MAX_CHUNKS_KEPT:
            self.seen.pop(0)
            self.dropped += 1

    def drain(self) -> list[dict[str, Any]]:
        """The chunks not delivered yet; they count as delivered from now on."""
        start = max(self.delivered - self.dropped, 0)
        chunks = [p.chunk() for p in self.seen[start:]]
        self.delivered = self.dropped + len(self.seen)
        return chunks


def stream_answer(state: str, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"status": state, "stream": chunks}
