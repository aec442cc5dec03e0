"""RunPod's serverless queue API over Img2ImgJobs (aiohttp): the handlers, each a few calls around the pure modules.

Under ``/v2/{endpoint}/``: ``run``, ``runsync[?wait=ms]``, ``status/{id}``, ``status-sync/{id}[?wait=ms]``,
``stream/{id}`` (GET or POST), ``cancel/{id}``, ``retry/{id}``, ``purge-queue``, ``health``. Success is HTTP 200
with JSON (the JS SDK treats anything else as an error); every error is JSON ``{"error": …}`` with 400, 401, 404,
413, 429 or 500. ``/healthz`` (no key) says whether the gateway has its keys and its view of the jobs;
``/v2/webhook-public-key`` (no key) the ``whpk_`` key every webhook is signed with (``img2img.api.webhook_signing``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web
from kubernetes_asyncio.client.exceptions import ApiException

from img2img.api.answer import answer, images_wanted, job_id, output_mode
from img2img.api.errors import Problem
from img2img.api.webhook_signing import SIGNATURE_VERSION
from img2img.client.errors import ClientError, one_line
from img2img.client.kube import api_reason
from img2img.kube import KubeError
from img2img.client.wait import TERMINAL_STATES
from img2img_gateway import discovery
from img2img_gateway.answers import short_answer
from img2img_gateway.auth import Grant, RateLimiter, Refusal, authorize
from img2img_gateway.config import Endpoint, GatewayConfig
from img2img_gateway.health import health
from img2img_gateway.kube import Kube
from img2img_gateway.objects import Objects
from img2img_gateway.store import JobStore
from img2img_gateway.stream import stream_answer
from img2img_gateway.submission import (
    BadRequest, S3Config, Submission, build_submission, get_endpoint_of, parse_body, retry_manifest,
)

log = logging.getLogger("img2img_gateway")

MB = 1024 * 1024
RUN_BODY_LIMIT = 10 * MB  # RunPod's limits on a request body
RUNSYNC_BODY_LIMIT = 20 * MB
WAIT_DEFAULT_MS = 90_000  # RunPod's runsync default
WAIT_MIN_MS, WAIT_MAX_MS = 1_000, 300_000
RETRYABLE = ("FAILED", "TIMED_OUT")
COPIED_TO = "img2img.dev/s3config-copy"  # where the copy to a caller's bucket went, or why it failed


class Refused(Exception):
    """An answer other than 200: its status and the reason, for the caller."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def wait_ms(request: web.Request) -> int:
    """``?wait=`` in ms, clamped to RunPod's 1 000–300 000; 90 000 when absent."""
    raw = request.query.get("wait")
    if raw is None or raw == "":
        return WAIT_DEFAULT_MS
    try:
        value = int(raw)
    except ValueError:
        raise Refused(400, f"wait: {raw[:40]!r} is not a whole number of milliseconds") from None
    return min(max(value, WAIT_MIN_MS), WAIT_MAX_MS)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Gateway:
    config: GatewayConfig
    kube: Kube
    store: JobStore
    objects: Objects
    catalog: Any  # img2img_runner.catalog.Catalog, or None without one
    grants: list[Grant] = field(default_factory=list)
    keys_loaded: bool = False
    webhook_public_key: str | None = None  # as the operator published it; read with the keys
    limiter: RateLimiter = field(default_factory=RateLimiter)
    clock: Callable[[], float] = time.monotonic
    background: set[asyncio.Task] = field(default_factory=set)

    # ---- the app --------------------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=RUNSYNC_BODY_LIMIT, middlewares=[self._errors, self._authorized])
        ops: list[tuple[str, str, Callable[..., Awaitable[web.Response]]]] = [
            ("POST", "run", self.run), ("POST", "runsync", self.runsync),
            ("POST", "purge-queue", self.purge_queue), ("GET", "health", self.health),
            ("POST", "cancel/{id}", self.cancel), ("POST", "retry/{id}", self.retry),
        ]
        for method in ("GET", "POST"):
            ops += [(method, "status/{id}", self.status), (method, "status-sync/{id}", self.status_sync),
                    (method, "stream/{id}", self.stream)]
        for method, path, handler in ops:
            app.router.add_route(method, f"/v2/{{endpoint}}/{path}", handler)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/v2/webhook-public-key", self.public_key)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler) -> web.StreamResponse:
        """Every error as JSON: RunPod clients parse the body of any answer."""
        try:
            return await handler(request)
        except BadRequest as exc:
            return error(400, str(exc), problems=[str(p) for p in exc.problems])
        except Refused as exc:
            return error(exc.status, str(exc))
        except web.HTTPRequestEntityTooLarge:  # past the largest body any operation takes
            return error(413, f"the body is larger than {RUNSYNC_BODY_LIMIT} bytes")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error(exc.status, exc.reason)
        except ClientError as exc:
            log.error("S3: %s", exc)
            return error(500, f"S3: {exc}")
        except ApiException as exc:
            refusal = KubeError.from_answer(exc.status or 0, exc.reason or "", _body_bytes(exc.body))
            if exc.status in (400, 422):  # the API server refused the job: its reasons are the user's to read
                return error(400, api_reason(refusal))
            log.error("Kubernetes API: %s %s", exc.status, one_line(api_reason(refusal)))
            return error(500, f"the Kubernetes API server answered {exc.status}: {api_reason(refusal)}")

    @web.middleware
    async def _authorized(self, request: web.Request, handler) -> web.StreamResponse:
        endpoint_id = request.match_info.get("endpoint")
        if endpoint_id is None:
            return await handler(request)
        granted = authorize(self.grants, request.headers.get("Authorization"), endpoint_id,
                            set(self.config.endpoints))
        if isinstance(granted, Refusal):
            return error(granted.status, granted.message)
        retry_after = self.limiter.wait_needed(granted, self.clock())
        if retry_after > 0:
            response = error(429, f"rate limit of this API key exceeded; retry in {retry_after:.1f} s")
            response.headers["Retry-After"] = str(max(1, round(retry_after)))
            return response
        return await handler(request)

    async def healthz(self, request: web.Request) -> web.Response:
        ready = self.keys_loaded and self.store.synced
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def public_key(self, request: web.Request) -> web.Response:
        """The key receivers verify webhooks with: public, so no API key is asked for."""
        if not self.webhook_public_key:
            return error(503, "the operator has not published its webhook key yet (ConfigMap "
                              f"{self.config.namespace}/{self.config.webhookPublicKeyConfigMap})")
        return web.json_response({"publicKey": self.webhook_public_key, "signature": SIGNATURE_VERSION})

    # ---- helpers --------------------------------------------------------------------------------------------------
    def endpoint(self, request: web.Request) -> tuple[str, Endpoint]:
        endpoint_id = request.match_info["endpoint"]
        return endpoint_id, self.config.endpoints[endpoint_id]

    def job(self, request: web.Request) -> dict[str, Any]:
        _, endpoint = self.endpoint(request)
        job = self.store.find(endpoint.namespace, request.match_info["id"])
        if job is None:
            raise Refused(404, f"no job {request.match_info['id'][:80]!r} in this endpoint")
        return job

    async def full_answer(self, job: dict[str, Any], endpoint: Endpoint) -> web.Response:
        images = await self.objects.images(images_wanted(job), output_mode(job, endpoint.output))
        return web.json_response(answer(job, images if images_wanted(job) else None))

    async def until_final(self, namespace: str, ident: str, seconds: float | None) -> dict[str, Any] | None:
        """The job once it is final, or as it is when ``seconds`` ran out (None: no limit); None when it is gone."""
        deadline = None if seconds is None else self.clock() + seconds
        while True:
            job = self.store.find(namespace, ident)
            left = None if deadline is None else deadline - self.clock()
            if job is None or (job["status"].get("status") in TERMINAL_STATES) or (left is not None and left <= 0):
                return job
            await self.store.wait_change(namespace, ident, left)

    async def body(self, request: web.Request, limit: int) -> dict[str, Any]:
        raw = await request.read()
        if len(raw) > limit:
            raise Refused(413, f"the body is larger than {limit} bytes, the most this operation takes")
        return parse_body(raw)

    async def submit(self, body: dict[str, Any], endpoint_id: str, endpoint: Endpoint,
                     submitted_ms: int) -> tuple[dict[str, Any], Submission]:
        # validation decodes the images: off the event loop
        submission = await asyncio.to_thread(build_submission, body, endpoint_id, endpoint, self.config.s3.bucket,
                                             self.config.allowPrivateAddresses)
        await self.objects.upload_inline_images(submission)
        created = await self.kube.create_job(submission.manifest(submitted_ms))
        log.info("job %s created in %s for endpoint %s", created["metadata"]["name"], endpoint.namespace,
                 endpoint_id)
        return self.store.put(created), submission

    # ---- RunPod's operations --------------------------------------------------------------------------------------
    async def run(self, request: web.Request) -> web.Response:
        submitted = now_ms()
        endpoint_id, endpoint = self.endpoint(request)
        body = await self.body(request, RUN_BODY_LIMIT)
        call = self._discovery_call(body)
        if call:
            return web.json_response({"id": discovery.call_id(call), "status": "COMPLETED"})
        job, submission = await self.submit(body, endpoint_id, endpoint, submitted)
        if submission.s3_config:
            self._in_background(self._copy_when_final(endpoint.namespace, job_id(job), submission.s3_config))
        return web.json_response(short_answer(job, "IN_QUEUE"))

    async def runsync(self, request: web.Request) -> web.Response:
        submitted = now_ms()
        endpoint_id, endpoint = self.endpoint(request)
        wait = wait_ms(request)
        body = await self.body(request, RUNSYNC_BODY_LIMIT)
        call = self._discovery_call(body)
        if call:
            return web.json_response(discovery.answer(call, self.catalog))
        job, submission = await self.submit(body, endpoint_id, endpoint, submitted)
        ident = job_id(job)
        job = await self.until_final(endpoint.namespace, ident, wait / 1000) or job
        if submission.s3_config:
            if job["status"].get("status") in TERMINAL_STATES:
                await self._copy(job, submission.s3_config)
            else:
                self._in_background(self._copy_when_final(endpoint.namespace, ident, submission.s3_config))
        return await self.full_answer(job, endpoint)

    async def status(self, request: web.Request) -> web.Response:
        call = discovery.endpoint_of_id(request.match_info["id"])
        if call:
            return web.json_response(discovery.answer(call, self.catalog))
        _, endpoint = self.endpoint(request)
        return await self.full_answer(self.job(request), endpoint)

    async def status_sync(self, request: web.Request) -> web.Response:
        call = discovery.endpoint_of_id(request.match_info["id"])
        if call:
            return web.json_response(discovery.answer(call, self.catalog))
        _, endpoint = self.endpoint(request)
        job = self.job(request)
        job = await self.until_final(endpoint.namespace, job_id(job), wait_ms(request) / 1000) or job
        return await self.full_answer(job, endpoint)

    async def stream(self, request: web.Request) -> web.Response:
        if discovery.endpoint_of_id(request.match_info["id"]):
            return web.json_response(stream_answer("COMPLETED", []))
        job = self.job(request)
        chunks = self.store.progress_log(job).drain()
        return web.json_response(stream_answer(job["status"].get("status") or "IN_QUEUE", chunks))

    async def cancel(self, request: web.Request) -> web.Response:
        if discovery.endpoint_of_id(request.match_info["id"]):
            return web.json_response({"id": request.match_info["id"], "status": "COMPLETED"})
        job = self.job(request)
        if job["status"].get("status") in TERMINAL_STATES:
            return web.json_response(short_answer(job))
        self.store.put(await self.kube.cancel_job(job["metadata"]["namespace"], job["metadata"]["name"]))
        return web.json_response(short_answer(job, "CANCELLED"))

    async def retry(self, request: web.Request) -> web.Response:
        job = self.job(request)
        state = job["status"].get("status") or "IN_QUEUE"
        if state not in RETRYABLE:
            raise Refused(400, f"job {job_id(job)} is {state}; only FAILED or TIMED_OUT jobs can be retried")
        whole = await self.kube.get_job(job["metadata"]["namespace"], job["metadata"]["name"])
        created = self.store.put(await self.kube.create_job(retry_manifest(whole, job_id(job), now_ms())))
        return web.json_response(short_answer(created, "IN_QUEUE"))

    async def purge_queue(self, request: web.Request) -> web.Response:
        """Cancel every job of the endpoint's namespace that is still waiting for a runner."""
        _, endpoint = self.endpoint(request)
        superseded = self.store.superseded(endpoint.namespace)
        queued = [j for j in self.store.jobs(endpoint.namespace)
                  if (j["status"].get("status") or "IN_QUEUE") == "IN_QUEUE" and not j["spec"].get("cancel")
                  and j["metadata"]["name"] not in superseded]
        for job in queued:
            self.store.put(await self.kube.cancel_job(job["metadata"]["namespace"], job["metadata"]["name"]))
        return web.json_response({"removed": len(queued), "status": "completed"})

    async def health(self, request: web.Request) -> web.Response:
        _, endpoint = self.endpoint(request)
        pools = await self.kube.list_pools(self.config.runnerNamespace)
        return web.json_response(health(self.store.jobs(endpoint.namespace), self.store.superseded(endpoint.namespace),
                                        pools, endpoint.jobDefaults.gpuClass))

    # ---- discovery and s3Config -----------------------------------------------------------------------------------
    def _discovery_call(self, body: dict[str, Any]) -> str | None:
        call = get_endpoint_of(body)
        if call is None:
            return None
        why = discovery.refusal(call)
        if why:
            raise BadRequest([Problem("input.api.endpoint", why)])
        return call

    def _in_background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _copy_when_final(self, namespace: str, ident: str, target: S3Config) -> None:
        job = await self.until_final(namespace, ident, None)
        if job is not None:
            await self._copy(job, target)

    async def _copy(self, job: dict[str, Any], target: S3Config) -> None:
        """The results into the caller's bucket; where they went (or why not) in an annotation on the job."""
        if job["status"].get("status") != "COMPLETED":
            return
        try:
            copied = await self.objects.copy_results(images_wanted(job), target, job_id(job),
                                                     self.config.allowPrivateAddresses)
            outcome = " ".join(copied)
        except ClientError as exc:
            outcome = f"failed: {exc}"
            log.warning("job %s: s3Config copy %s", job["metadata"]["name"], outcome)
        try:
            await self.kube.annotate_job(job["metadata"]["namespace"], job["metadata"]["name"], {COPIED_TO: outcome})
        except ApiException as exc:  # the job may be gone already (its TTL): the copy is made all the same
            log.warning("job %s: recording the s3Config copy failed (%s)", job["metadata"]["name"], exc.status)


def _body_bytes(body: object) -> bytes:
    """kubernetes_asyncio gives the refusal's body as text or bytes."""
    if isinstance(body, bytes):
        return body
    return str(body or "").encode()
