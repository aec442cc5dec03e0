"""`img2img validate FILE`: check a RunPod request or an Img2ImgJob manifest offline.

Prints the normalized job (an Img2ImgJob manifest) as JSON and returns 0; otherwise prints every problem as
``path: reason``, one per line, and returns 1. Malformed JSON/YAML is reported with its line; never a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from img2img.api.job import JobProblems, load_job


def validate_command(path: str, out: TextIO, err: TextIO) -> int:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}: cannot read: {exc.strerror if isinstance(exc, OSError) else exc}", file=err)
        return 1
    try:
        loaded = load_job(text, source=path)
    except JobProblems as exc:
        for problem in exc.problems:
            print(problem, file=err)
        return 1
    try:
        out.write(json.dumps(loaded.job.manifest(), indent=2) + "\n")
    except BrokenPipeError:  # the reader stopped early (`| head`): the job is still valid
        pass
    return 0
