"""What a failed job reports: an exit code (img2img.api.exitcodes) and a ``RunnerFailure`` (code, field, message).

Every expected failure carries the payload field it is about; ``classify`` maps any exception to that report, so
``main`` and ``local_run`` report the same thing for the same cause.
"""

from __future__ import annotations

from img2img.api.errors import FieldError
from img2img.api.exitcodes import ExitCode
from img2img.api.termination import RunnerFailure

PAYLOAD = "input.payload"


class JobFailure(Exception):
    """A failure with a known cause. ``field`` is a path relative to ``input.payload`` (or absolute with
    ``absolute=True``)."""

    code = ExitCode.CRASH

    def __init__(self, message: str, field: str | None = None, *, absolute: bool = False):
        super().__init__(message)
        self.field = field
        self.absolute = absolute

    @property
    def path(self) -> str | None:
        if self.field is None:
            return None
        return self.field if self.absolute else f"{PAYLOAD}.{self.field}" if self.field else PAYLOAD


class BadInput(JobFailure):
    code = ExitCode.BAD_INPUT


class StorageError(JobFailure):
    """S3 (or an image server) failed after the runner's own retries: worth retrying the job."""

    code = ExitCode.STORAGE


def classify(exc: BaseException) -> RunnerFailure:
    """The exit code and report for any exception a job can raise."""
    from img2img_runner.catalog import CatalogError, ModelError

    if isinstance(exc, JobFailure):
        return RunnerFailure(code=exc.code, field=exc.path, message=str(exc))
    if isinstance(exc, ModelError):  # before FieldError: a model the catalog cannot serve is not bad input
        field = exc.field if exc.field and exc.field != "model" else None
        return RunnerFailure(code=ExitCode.MODEL, field=f"{PAYLOAD}.{field}" if field else None, message=str(exc))
    if isinstance(exc, CatalogError):
        return RunnerFailure(code=ExitCode.MODEL, message=f"model catalog: {exc}")
    if isinstance(exc, FieldError):
        return RunnerFailure(code=ExitCode.BAD_INPUT, field=f"{PAYLOAD}.{exc.field}", message=str(exc))
    if _is_cuda_oom(exc):
        return RunnerFailure(code=ExitCode.CUDA_OOM, message=f"CUDA out of memory: {str(exc).splitlines()[0][:300]}")
    return RunnerFailure(code=ExitCode.CRASH, message=f"{type(exc).__name__}: {exc}")


def _is_cuda_oom(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - the runner always has torch
        return False
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc))
