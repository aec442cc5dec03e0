"""The runner endpoint: runners take work, heartbeat and report here (``img2img.api.protocol``), on ``runners.port``.

Only runner pods the operator created are served: the bearer token must be signed with the operator's key
(``protocol.token_runner``), name the runner the message says, and that runner must be a pod of the runner
namespace that has not ended. Anything else is 401.

- take (long poll): the runner is registered idle with the models it serves; the operator picks a job for it
  (``routing.pick_job`` among the jobs offered to its pool's GPU class), writes the assignment into the job's status
  under the resourceVersion it decided on (409: decide again), grants the lease, and only then answers with the
  assignment and its presigned URLs. No job within the wait: 204.
- heartbeat: renews the lease, records progress, answers ``stop`` when the job was cancelled or deleted, ran past
  its deadline, or the lease is not the job's current one (``lifecycle.stop_reason``). A heartbeat of a lease an
  earlier operator process granted is adopted when the job's status still names that attempt on that runner.
- done: records the outcome of the current lease, has the job decided at once (``Dispatcher.settle``) and answers
  accepted once the attempt's end is in the job's status (503 until then: the runner asks again), with the runner's
  next assignment when it sent its models and a job waits for it now (assigned as a take assigns, without waiting).
  Any other lease: 409 ``{accepted: false}``, nothing changed.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from img2img.api.images import plain_key, s3_allowed
from img2img.api.limits import PRESIGN_MAX_SECONDS
from img2img.api.protocol import (
    DONE,
    HEARTBEAT,
    RESULT_CONTENT_TYPE,
    TAKE,
    Assignment,
    Done,
    DoneReply,
    Heartbeat,
    HeartbeatReply,
    JobRef,
    Outputs,
    TakeRequest,
    token_runner,
)

from .cache import Cache
from .config import OperatorConfig
from .controls import Checked
from .dispatcher import Dispatcher
from .kube import Conflict, Gone, Kube
from .leases import Lease, LeaseTable, adoptable, lease_job, new_lease_id
from .lifecycle import STOP_LOST, assignment_status, stop_reason
from .metrics import Metrics
from .routing import held, pick_job
from .runners import Registry, idle
from .runpod_timings import submitted_at_ms
from .staging import Staging, attempt_outputs, job_location
from .views import JobView

log = logging.getLogger("img2img_operator.runner_api")

MAX_BODY = 1 << 20  # an outcome is small; a runner never sends more
PRESIGN_SLACK_SECONDS = 600  # the URLs outlive the job's deadline by this much (uploads after the last step)
TAKE_TRIES = 5  # conflicts in a row before a take gives up this round
SHUTDOWN_SECONDS = 3.0  # how long stop() lets calls under way finish


class RunnerApi:
    def __init__(self, config: OperatorConfig, cache: Cache, dispatcher: Dispatcher, leases: LeaseTable,
                 registry: Registry, kube: Kube, staging: Staging, metrics: Metrics, key: bytes,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None):
        self.config = config
        self.cache = cache
        self.dispatcher = dispatcher
        self.leases = leases
        self.registry = registry
        self.kube = kube
        self.staging = staging
        self.metrics = metrics
        self.key = key
        self.clock = clock
        self.rng = rng or random.SystemRandom()
        self._runner: web.AppRunner | None = None
        self.stopping = False  # set by stop(): waiting takes answer "no work" at once, and no job is handed out

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(TAKE, self.take)
        app.router.add_post(HEARTBEAT, self.heartbeat)
        app.router.add_post(DONE, self.done)
        return app

    async def start(self, host: str = "0.0.0.0", port: int | None = None) -> None:
        # a call still under way SHUTDOWN_SECONDS into stop() is cut: the Lease must be released before its renew
        # deadline passes, or the process ends without releasing it and the standby waits out the lease duration
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, self.config.runners.port if port is None else port).start()

    async def stop(self) -> None:
        """Stop serving: waiting takes end now with no work (a runner's long poll would otherwise hold the shutdown
        for up to ``takeWaitSeconds``), then the server closes."""
        self.stopping = True
        self.dispatcher.notify_takes()
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- the three calls over HTTP ---------------------------------------------------------------------------
    async def take(self, request: web.Request) -> web.StreamResponse:
        message, refused = await self._read(request, TakeRequest)
        if refused is not None:
            return refused
        assignment = await self.serve_take(message)
        if assignment is None:
            return web.Response(status=204)
        return web.json_response(assignment.model_dump())

    async def heartbeat(self, request: web.Request) -> web.StreamResponse:
        beat, refused = await self._read(request, Heartbeat)
        if refused is not None:
            return refused
        return web.json_response(self.serve_heartbeat(beat).model_dump())

    async def done(self, request: web.Request) -> web.StreamResponse:
        done, refused = await self._read(request, Done)
        if refused is not None:
            return refused
        reply = await self.serve_done(done)
        if reply is None:
            return web.json_response({"error": "the outcome is not recorded yet; report it again"}, status=503)
        return web.json_response(reply.model_dump(), status=200 if reply.accepted else 409)

    # ---- what they do (for a runner already authenticated) ----------------------------------------------------
    async def serve_take(self, message: TakeRequest) -> Assignment | None:
        """An assignment for the runner within its wait, or None."""
        return await self._take(message.runner, message.models,
                                min(message.waitSeconds, self.config.runners.take_wait_seconds))

    async def _take(self, runner: str, models: list[str], wait: float) -> Assignment | None:
        """An assignment for ``runner`` within ``wait`` seconds (0: only a job that waits now), or None."""
        started = time.monotonic()
        self.registry.taking(runner, models, self.now_ms())
        self.dispatcher.notify_takes()  # an idle runner more: others may leave it a job it holds warm
        self.dispatcher.poke()
        assignment = None
        try:
            while not self.stopping:
                assignment = await self._assign(runner, models)
                left = wait - (time.monotonic() - started)
                if assignment is not None or left <= 0:
                    return assignment
                await self.dispatcher.offers_changed(left)
            return None
        finally:
            self.registry.took(runner, self.now_ms(), assigned=assignment is not None)
            self.dispatcher.poke()

    def serve_heartbeat(self, beat: Heartbeat) -> HeartbeatReply:
        lease = self._lease(beat.lease, beat.runner)
        if lease is None:
            return HeartbeatReply(stop=STOP_LOST)
        lease.renewed_ms = now = self.now_ms()
        if (beat.step, beat.steps) != (lease.step, lease.steps):
            lease.step, lease.steps = beat.step, beat.steps
            self.cache.touch(lease.uid)  # progress to write
        stop = stop_reason(self.cache.job_view(lease.uid), lease, now, self.config)
        return HeartbeatReply(stop=stop, leaseSeconds=self.config.runners.lease_seconds)

    async def serve_done(self, done: Done) -> DoneReply | None:
        """Accepted once the attempt's end is in the job's status, with the runner's next assignment when it asked
        (``done.models``) and one is there; refused for a lease not current; None: not recorded yet (the status
        write failed: the runner reports again)."""
        lease = self._lease(done.lease, done.runner)
        if lease is None:
            return DoneReply(accepted=False, reason=f"lease {done.lease} is not its job's current one")
        if lease.outcome is None:
            lease.outcome = dict(done.outcome)
            lease.renewed_ms = self.now_ms()
        await self.dispatcher.settle(lease.uid)
        if self.leases.get(done.lease) is not None:
            return None
        following = await self._take(done.runner, done.models, 0) if done.models is not None else None
        return DoneReply(accepted=True, assignment=following)

    # ---- helpers ----------------------------------------------------------------------------------------------
    async def _read(self, request: web.Request, model: type[BaseModel]) -> tuple[Any, web.Response | None]:
        """The message, if it comes from a runner the operator created and is well formed; else the refusal."""
        if not self.dispatcher.synced:
            return None, web.json_response({"error": "the operator is starting"}, status=503)
        try:
            message = model.model_validate_json(await request.read())
        except ValidationError as e:
            return None, web.json_response({"error": f"not a {model.__name__}: {e}"}, status=400)
        authorization = request.headers.get("Authorization", "")
        token = authorization[len("Bearer "):].strip() if authorization.startswith("Bearer ") else ""
        runner = token_runner(self.key, token) if token else None
        pod = self.cache.pod(runner) if runner is not None else None
        if runner is None or runner != message.runner or pod is None or pod.finished:
            log.warning("refused a %s call: %s", model.__name__,
                        "no valid runner token" if runner is None else f"runner {runner} is not a live runner pod"
                        if runner == message.runner else f"the token names {runner}, the message "
                        f"{message.runner}")
            return None, web.json_response({"error": "unknown runner"}, status=401)
        return message, None

    def _lease(self, lease_id: str, runner: str) -> Lease | None:
        """The job's current lease, if ``lease_id`` is it and ``runner`` holds it; adopted from an earlier operator
        process when the job's status says it runs there."""
        lease = self.leases.get(lease_id)
        named = lease_job(lease_id)
        if lease is None and named is not None and not self.leases.holds(named[0]):
            job = self.cache.job_view(named[0])
            if adoptable(job, lease_id, runner):
                pod = self.cache.pod(runner)
                lease = Lease(lease_id, named[0], named[1], runner, renewed_ms=self.now_ms(),
                              pool=pod.pool if pod else "")
                self.leases.grant(lease)
                log.info("adopted lease %s of runner %s", lease_id, runner)
        return lease if lease is not None and lease.runner == runner else None

    async def _assign(self, runner: str, models: list[str]) -> Assignment | None:
        """A job for ``runner``, its assignment recorded in the job's status; None when none fits now."""
        pod = self.cache.pod(runner)
        pool = self.dispatcher.pools.get(pod.pool) if pod is not None else None
        if pod is None or not pod.live or pool is None or self.dispatcher.retiring(runner):
            return None
        wait_ms = int(self.config.runners.take_wait_seconds * 1000)
        for _ in range(TAKE_TRIES):
            now = self.now_ms()
            uid = pick_job(models, self.dispatcher.candidates(pool.gpu_class),
                           self._idle_models(pool.gpu_class, runner, now, wait_ms))
            job = self.cache.job_view(uid) if uid is not None else None
            if job is None:
                return None
            if not self.leases.claim(job.uid, runner):
                continue
            try:
                checked = self.dispatcher.check(job)
                if checked is None or checked.needs is None:
                    continue
                attempt = job.attempts + 1
                assignment = self._assignment(job, checked, attempt, new_lease_id(job.uid, attempt, self.rng))
                patch = assignment_status(job, now, runner, attempt)
                body = await self.kube.patch_job_status(job.namespace, job.name, patch, job.resource_version,
                                                        job.status)
            except Conflict:  # the job changed since it was offered: read it and decide again
                fresh = await self.kube.read_job(job.namespace, job.name)
                if fresh is not None:
                    self.cache.put_job(fresh)
                continue
            except Gone:
                self.cache.forget_job(job.uid)
                continue
            except Exception as e:
                log.warning("cannot assign %s/%s to runner %s: %s", job.namespace, job.name, runner, e)
                return None
            finally:
                self.leases.unclaim(job.uid)
            warm = checked.needs.models <= held(models)
            self.leases.grant(Lease(assignment.lease, job.uid, attempt, runner, renewed_ms=now, pool=pool.name,
                                    warm=warm, written_ms=now))
            self.metrics.observe_status_write(job.status, patch)
            self.metrics.assigned(pool.name, warm, (now - submitted_at_ms(job)) / 1000)
            self.cache.put_job(body)
            self.dispatcher.notify_takes()
            log.info("attempt %d → runner %s (%s)", attempt, runner, "warm" if warm else "loads models",
                     extra={"job": job.name, "namespace": job.namespace, "uid": job.uid, "attempt": attempt})
            return assignment
        return None

    def _idle_models(self, gpu_class: str, runner: str, now: int, wait_ms: int) -> list[tuple[str, ...]]:
        """What the other idle runners of the GPU class serve (a job one of them serves warm is left to it)."""
        taking = self.leases.claimers()
        out = []
        for pod in self.cache.pods():
            pool = self.dispatcher.pools.get(pod.pool)
            seen = self.registry.get(pod.name)
            if (pod.name != runner and pod.live and pool is not None and pool.gpu_class == gpu_class
                    and pod.name not in taking and seen is not None and idle(seen, now, wait_ms)):
                out.append(seen.models)
        return out

    def _assignment(self, job: JobView, checked: Checked, attempt: int, lease_id: str) -> Assignment:
        """The attempt's assignment, with presigned URLs for exactly its input, the images it may read, and its
        outputs; they live as long as the job may run."""
        assert checked.needs is not None
        c, needs, runners = checked.controls, checked.needs, self.config.runners
        seconds = min(PRESIGN_MAX_SECONDS, c.timeout_seconds + int(runners.lease_seconds) + PRESIGN_SLACK_SECONDS)
        location = job_location(job, c, self.config)
        allowed = self.config.s3.allowed_reads(job.namespace)
        images = {str(ref): self.staging.presign_get(str(ref), seconds) for ref in needs.reads
                  if plain_key(ref.key) and s3_allowed(ref, allowed)}
        image_uris, result_uri = attempt_outputs(location, attempt, needs.images, needs.image_format.extension)
        content_type = needs.image_format.content_type
        outputs = Outputs(imageUris=image_uris,
                          imageUrls=[self.staging.presign_put(u, content_type, seconds) for u in image_uris],
                          resultUri=result_uri,
                          resultUrl=self.staging.presign_put(result_uri, RESULT_CONTENT_TYPE, seconds))
        return Assignment(lease=lease_id, job=JobRef(namespace=job.namespace, name=job.name, uid=job.uid,
                                                     attempt=attempt),
                          inputUrl=self.staging.presign_get(location + "input.json", seconds), images=images,
                          outputs=outputs, submittedAt=submitted_at_ms(job), leaseSeconds=runners.lease_seconds,
                          heartbeatSeconds=runners.heartbeat_seconds)
