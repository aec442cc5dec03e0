"""What the CLI prints on stdout: a job's status as a RunPod client reads it."""

from __future__ import annotations

import json
import os
import sys

from img2img.api.answer import runpod_view


def out(text: str) -> None:
    """A line on stdout; a reader that stopped early (`| head`) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no second error when Python flushes at exit


def print_status(job: dict) -> None:
    """A job object's RunPod-shaped status, as indented JSON on stdout."""
    out(json.dumps(runpod_view(job.get("status") or {}, (job.get("metadata") or {}).get("uid")), indent=2))
