"""Webhook deliveries: the I/O around ``deliveries``. One task per job whose webhook is owed, beside the dispatcher.

The dispatcher asks for a delivery (``ensure``) whenever it decides on a finished job whose webhook is owed (the
``Deliver`` action of ``lifecycle``): after the job's terminal status is written, and after an operator restart for
every delivery its status shows pending. The job's status is never held up by its webhook.

A delivery reads the job afresh (the cache keeps no output of finished jobs), builds the body once (the job's
RunPod status, its images as its output mode asks: ``img2img.api.answer``), then POSTs it until an attempt is
delivered or given up, each attempt signed anew (``img2img.api.webhook_signing``) and recorded in
``status.webhook`` before the next. Before sending, the URL is checked as the job's validation checks it, and every
address its name resolves to as image fetches check theirs (``img2img.api.addresses``); the connection goes to an
address that was checked. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from aiohttp.resolver import ThreadedResolver
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from img2img.api.addresses import address_refusal, url_refusal
from img2img.api.answer import OutputMode, images_wanted, output_images, output_mode
from img2img.api.webhook_signing import signature_headers

from .cache import Cache
from .config import OperatorConfig
from .deliveries import DELIVERED, GIVE_UP, RETRY, Attempt, after, body, due_at, owed, result_of, webhook_id
from .kube import Gone, Kube
from .metrics import Metrics
from .staging import Staging
from .views import JobView

log = logging.getLogger("img2img_operator.webhooks")

TROUBLE_SECONDS = 30  # a delivery that failed on our side (the API server, S3) starts again after this
RECORD_TRIES = 3  # writes of a record before the delivery gives way (the next pass starts it again)
ANSWER_EXCERPT = 200  # characters of a refusing receiver's answer kept in lastError


class RefusedAddress(Exception):
    """The webhook's name resolves to an address it may not reach."""


class CheckedResolver(ThreadedResolver):
    """Name lookups for webhooks: every address must pass ``address_refusal``; the connection uses only these."""

    async def resolve(self, host: str, port: int = 0, family: Any = 0) -> list[Any]:
        found = await super().resolve(host, port, family)
        for result in found:
            why = address_refusal(result["host"])
            if why:
                raise RefusedAddress(f"{host!r} resolves to {result['host']}, {why}; refused")
        return found


class Webhooks:
    def __init__(self, config: OperatorConfig, cache: Cache, kube: Kube, staging: Staging, metrics: Metrics,
                 key: Ed25519PrivateKey, clock: Callable[[], float] = time.time):
        self.settings = config.webhooks
        self.cache = cache
        self.kube = kube
        self.staging = staging
        self.metrics = metrics
        self.key = key
        self.clock = clock
        self.tasks: dict[str, asyncio.Task] = {}
        self._session: aiohttp.ClientSession | None = None

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def ensure(self, job: JobView) -> None:
        """Start the job's delivery unless it is under way."""
        if job.uid in self.tasks:
            return
        task = asyncio.create_task(self._deliver(job.namespace, job.name, job.uid), name=f"webhook of {job.key}")
        self.tasks[job.uid] = task
        task.add_done_callback(lambda _: self.tasks.pop(job.uid, None))

    async def close(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # ---- one delivery -----------------------------------------------------------------------------------------
    async def _deliver(self, namespace: str, name: str, uid: str) -> None:
        ctx = {"job": name, "namespace": namespace, "uid": uid}
        try:
            job = await self.kube.read_job(namespace, name)
            if job is None or job["metadata"].get("uid") != uid or not owed(job["spec"], job["status"]):
                return
            url, record = job["spec"]["webhook"], job["status"].get("webhook")
            payload = await self._body(job)
            while True:
                wait_ms = (due_at(record) or 0) - self.now_ms()
                if wait_ms > 0:
                    await asyncio.sleep(wait_ms / 1000)
                if self.cache.job(uid) is None:
                    return  # deleted meanwhile
                attempt = await self._post(url, uid, payload)
                record = after(record, attempt, self.settings)
                result = result_of(record)
                self.metrics.webhook_attempts.labels(result).inc()
                self._log(result, url, record, ctx)
                if not await self._record(namespace, name, job["status"], record) or result != RETRY:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the API server or S3 failed us, not the receiver: again later, from the status
            log.warning("webhook delivery interrupted (%s: %s); starting again in %d s", type(e).__name__, e,
                        TROUBLE_SECONDS, extra=ctx)
            await asyncio.sleep(TROUBLE_SECONDS)

    async def _body(self, job: Mapping[str, Any]) -> bytes:
        uris = images_wanted(dict(job))
        mode = output_mode(dict(job), OutputMode.S3)
        seconds = self.settings.presign_expiry_seconds
        images = await asyncio.to_thread(output_images, uris, mode, self.staging.read,
                                         lambda uri: self.staging.presign_get(uri, seconds)) if uris else None
        return body(job, images)

    async def _post(self, url: str, uid: str, payload: bytes) -> Attempt:
        now = self.now_ms()
        why = url_refusal(url, self.settings.allow_private_addresses)
        if why:
            return Attempt(now, error=f"{url[:80]!r} {why}", refused=True)
        headers = {"Content-Type": "application/json", "User-Agent": "img2img-operator",
                   **signature_headers(self.key, webhook_id(uid), now // 1000, payload)}
        try:
            async with self._client().post(url, data=payload, headers=headers, allow_redirects=False) as answer:
                if 200 <= answer.status < 300:
                    return Attempt(now, status=answer.status)
                said = (await answer.content.read(ANSWER_EXCERPT)).decode("utf-8", "replace").strip()
                return Attempt(now, status=answer.status,
                               error=f"the receiver answered {answer.status}{': ' + said if said else ''}")
        except RefusedAddress as e:
            return Attempt(now, error=str(e), refused=True)
        except asyncio.TimeoutError:
            return Attempt(now, error=f"no answer within {self.settings.timeout_seconds:g} s")
        except aiohttp.ClientError as e:
            return Attempt(now, error=f"cannot reach the receiver: {e}")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            resolver = ThreadedResolver() if self.settings.allow_private_addresses else CheckedResolver()
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=resolver),
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds))
        return self._session

    async def _record(self, namespace: str, name: str, status: Mapping[str, Any], record: dict[str, Any]) -> bool:
        """Write ``status.webhook`` (that key only: no resourceVersion needed); False when the job is gone. A write
        that keeps failing raises: the delivery starts again later from the status (at worst sending once more
        what was delivered)."""
        n = 0
        while True:
            try:
                written = await self.kube.patch_job_status(namespace, name, {"webhook": record}, None, status)
                break
            except Gone:
                return False
            except Exception:
                n += 1
                if n == RECORD_TRIES:
                    raise
                await asyncio.sleep(2 ** n)
        self.cache.put_job(written)
        self.metrics.write("webhook")
        return True

    @staticmethod
    def _log(result: str, url: str, record: Mapping[str, Any], ctx: dict[str, Any]) -> None:
        n = record.get("attempts")
        if result == DELIVERED:
            log.info("webhook delivered to %s (attempt %s)", url, n, extra=ctx)
        elif result == GIVE_UP:
            log.warning("webhook to %s given up: %s", url, record.get("lastError"), extra=ctx)
        else:
            log.warning("webhook to %s failed (attempt %s: %s); next at %s", url, n, record.get("lastError"),
                        record.get("nextAttemptAt"), extra=ctx)
