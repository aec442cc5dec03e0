"""``img2img-runner serve``: a runner of a warm pool. It loads its pool's models once, then asks the operator for
work, runs one job at a time and asks again (the protocol: ``img2img.api.protocol``).

Environment, set by the operator on the runner pod: ``IMG2IMG_OPERATOR_URL``, ``IMG2IMG_RUNNER_TOKEN``,
``IMG2IMG_RUNNER_NAME``, ``IMG2IMG_POOL`` (for the logs), ``IMG2IMG_POOL_MODELS`` (a JSON list of catalog names,
loaded at start), ``IMG2IMG_CATALOG``; optional ``IMG2IMG_MODEL_MEMORY_BUDGET`` (bytes of weights kept loaded,
``pipelines.ModelCache``).

- take (long poll; 204: ask again), with the model names the runner serves without loading (``Catalog.servable``:
  the models it holds, their aliases and what runs as them). No connection or a 5xx: wait (backoff up to 10 s) and ask again; the runner
  never gives up on the operator. 401/403: the operator does not accept this runner's token, which no retry mends:
  the runner exits 1 (its pod fails and is replaced).
- an assignment: read ``input.json`` (presigned GET); ``s3://`` images through the assignment's presigned GETs;
  execute; upload the images, then ``result.json`` (presigned PUTs); report ``done`` with the outcome and the models
  it serves: the answer may carry the next assignment; else take again.
- heartbeats, from a thread, every ``heartbeatSeconds`` (sooner when progress moves, at most once a second) with
  step k of n. An answer ``stop`` interrupts the job at its next denoising step: ``cancelled`` -> outcome error
  CANCELLED, ``deadline`` -> TIMED_OUT, ``lost`` -> nothing is reported (the lease is not this runner's any more).
- the outcome has the termination message's fields (``img2img.api.termination``): ``result``, ``error`` {code,
  field, message}, ``startedAt`` (when the assignment arrived), ``modelsLoadedAt``, ``finishedAt``,
  ``modelLoadTime`` (time spent loading models for this job: 0 on a warm runner), ``inferenceTime``, ``uploadTime``.
  A failed job is an outcome, not the end of the runner; an unexpected exception is a CRASH outcome. A ``done``
  answered 409 (the lease is no longer current) is logged and dropped.
- SIGTERM: idle, the runner exits 0 at once; busy, the job stops at its next step and is reported (CRASH: the
  operator retries it elsewhere), then the runner exits 0.

Only a failure to start (environment, catalog, loading the pool's models) exits non-zero.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from pydantic import BaseModel

from img2img.api.exitcodes import ExitCode
from img2img.api.protocol import (DONE, ENV_OPERATOR_URL, ENV_POOL, ENV_POOL_MODELS, ENV_RUNNER_NAME,
                                  ENV_RUNNER_TOKEN, HEARTBEAT, RESULT_CONTENT_TYPE, TAKE,
                                  Assignment, Done, DoneReply, Heartbeat, HeartbeatReply, Outputs, TakeRequest)
from img2img_runner.main import now_ms, parse_job, setup_logging

if TYPE_CHECKING:
    from img2img_runner.catalog import Catalog
    from img2img_runner.pipelines import ModelCache

log = logging.getLogger("img2img_runner.worker")

ENV_CATALOG = "IMG2IMG_CATALOG"
TERMINATING = "terminating"  # the runner's own stop reason (SIGTERM while busy), beside the operator's
STOP_CODES = {"cancelled": "CANCELLED", "deadline": "TIMED_OUT", TERMINATING: ExitCode.CRASH.name}
MIN_BEAT_INTERVAL = 1.0  # progress moves heartbeats forward, at most this often
BACKOFF_START, BACKOFF_MAX = 0.5, 10.0
# ~45 s of backoff: an outcome is worth waiting for an operator that restarts or fails over to its standby
# (leaderElection.leaseDurationSeconds + retryPeriodSeconds + the new leader's start: ~20 s by default)
DONE_ATTEMPTS = 9
CALL_TIMEOUT = 10.0  # heartbeat and done; take waits its long poll on top of it


class StartError(Exception):
    """The runner cannot start: its environment is wrong."""


@dataclass(frozen=True)
class Settings:
    operator_url: str
    token: str
    runner: str
    models: tuple[str, ...]  # loaded at start
    catalog: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        missing = [n for n in (ENV_OPERATOR_URL, ENV_RUNNER_TOKEN, ENV_RUNNER_NAME, ENV_CATALOG) if not env.get(n)]
        if missing:
            raise StartError(f"the runner needs {', '.join(missing)} in its environment")
        raw = env.get(ENV_POOL_MODELS) or "[]"
        try:
            models = json.loads(raw)
        except ValueError:
            models = None
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise StartError(f"{ENV_POOL_MODELS} must be a JSON list of catalog names, not {raw[:200]!r}")
        return cls(operator_url=env[ENV_OPERATOR_URL], token=env[ENV_RUNNER_TOKEN], runner=env[ENV_RUNNER_NAME],
                   models=tuple(models), catalog=env[ENV_CATALOG])


# --- the operator's runner endpoint ----------------------------------------------------------------------------


class Unreachable(Exception):
    """No usable answer from the operator (no connection, a 5xx, an answer of another protocol): try again later."""


class TokenRefused(Exception):
    """The operator refused the runner's token (401/403)."""


class OperatorLink:
    """The runner's calls to the operator: JSON POSTs with ``Authorization: Bearer <token>``."""

    def __init__(self, url: str, token: str):
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        # the runner endpoint is a cluster Service (or 127.0.0.1): never through an HTTP proxy from the environment
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def take(self, request: TakeRequest) -> Assignment | None:
        """An assignment, or None when ``waitSeconds`` passed without work."""
        status, body = self._post(TAKE, request, request.waitSeconds + CALL_TIMEOUT)
        if status == 204:
            return None
        return self._answer(TAKE, status, body, Assignment, ok=(200,))

    def heartbeat(self, beat: Heartbeat) -> HeartbeatReply:
        return self._answer(HEARTBEAT, *self._post(HEARTBEAT, beat, CALL_TIMEOUT), HeartbeatReply, ok=(200,))

    def done(self, done: Done) -> DoneReply:
        status, body = self._post(DONE, done, CALL_TIMEOUT)
        if status == 409:  # fencing: the lease is not current (the body says why, for the log)
            return DoneReply(accepted=False, reason=_text(body))
        return self._answer(DONE, status, body, DoneReply, ok=(200,))

    def _post(self, path: str, message: BaseModel, timeout: float) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, data=message.model_dump_json().encode(),
                                         headers=self._headers, method="POST")
        try:
            with self._opener.open(request, timeout=timeout) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                status, body = exc.code, exc.read(4096)
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
            raise Unreachable(f"{path}: {exc}") from None
        if status in (401, 403):
            raise TokenRefused(f"{path}: HTTP {status} {_text(body)}")
        return status, body

    @staticmethod
    def _answer(path: str, status: int, body: bytes, model: type[BaseModel], ok: tuple[int, ...]) -> Any:
        if status not in ok:
            raise Unreachable(f"{path}: HTTP {status} {_text(body)}")
        try:
            return model.model_validate_json(body)
        except ValueError as exc:
            raise Unreachable(f"{path}: an answer that is not a {model.__name__}: {exc}") from None


def _text(body: bytes) -> str:
    return body[:200].decode(errors="replace")


# --- one assignment --------------------------------------------------------------------------------------------


class Interrupted(Exception):
    """The job was stopped at a step: by the operator (``stop``) or by SIGTERM (``terminating``)."""

    def __init__(self, reason: str, step: int | None, steps: int | None):
        super().__init__(f"stopped ({reason}) at step {step} of {steps}")
        self.reason = reason


class Lease:
    """An assignment while it runs: its progress, the stop asked for it, and the heartbeats that keep it."""

    def __init__(self, link: OperatorLink, runner: str, assignment: Assignment):
        self.link = link
        self.beat = Heartbeat(runner=runner, lease=assignment.lease)
        self.interval = assignment.heartbeatSeconds
        self.step: int | None = None
        self.steps: int | None = None
        self.stop: str | None = None
        self._moved = threading.Event()
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._ended.set()
        self._moved.set()
        self._thread.join(CALL_TIMEOUT + 1)

    def progress(self, step: int, steps: int) -> None:
        """The job's step callback: step ``step`` of ``steps`` is done. Raises Interrupted when a stop was asked."""
        self.step, self.steps = step, steps
        self._moved.set()
        self.check()

    def check(self) -> None:
        if self.stop is not None:
            raise Interrupted(self.stop, self.step, self.steps)

    def request_stop(self, reason: str) -> None:
        if self.stop is None:
            self.stop = reason

    def _beat(self) -> None:
        while not self._ended.is_set():
            self._send()
            if self._ended.wait(min(MIN_BEAT_INTERVAL, self.interval)):
                return
            self._moved.wait(max(0.0, self.interval - MIN_BEAT_INTERVAL))
            self._moved.clear()

    def _send(self) -> None:
        try:
            reply = self.link.heartbeat(self.beat.model_copy(update={"step": self.step, "steps": self.steps}))
        except (Unreachable, TokenRefused) as exc:
            log.warning("heartbeat failed: %s", exc)
            return
        if reply.stop is not None and self.stop is None:
            log.info("the operator stops the job: %s", reply.stop)
            self.request_stop(reply.stop)


def upload(outputs: Outputs, files: list[bytes], content_type: str, body: dict[str, Any]) -> str:
    """The images (each PUT with the job's image ``content_type``, which the operator signed them for), then
    result.json (last: its presence means the upload is complete), to the presigned PUTs. Returns result.json's
    URI."""
    from img2img_runner import presigned
    from img2img_runner.errors import JobFailure

    if len(files) > len(outputs.imageUrls):
        raise JobFailure(f"the job made {len(files)} images and the assignment has upload URLs for "
                         f"{len(outputs.imageUrls)}")
    for data, url, uri in zip(files, outputs.imageUrls, outputs.imageUris):
        presigned.put(url, data, f"uploading {uri}", content_type=content_type)
    result = json.dumps({**body, "images": outputs.imageUris[:len(files)]}).encode()
    presigned.put(outputs.resultUrl, result, f"uploading {outputs.resultUri}", content_type=RESULT_CONTENT_TYPE)
    return outputs.resultUri


# --- the loop --------------------------------------------------------------------------------------------------


class Worker:
    def __init__(self, runner: str, link: OperatorLink, catalog: Catalog, cache: ModelCache, *,
                 log_context: dict[str, Any] | None = None):
        self.runner = runner
        self.link = link
        self.catalog = catalog
        self.cache = cache  # the pool's models loaded
        self.log_context = log_context if log_context is not None else {}
        self.terminating = False
        self.lease: Lease | None = None  # the job in progress

    def serve_forever(self) -> int:
        """Take and run jobs until ``stop``; returns 0. TokenRefused leaves it."""
        delay = BACKOFF_START
        following: Assignment | None = None  # handed out with the answer to the last done
        while not self.terminating:
            if following is not None:
                following = self.serve_one(following)
                continue
            try:
                assignment = self.link.take(TakeRequest(runner=self.runner, models=self.servable()))
            except Unreachable as exc:
                log.warning("cannot take work (%s); asking again in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_START
            if assignment is not None:
                following = self.serve_one(assignment)
        return 0

    def servable(self) -> list[str]:
        return self.catalog.servable(self.cache.held())

    def stop(self) -> bool:
        """Leave the loop: at once when idle, else after the current job, which stops at its next step.
        Returns whether a job was in progress."""
        self.terminating = True
        lease = self.lease
        if lease is not None:
            lease.request_stop(TERMINATING)
        return lease is not None

    def serve_one(self, assignment: Assignment) -> Assignment | None:
        """Run an assignment and report it; the next one, when the operator answered the report with it."""
        started = now_ms()
        job = assignment.job
        with self._job_context(namespace=job.namespace, job=job.name, uid=job.uid, attempt=job.attempt), \
                Lease(self.link, self.runner, assignment) as lease:
            self.lease = lease
            try:
                log.info("assigned (lease %s)", assignment.lease)
                outcome = self.run(assignment, lease, started)
                return self.report(assignment, outcome) if outcome is not None else None
            finally:
                self.lease = None

    def run(self, assignment: Assignment, lease: Lease, started: int) -> dict[str, Any] | None:
        """The outcome of an assignment; None when its lease was lost (nothing to report)."""
        from img2img_runner import presigned
        from img2img_runner.errors import classify
        from img2img_runner.execute import execute
        from img2img_runner.storage import image_files

        outcome: dict[str, Any] = {"result": None, "error": None, "startedAt": started, "modelsLoadedAt": None,
                                   "finishedAt": None, "modelLoadTime": None, "inferenceTime": None,
                                   "uploadTime": None}
        load_seconds = self.cache.load_seconds

        def loaded() -> None:
            outcome["modelsLoadedAt"] = now_ms()
            outcome["modelLoadTime"] = int((self.cache.load_seconds - load_seconds) * 1000)

        try:
            job_input = parse_job(presigned.get(assignment.inputUrl, "reading input.json"), "input.json")
            result = execute(job_input, self.catalog, cache=self.cache, presigned=assignment.images,
                             on_models_loaded=loaded, on_step=lease.progress)
            inferred = now_ms()
            outcome["inferenceTime"] = inferred - (outcome["modelsLoadedAt"] or started)
            lease.check()  # stopped after the last step: the result is not wanted any more
            body = {"info": result.info, "parameters": result.parameters,
                    "timings": {"startedAt": started, "modelsLoadedAt": outcome["modelsLoadedAt"], **result.timings}}
            outcome["result"] = upload(assignment.outputs, image_files(result.images, result.encoding),
                                       result.encoding.format.content_type, body)
            outcome["finishedAt"] = now_ms()
            outcome["uploadTime"] = outcome["finishedAt"] - inferred
            log.info("done: %d images in %d ms", len(result.images), outcome["finishedAt"] - started)
        except Interrupted as exc:
            log.info("job %s", exc)
            if exc.reason == "lost":
                return None
            outcome["error"] = {"code": STOP_CODES[exc.reason], "field": None, "message": f"the job was {exc}"}
        except Exception as exc:  # noqa: BLE001 - every failure of a job is its outcome; the runner goes on
            failure = classify(exc)
            if failure.code == ExitCode.CRASH:
                log.exception("job crashed")
            else:
                log.error("job failed: %s %s: %s", failure.code.name, failure.field or "", failure.message)
            outcome["error"] = failure.model_dump(mode="json")
        outcome["finishedAt"] = outcome["finishedAt"] or now_ms()
        return outcome

    def report(self, assignment: Assignment, outcome: dict[str, Any]) -> Assignment | None:
        """Report the outcome, asking for the next job in the answer unless the runner is stopping; that job."""
        done = Done(runner=self.runner, lease=assignment.lease, outcome=outcome,
                    models=None if self.terminating else self.servable())
        delay = BACKOFF_START
        for attempt in range(1, DONE_ATTEMPTS + 1):
            try:
                reply = self.link.done(done)
            except Unreachable as exc:
                if attempt == DONE_ATTEMPTS:
                    log.error("cannot report the outcome (%s); giving up: the lease lapses", exc)
                    return None
                log.warning("cannot report the outcome (%s); again in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            if not reply.accepted:
                log.warning("the operator refused the outcome (%s): the lease is not this runner's any more",
                            reply.reason)
            return reply.assignment
        return None

    @contextlib.contextmanager
    def _job_context(self, **fields: Any) -> Iterator[None]:
        """The job's names on every log line while it runs."""
        self.log_context.update(fields)
        try:
            yield
        finally:
            for key in fields:
                self.log_context.pop(key, None)


def serve(env: Mapping[str, str] = os.environ) -> int:
    """``img2img-runner serve``: load the pool's models, then serve jobs until SIGTERM. Returns the exit code."""
    from img2img_runner.catalog import Catalog
    from img2img_runner.errors import classify
    from img2img_runner.pipelines import ModelCache

    context: dict[str, Any] = {"runner": env.get(ENV_RUNNER_NAME), "pool": env.get(ENV_POOL)}
    setup_logging(context)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # while starting there is nothing to finish
    try:
        settings = Settings.from_env(env)
        catalog = Catalog.from_file(settings.catalog)
        cache = ModelCache(catalog)
        cache.preload(list(settings.models), field=ENV_POOL_MODELS)
    except Exception as exc:  # noqa: BLE001 - a runner that cannot start says why and fails visibly
        field = getattr(exc, "field", None)  # a ModelError names the list (IMG2IMG_POOL_MODELS) or the model
        log.error("cannot start: %s%s", f"{field}: " if field else "", exc, exc_info=not isinstance(exc, StartError))
        return int(classify(exc).code)
    log.info("ready: %d models loaded in %.1f s (%s)", cache.loads, cache.load_seconds, ", ".join(cache.held()))

    worker = Worker(settings.runner, OperatorLink(settings.operator_url, settings.token), catalog, cache,
                    log_context=context)

    def on_sigterm(*_: Any) -> None:
        if not worker.stop():
            sys.exit(0)  # idle: leave at once, even in the middle of a long poll

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return worker.serve_forever()
    except TokenRefused as exc:
        log.error("the operator refuses this runner's token (%s): exiting so that the pod is replaced", exc)
        return int(ExitCode.CRASH)
