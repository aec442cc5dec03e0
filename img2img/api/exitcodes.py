"""Runner exit codes: the one place the operator and the runner agree on what a failure means."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    CRASH = 1  # anything unexpected: retried up to the job's retry limit
    BAD_INPUT = 2  # payload or image the runner cannot use: never retried
    MODEL = 3  # unknown or incompatible model: never retried
    CUDA_OOM = 4  # CUDA out of memory: never retried (the same job would fail again)
    STORAGE = 5  # S3 failed after the runner's own retries: retried

    @property
    def retriable(self) -> bool:
        return self in (ExitCode.CRASH, ExitCode.STORAGE)
