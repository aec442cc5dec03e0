"""What a failed job reports: an exit code (img2img.api.exitcodes) and ``{"code", "field", "message"}``.

Every expected failure carries the payload field it is about; ``classify`` maps any exception to that shape, so
``main`` and ``local_run`` report the same thing for the same cause.
"""

from __future__ import annotations

from dataclasses import dataclass

from img2img.api.exitcodes import ExitCode

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


class ModelFailure(JobFailure):
    code = ExitCode.MODEL


class StorageError(JobFailure):
    """S3 (or an image server) failed after the runner's own retries: worth retrying the job."""

    code = ExitCode.STORAGE


@dataclass(frozen=True)
class Failure:
    code: ExitCode
    field: str | None
    message: str

    def as_dict(self) -> dict:
        return {"code": self.code.name, "field": self.field, "message": self.message}


def classify(exc: BaseException) -> Failure:
    """The exit code and report for any exception a job can raise."""
    from img2img_runner.catalog import CatalogError, ModelError
    from img2img_runner.plan import PlanError
    from img2img_runner.preprocess import PreprocessError

    if isinstance(exc, JobFailure):
        return Failure(exc.code, exc.path, str(exc))
    if isinstance(exc, ModelError):
        field = exc.field if exc.field and exc.field != "model" else None
        return Failure(ExitCode.MODEL, f"{PAYLOAD}.{field}" if field else None, str(exc))
    if isinstance(exc, CatalogError):
        return Failure(ExitCode.MODEL, None, f"model catalog: {exc}")
    if isinstance(exc, (PlanError, PreprocessError)):
        return Failure(ExitCode.BAD_INPUT, f"{PAYLOAD}.{exc.field}", str(exc))
    if _is_cuda_oom(exc):
        return Failure(ExitCode.CUDA_OOM, None, f"CUDA out of memory: {str(exc).splitlines()[0][:300]}")
    return Failure(ExitCode.CRASH, None, f"{type(exc).__name__}: {exc}"[:1000])


def _is_cuda_oom(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - the runner always has torch
        return False
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc))
