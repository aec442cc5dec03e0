"""Each job's verdict (``controls.Checked``) per generation, and the inputs held until theirs is reached. No I/O.

The cache keeps no job's input (``cache.kept_of_job``): inline images make it up to 1.5 MB a job. The input is read
once a generation, when the dispatcher reaches the job's verdict off the event loop (``Dispatcher._validate``): the
spec checked in a worker thread, every inline image decoded, and for a valid job input.json staged, before the
job's first status is written. The input comes as it arrived, when it is still held here (``PENDING_INPUT_BYTES``
together at most), else read again from the API server. The dispatcher decides on a job only once its verdict is in;
a job no decision reads the input of (finished, cancelled, going away) has its verdict at once (``without_input``).

After a restart, a job IN_QUEUE or IN_PROGRESS at its generation (``status.observedGeneration``) had its verdict
reached by an earlier process, its images decoded and its input staged, before that status was written
(``already_checked``): it is checked again without decoding its images, and not staged again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from img2img.api.status import TERMINAL

from .config import OperatorConfig
from .controls import Checked, controls_from
from .lifecycle import IN_PROGRESS, IN_QUEUE
from .views import JobView, Key

PENDING_INPUT_BYTES = 32 * 1024 * 1024  # inputs held until their job's verdict, together; beyond: read again


def key_of(job: JobView) -> Key:
    return job.uid, job.generation


def without_input(job: JobView, config: OperatorConfig) -> Checked | None:
    """The verdict on a job whose decisions read only its controls (finished, cancelled, or going away): nothing of
    its input runs any more. None: its spec must be checked."""
    controls = controls_from(job.spec, config)
    if job.state in TERMINAL or job.deleting or controls.cancel:
        return Checked(controls)
    return None


def already_checked(job: JobView) -> bool:
    """An earlier verdict on this generation decoded the job's images and staged its input: only then is a status
    IN_QUEUE or IN_PROGRESS written at a generation (``status.observedGeneration``)."""
    return job.state in (IN_QUEUE, IN_PROGRESS) and job.status.get("observedGeneration") == job.generation


class Verdicts:
    """The verdicts reached, and the inputs that arrived for jobs still without one (within ``budget`` bytes)."""

    def __init__(self, budget: int = PENDING_INPUT_BYTES):
        self.budget = budget
        self.held_bytes = 0
        self._verdicts: dict[Key, Checked] = {}
        self._inputs: dict[Key, tuple[Any, int]] = {}  # key → (spec.input, its size as JSON)

    def get(self, key: Key) -> Checked | None:
        return self._verdicts.get(key)

    def record(self, key: Key, checked: Checked) -> None:
        self._verdicts[key] = checked
        self.take_input(key)  # a copy that arrived meanwhile is not needed any more

    def arrived(self, key: Key, spec_input: Any, size: int) -> None:
        """A job's input as it arrived (``Cache.on_input``): held if the job still awaits its verdict and it fits."""
        if key in self._verdicts or key in self._inputs or self.held_bytes + size > self.budget:
            return
        self._inputs[key] = (spec_input, size)
        self.held_bytes += size

    def take_input(self, key: Key) -> Any | None:
        """The held input of ``key`` (no longer held); None: not held (read the job again)."""
        held = self._inputs.pop(key, None)
        if held is None:
            return None
        self.held_bytes -= held[1]
        return held[0]

    def keep_only(self, keys: Iterable[Key]) -> None:
        """Forget the verdicts and inputs of every other job generation (gone, finished, or changed)."""
        keep = set(keys)
        for key in [k for k in self._verdicts if k not in keep]:
            del self._verdicts[key]
        for key in [k for k in self._inputs if k not in keep]:
            self.take_input(key)
