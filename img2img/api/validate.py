"""`img2img validate FILE`: check a RunPod request or an Img2ImgJob manifest offline.

Prints the normalized job (an Img2ImgJob manifest) as JSON and returns 0; otherwise prints every problem as
``path: reason``, one per line, and returns 1. Malformed JSON/YAML is reported with its line; never a traceback.
With a model catalog (``--catalog`` or ``$IMG2IMG_CATALOG``, as ``img2img run``) the models the job names are
looked up in it too, as the runner looks them up before it loads anything: an unknown checkpoint, VAE, ControlNet or
LoRA, or models that cannot run together, are refused by name.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from img2img.api.job import JobProblems, LoadedJob, load_job


def validate_command(path: str, out: TextIO, err: TextIO, catalog: str | None = None) -> int:
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
    if catalog:
        problem = _model_problem(loaded, catalog)
        if problem:
            print(problem, file=err)
            return 1
    try:
        out.write(json.dumps(loaded.job.manifest(), indent=2) + "\n")
    except BrokenPipeError:  # the reader stopped early (`| head`): the job is still valid
        pass
    return 0


def _model_problem(loaded: LoadedJob, catalog_path: str) -> str | None:
    """The catalog's refusal of the job's models (the first), as ``path: reason``; None when they resolve."""
    from img2img_runner.catalog import Catalog, CatalogError, ModelError

    try:
        Catalog.from_file(catalog_path).resolve_payload(loaded.job.spec.input.payload)
    except CatalogError as exc:
        return f"{catalog_path}: {exc}"
    except ModelError as exc:
        prefix = "input.payload" if loaded.from_runpod_request else "spec.input.payload"
        return f"{prefix}.{exc.field}: {exc}"
    return None
