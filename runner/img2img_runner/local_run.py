"""``img2img run FILE -o DIR``: one job in process, on the runner's code path, no cluster.

FILE is a RunPod request (``{"input": …}``) or an Img2ImgJob manifest, JSON or YAML. The images are written to
DIR as ``<n>.png`` (or the job's ``samples_format``: generated images, then detect maps; infotext in the PNG
``parameters`` chunk or the JPEG/WebP EXIF UserComment) and the
RunPod-shaped response is printed: ``{"delayTime", "executionTime", "id", "output": {"images": [paths], "info",
"parameters"}, "status": "COMPLETED"}``. As RunPod counts it, ``delayTime`` includes the cold start (model loading)
and ``executionTime`` is the rest. A failure prints ``{"id", "status": "FAILED", "error"}`` and returns the
runner's exit code for it.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import TextIO

from img2img.api.exitcodes import ExitCode


def run_command(path: str | os.PathLike, out_dir: str | os.PathLike, catalog=None, *, out: TextIO | None = None,
                err: TextIO | None = None, cache=None) -> int:
    """Run the job in FILE; return 0 or the runner's exit code. ``catalog``: a Catalog, a path, or None
    (``$IMG2IMG_CATALOG``)."""
    from img2img.api.job import JobProblems, job_from_data, parse_document
    from img2img_runner.catalog import Catalog, CatalogError
    from img2img_runner.errors import classify

    out = out or sys.stdout
    err = err or sys.stderr
    job_id = f"local-{uuid.uuid4()}"
    submitted = time.monotonic()
    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}: cannot read: {exc}", file=err)
        return int(ExitCode.BAD_INPUT)
    try:
        data = parse_document(text, source=str(path))
        loaded = job_from_data(data)
    except JobProblems as exc:
        for problem in exc.problems:
            print(problem, file=err)
        _print(out, {"id": job_id, "status": "FAILED", "error": str(exc)})
        return int(ExitCode.BAD_INPUT)

    try:
        if not isinstance(catalog, Catalog):
            location = catalog or os.environ.get("IMG2IMG_CATALOG")
            if not location:
                raise CatalogError("no model catalog: pass --catalog or set IMG2IMG_CATALOG")
            catalog = Catalog.from_file(location)
        from img2img_runner.execute import execute
        from img2img_runner.storage import image_files

        started: dict[str, float] = {}
        # the input as written (not re-serialized): `parameters` echoes the request as received, like A1111
        job_input = data["input"] if loaded.from_runpod_request else data["spec"]["input"]
        result = execute(job_input, catalog, cache=cache,
                         on_models_loaded=lambda: started.setdefault("at", time.monotonic()))
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for n, data in enumerate(image_files(result.images, result.encoding)):
            target = folder / f"{n}.{result.encoding.format.extension}"
            target.write_bytes(data)
            paths.append(str(target))
    except Exception as exc:  # noqa: BLE001 - reported as RunPod reports a failed job
        failure = classify(exc)
        where = f"{failure.field}: " if failure.field else ""
        print(f"{where}{failure.message}", file=err)
        _print(out, {"id": job_id, "status": "FAILED", "error": f"{where}{failure.message}"})
        return int(failure.code)
    finished = time.monotonic()
    began = started.get("at", submitted)
    _print(out, {
        "delayTime": int((began - submitted) * 1000),
        "executionTime": int((finished - began) * 1000),
        "id": job_id,
        "output": {"images": paths, "info": result.info, "parameters": result.parameters},
        "status": "COMPLETED",
    })
    return 0


def _print(out: TextIO, obj: dict) -> None:
    try:
        out.write(json.dumps(obj, indent=2) + "\n")
        out.flush()
    except BrokenPipeError:
        pass
