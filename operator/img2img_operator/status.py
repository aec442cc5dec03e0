"""Status changes (RunPod-shaped, img2img.api.status.JobStatus) and kstatus conditions. Pure.

The lifecycle says what the status should be; ``changes`` keeps only the top-level keys that differ from the stored
status, so a decision taken twice writes once, and a pass over an unchanged job writes nothing. The dispatcher sends
a change as a JSON patch (``kube.status_json_patch``).

Conditions (kstatus, read by Argo CD / Flux):

| status | Ready | Reconciling | Stalled |
|---|---|---|---|
| IN_QUEUE, IN_PROGRESS | False | True | False |
| COMPLETED | True | False | False |
| FAILED, TIMED_OUT, CANCELLED | False | False | True |

CANCELLED is Stalled too: the job will not become Ready, and a GitOps tool waiting on it must stop waiting.

The status stays bounded whatever the job (docs/large-images.md, "Large answers"): the runner's answer goes into
``status.output`` only up to ``output_budget`` (``report.bounded_output``); the rest stays in result.json.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from img2img.api.status import READY, RECONCILING, STALLED, TERMINAL, JobState
from img2img.api.times import format_time_ms

from .views import JobView

MAX_CONDITION_MESSAGE = 1024
# status.output holds at most this many bytes of JSON: a RunPod answer (images, info, parameters) as a client reads
# it, not the 2.8 MB info of 800 images with long prompts, nor the megabyte of init_images A1111 echoes on request
OUTPUT_BUDGET = 256 * 1024
# the whole job (spec, annotations, status) as JSON at most: etcd refuses a write over 1.5 MiB (1,572,864 bytes),
# and the rest of the object's metadata (managedFields above all) needs room too
OBJECT_BUDGET = 1_400_000


def json_size(value: object) -> int:
    """Bytes of ``value`` as JSON (UTF-8, as the API server stores it)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def output_budget(job: JobView) -> int:
    """The bytes of JSON the job's ``status.output`` may take: OUTPUT_BUDGET, or less when the rest of the job (a
    spec with a megabyte of inline images, counted by ``input_bytes`` when the view has no input) leaves less room
    under OBJECT_BUDGET."""
    rest = {"spec": job.spec, "annotations": job.annotations,
            "status": {k: v for k, v in job.status.items() if k != "output"}}
    return max(0, min(OUTPUT_BUDGET, OBJECT_BUDGET - json_size(rest) - job.input_bytes))


def condition_time(now: int) -> str:
    """Conditions carry whole seconds, as metav1.Time does."""
    return format_time_ms(now - now % 1000).replace(".000Z", "Z")


def condition(kind: str, value: bool, reason: str, message: str, now: int,
              previous: Mapping[str, Any] | None = None, generation: int | None = None) -> dict[str, Any]:
    """One condition; it keeps ``previous``'s lastTransitionTime while its status holds."""
    status = "True" if value else "False"
    old = previous or {}
    since = old.get("lastTransitionTime") if old.get("status") == status else None
    out: dict[str, Any] = {"type": kind, "status": status, "reason": reason,
                           "message": message[:MAX_CONDITION_MESSAGE],
                           "lastTransitionTime": since or condition_time(now)}
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def by_type(conds: Any) -> dict[str, Mapping[str, Any]]:
    """Stored conditions by type (what ``condition`` takes as ``previous``)."""
    return {c.get("type"): c for c in conds or [] if isinstance(c, Mapping)}


def conditions(state: str, reason: str, message: str, generation: int, now: int,
               previous: list[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Ready, Reconciling, Stalled for ``state``."""
    ready = state == JobState.COMPLETED.value
    reconciling = state not in TERMINAL
    stalled = state in TERMINAL and not ready
    before = by_type(previous)
    return [condition(kind, value, reason, message, now, before.get(kind), generation)
            for kind, value in ((READY, ready), (RECONCILING, reconciling), (STALLED, stalled))]


def desired(job: JobView, now: int, state: str, reason: str, message: str = "", **fields: Any) -> dict[str, Any]:
    """The status a decision wants: state, conditions, observedGeneration, id, and ``fields`` (None = remove)."""
    patch: dict[str, Any] = {
        "id": job.uid,
        "status": state,
        **fields,
        "conditions": conditions(state, reason, message, job.generation, now, job.status.get("conditions")),
        "observedGeneration": job.generation,
    }
    return patch


def _pruned(value: Any) -> Any:
    """Without None values, recursively: a null and a missing key compare the same."""
    if isinstance(value, Mapping):
        return {k: _pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _same_conditions(old: Any, new: Any) -> bool:
    def strip(items: Any) -> list[dict]:
        return sorted(
            ({k: v for k, v in c.items()} for c in items or [] if isinstance(c, Mapping)),
            key=lambda c: str(c.get("type")),
        )
    return strip(old) == strip(new)


def changes(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level keys of ``wanted`` whose values differ from ``current`` (None = remove the key)."""
    patch: dict[str, Any] = {}
    for key, value in wanted.items():
        if value is None:
            if current.get(key) is not None:
                patch[key] = None
        elif key == "conditions":
            if not _same_conditions(current.get(key), value):
                patch[key] = value
        elif _pruned(current.get(key)) != _pruned(value):
            patch[key] = value
    return patch


def applied(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` with ``changes`` applied: each top-level value replaced whole, None removing the key."""
    out = dict(current)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def last_failure(reason: str, message: str, exit_code: int | None = None) -> dict[str, Any]:
    """``status.lastFailure``; it replaces the previous one whole."""
    return {"reason": reason, "exitCode": exit_code, "message": message}


def error_text(reason: str, message: str) -> str:
    return f"{reason}: {message}" if message else reason
