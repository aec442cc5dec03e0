"""``img2img-runner``: the runner pod's entrypoint (docs/architecture.md, "Operator -> runner").

Reads the job from ``IMG2IMG_JOB_INPUT`` (``s3://…/input.json`` or a local file: ``{"namespace", "name", "uid",
"input", "submittedAt"}``; a bare RunPod request ``{"input": …}`` or ``input`` object is accepted too), the
catalog from ``IMG2IMG_CATALOG``; executes; uploads the images and ``result.json`` under ``IMG2IMG_OUTPUT``
(default: the input's folder; ``s3://…/`` or a local folder); writes its termination message
(``img2img.api.termination``) to ``$IMG2IMG_TERMINATION_LOG`` or ``/dev/termination-log``; exits with the ExitCode
of the outcome.

Times (ms since the epoch, the runner's clock): ``startedAt`` (process start), ``modelsLoadedAt``, ``finishedAt``
(images uploaded); durations ``modelLoadTime``, ``inferenceTime``, ``uploadTime``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from img2img.api.exitcodes import ExitCode
from img2img.api.termination import TERMINATION_LOG_PATH, RunnerFailure, TerminationMessage

log = logging.getLogger("img2img_runner")


def now_ms() -> int:
    return int(time.time() * 1000)


class _JsonFormatter(logging.Formatter):
    def __init__(self, context: dict[str, Any]):
        super().__init__()
        self.context = context

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                 "msg": record.getMessage(), **self.context}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(context: dict[str, Any]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(context))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("IMG2IMG_LOG_LEVEL", "INFO").upper())
    for noisy in ("diffusers", "transformers", "botocore", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def job_context_from_env() -> dict[str, Any]:
    """namespace/job/attempt for the logs, from the input URI (…/<namespace>/<job>/<uid>/input.json)."""
    uri = os.environ.get("IMG2IMG_JOB_INPUT", "")
    parts = uri.rstrip("/").split("/")
    context: dict[str, Any] = {"attempt": os.environ.get("IMG2IMG_ATTEMPT")}
    if len(parts) >= 4 and parts[-1] == "input.json":
        context.update(namespace=parts[-4], job=parts[-3], uid=parts[-2])
    return context


def read_job(location: str) -> dict[str, Any]:
    """The staged job document, or a RunPod request/input given directly; returns the RunPod ``input``."""
    from img2img_runner.errors import BadInput

    if location.startswith("s3://"):
        from img2img_runner.storage import read_bytes

        raw = read_bytes(location)
    else:
        try:
            raw = Path(location).read_bytes()
        except OSError as exc:
            raise BadInput(f"cannot read the job input {location}: {exc}", "input", absolute=True) from None
    return parse_job(raw, location)


def parse_job(raw: bytes, location: str) -> dict[str, Any]:
    """The RunPod ``input`` of a staged job document (or of a RunPod request/input given directly)."""
    from img2img_runner.errors import BadInput

    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise BadInput(f"the job input {location} is not JSON: {exc}", "input", absolute=True) from None
    if isinstance(doc, dict) and isinstance(doc.get("input"), dict):
        return doc["input"]
    if isinstance(doc, dict) and "payload" in doc:
        return doc
    raise BadInput(f"the job input {location} has no 'input' object", "input", absolute=True)


def output_location(input_location: str) -> str:
    explicit = os.environ.get("IMG2IMG_OUTPUT")
    if explicit:
        return explicit if explicit.endswith("/") or not explicit.startswith("s3://") else explicit + "/"
    head = input_location.rsplit("/", 1)[0] if "/" in input_location else "."
    return head + "/"


def write_local(folder: str, files: list[bytes], extension: str, result: dict[str, Any]) -> tuple[list[str], str]:
    base = Path(folder.removeprefix("file://"))
    (base / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for n, data in enumerate(files):
        path = base / "images" / f"{n}.{extension}"
        path.write_bytes(data)
        paths.append(str(path))
    body = {**result, "images": paths, "presigned": None}
    (base / "result.json").write_text(json.dumps(body))
    return paths, str(base / "result.json")


def write_termination_message(message: TerminationMessage) -> None:
    path = os.environ.get("IMG2IMG_TERMINATION_LOG") or TERMINATION_LOG_PATH
    text = message.dump()
    try:
        Path(path).write_text(text)
    except OSError as exc:  # not in a pod (no /dev/termination-log): the message still goes to the log
        log.warning("cannot write the termination message to %s: %s", path, exc)
    print(text, flush=True)


def run(env_input: str, catalog_path: str) -> tuple[ExitCode, TerminationMessage]:
    """Execute the job and upload its result; returns the exit code and the termination message."""
    from img2img_runner.errors import classify

    report = TerminationMessage(startedAt=now_ms())
    try:
        job_input = read_job(env_input)
        from img2img_runner.catalog import Catalog
        from img2img_runner.execute import execute

        catalog = Catalog.from_file(catalog_path)

        def loaded() -> None:
            report.modelsLoadedAt = now_ms()
            report.modelLoadTime = report.modelsLoadedAt - report.startedAt
            log.info("models loaded in %d ms", report.modelLoadTime)

        result = execute(job_input, catalog, on_models_loaded=loaded)
        inference_done = now_ms()
        report.inferenceTime = inference_done - (report.modelsLoadedAt or report.startedAt)

        from img2img_runner.storage import image_files, upload_result

        files = image_files(result.images, result.encoding)
        output = output_location(env_input)
        body = {"info": result.info, "parameters": result.parameters,
                "timings": {"startedAt": report.startedAt, "modelsLoadedAt": report.modelsLoadedAt,
                            **result.timings}}
        if output.startswith("s3://"):
            # finishedAt/uploadTime cover the images; result.json (which carries them) is written right after
            report.result = upload_result(output, files, body, image_format=result.encoding.format).result
        else:
            _, report.result = write_local(output, files, result.encoding.format.extension, body)
        report.finishedAt = now_ms()
        report.uploadTime = report.finishedAt - inference_done
        log.info("done: %d images, result %s", len(result.images), report.result)
        return ExitCode.OK, report
    except Exception as exc:  # noqa: BLE001 - every failure becomes an exit code and a message
        failure = classify(exc)
        if failure.code == ExitCode.CRASH:
            log.exception("job crashed")
        else:
            log.error("job failed: %s %s: %s", failure.code.name, failure.field or "", failure.message)
        report.finishedAt = now_ms()
        report.error = failure
        return failure.code, report


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv)[:1] == ["serve"]:  # a pool's runner (img2img_runner.worker)
        from img2img_runner.worker import serve

        return serve()
    setup_logging(job_context_from_env())
    args = sys.argv[1:] if argv is None else argv
    location = os.environ.get("IMG2IMG_JOB_INPUT") or (args[0] if args else None)
    catalog = os.environ.get("IMG2IMG_CATALOG")
    if not location or not catalog:
        missing = [n for n, v in (("IMG2IMG_JOB_INPUT", location), ("IMG2IMG_CATALOG", catalog)) if not v]
        failure = RunnerFailure(code=ExitCode.CRASH,
                                message=f"the runner needs {' and '.join(missing)} in its environment")
        write_termination_message(TerminationMessage(startedAt=now_ms(), finishedAt=now_ms(), error=failure))
        return int(ExitCode.CRASH)
    code, message = run(location, catalog)
    write_termination_message(message)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
