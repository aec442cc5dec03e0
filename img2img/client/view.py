"""What the CLI prints on stdout: a job's status as a RunPod client reads it."""

from __future__ import annotations

import json
import os
import sys

RUNPOD_FIELDS = ("id", "status", "delayTime", "executionTime", "output", "error")


def runpod_view(status: dict, uid: str | None = None) -> dict:
    """The part of ``.status`` a RunPod client reads, in RunPod's key order.

    A job the operator has not written yet is IN_QUEUE with the resource's uid as id, as RunPod answers ``/status``
    right after ``/run``.
    """
    defaults = {"id": uid, "status": "IN_QUEUE"}
    view = {}
    for key in RUNPOD_FIELDS:
        value = status.get(key)
        value = defaults.get(key) if value is None else value
        if value is not None:
            view[key] = value
    return view


def out(text: str) -> None:
    """A line on stdout; a reader that stopped early (`| head`) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no second error when Python flushes at exit


def print_status(job: dict) -> None:
    """A job object's RunPod-shaped status, as indented JSON on stdout."""
    out(json.dumps(runpod_view(job.get("status") or {}, (job.get("metadata") or {}).get("uid")), indent=2))
