"""What an attempt's end means: the runner's outcome (its ``done``), or the lease lapsing. Pure.

The outcome has the termination message's fields (``img2img.api.termination``); ``error.code`` names an exit code
(``img2img.api.exitcodes``) or the runner's stop: CANCELLED, TIMED_OUT.

| the attempt ended with | reason | retried |
|---|---|---|
| no error, a result | (COMPLETED) | |
| STORAGE / CRASH (or a code this operator does not know) | StorageError / RunnerCrashed | yes |
| BAD_INPUT / MODEL / CUDA_OOM | BadInput / ModelError / CudaOutOfMemory | no |
| CANCELLED (the runner stopped as it was told) | Cancelled | no: CANCELLED |
| TIMED_OUT (the runner stopped at the deadline) | DeadlineExceeded | no: TIMED_OUT |
| the lease lapsed (runner pod gone, no heartbeat, no runner after an operator restart) | RunnerLost | yes |
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from img2img.api.exitcodes import ExitCode
from img2img.api.termination import TerminationMessage

CANCELLED_CODE = "CANCELLED"
TIMED_OUT_CODE = "TIMED_OUT"
RUNNER_LOST = "RunnerLost"

_EXIT_REASONS = {
    ExitCode.BAD_INPUT: "BadInput",
    ExitCode.MODEL: "ModelError",
    ExitCode.CUDA_OOM: "CudaOutOfMemory",
    ExitCode.STORAGE: "StorageError",
    ExitCode.CRASH: "RunnerCrashed",
}


@dataclass(frozen=True)
class Failure:
    reason: str  # CamelCase, usable as a condition and Event reason
    message: str
    retriable: bool
    timed_out: bool = False
    cancelled: bool = False
    exit_code: int | None = None


@dataclass(frozen=True)
class Outcome:
    """A runner's done: its times and result, and the failure it reports (None = success)."""

    report: TerminationMessage
    failure: Failure | None


def _said(error: Mapping[str, Any]) -> str:
    field, message = error.get("field"), str(error.get("message") or "")
    return f"{field}: {message}" if field and field not in message else message


def read_outcome(outcome: Mapping[str, Any]) -> Outcome:
    """The runner's outcome as the operator acts on it; parts it cannot read are left out, never fatal."""
    error = outcome.get("error")
    report = TerminationMessage.parse(json.dumps({k: v for k, v in outcome.items() if k != "error"}, default=str))
    report = report or TerminationMessage()
    if not isinstance(error, Mapping):
        if report.result:
            return Outcome(report, None)
        return Outcome(report, Failure("RunnerCrashed", "the runner reported neither a result nor an error",
                                       retriable=True))
    code, said = str(error.get("code") or ""), _said(error)
    if code == CANCELLED_CODE:
        return Outcome(report, Failure("Cancelled", said or "the runner stopped the job", retriable=False,
                                       cancelled=True))
    if code == TIMED_OUT_CODE:
        return Outcome(report, Failure("DeadlineExceeded", said or "the job ran past its timeoutSeconds",
                                       retriable=False, timed_out=True))
    known = ExitCode.__members__.get(code)
    if known is None or known == ExitCode.OK:
        return Outcome(report, Failure("RunnerCrashed", said or f"the runner failed ({code or 'no code'})",
                                       retriable=True))
    return Outcome(report, Failure(_EXIT_REASONS[known], said or known.name, retriable=known.retriable,
                                   exit_code=int(known)))


def runner_lost(reason: str) -> Failure:
    return Failure(RUNNER_LOST, reason, retriable=True)
