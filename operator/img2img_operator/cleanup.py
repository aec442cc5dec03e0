"""A deleted job's S3 objects go with it, unless ``s3.reclaimPolicy`` is Retain (docs/storage.md).

What goes: everything under the job's own area ``<location>/<namespace>/<job>/<uid>/`` (``staging.job_location``):
input.json, every attempt's images and result.json. The area ends with the job's uid and a slash, so it is never a
prefix of another job's; and only an area under a location the job's namespace may use is touched (a job refused
for its ``spec.output`` names a location the operator never wrote to).

When:
- a job leaves the cache (its DELETED watch event, or a full list without it), once no runner holds a lease on it:
  its runner is told to stop, and an upload it makes before it stops would otherwise outlive the deletion;
- once per leadership, when the cache holds every job: a sweep of every output location (``s3.prefix`` and
  ``s3.allowedOutputLocations``), under the watched namespaces, for areas whose uid is no job's: the jobs deleted
  while no operator led.
Not covered: what a runner uploads through a deleted job's presigned URLs after its area went (until they expire),
and areas under a location or namespace the configuration no longer has. A bucket lifecycle rule covers those.

Only the leader deletes (``main`` hands the cache's departures here once it leads). Deleting runs in a task of its
own beside the dispatcher's passes, every S3 call in a worker thread (boto3 is synchronous): listing an area, then
DeleteObjects, up to 1000 keys a call. An area whose deletion failed is tried again after a back-off (1 s doubling
to 5 min) for as long as the operator leads; one S3 refuses for good (no access) is given up with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from img2img import split_s3_uri

from .cache import Cache
from .config import OperatorConfig
from .controls import controls_from
from .staging import PERMANENT_S3_ERRORS, Staging, job_location
from .views import JobView

log = logging.getLogger("img2img_operator.cleanup")

RETRY_MS = (1_000, 2_000, 4_000, 8_000, 15_000, 30_000, 60_000, 120_000, 300_000)
HELD_RECHECK_SECONDS = 5.0  # an area whose job's runner still holds a lease is looked at again after this
UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # what the API server gives


# ---- decisions (pure) -----------------------------------------------------------------------------------------------
def job_area(body: Mapping[str, Any], config: OperatorConfig) -> str | None:
    """The S3 area of a job (``s3://…/<namespace>/<job>/<uid>/``) that goes when it is deleted; None when nothing of
    it is to go: policy Retain, or a ``spec.output`` the job's namespace may not use (nothing was written there)."""
    if config.s3.reclaim_policy != "Delete":
        return None
    job = JobView.from_body(body)
    if not (job.namespace and job.name and job.uid):
        return None
    controls = controls_from(job.spec, config)
    if config.s3.output_refusal(job.namespace, controls.output_bucket, controls.output_prefix) is not None:
        return None
    return job_location(job, controls, config)


def sweep_roots(config: OperatorConfig) -> list[tuple[str, str]]:
    """Where the start-of-leadership sweep lists: (location, the listed prefix). A location every namespace may use
    is listed whole when every namespace is watched; otherwise, and for a location of some namespaces only, each
    such watched namespace's area in it (``<location>/<namespace>/``)."""
    if config.s3.reclaim_policy != "Delete":
        return []
    s3 = config.s3
    if not config.all_namespaces:
        return [(loc, f"{loc}/{ns}/") for ns in config.namespaces for loc in s3.output_locations(ns)]
    shared = s3.output_locations("*")
    roots = [(loc, f"{loc}/") for loc in shared]
    roots += [(loc, f"{loc}/{ns}/") for ns in s3.allowed_output_locations if ns != "*"
              for loc in s3.output_locations(ns) if loc not in shared]
    return roots


def area_of_key(location: str, key: str) -> tuple[str, str] | None:
    """(area, uid) of an object key of the bucket of ``location`` (``s3://bucket[/prefix]``) when the key lies in a
    job's area there (``<namespace>/<job>/<uid>/…`` beneath the location, the uid as the API server writes uids);
    None for anything else, which the sweep leaves alone."""
    prefix = split_s3_uri(location + "/", need_key=False)[1]
    if not key.startswith(prefix):
        return None
    beneath = key[len(prefix):].split("/")
    if len(beneath) < 4 or not all(beneath[:3]) or not UID.fullmatch(beneath[2]):
        return None
    return f"{location}/{'/'.join(beneath[:3])}/", beneath[2]


def retry_delay_ms(failures: int) -> int:
    return RETRY_MS[min(failures, len(RETRY_MS)) - 1]


# ---- the task (I/O) -------------------------------------------------------------------------------------------------
@dataclass
class _Owed:
    uid: str
    failures: int = 0
    not_before_ms: int = 0


class Cleanup:
    """The areas owed deletion, and the task that deletes them (the leader's)."""

    def __init__(self, config: OperatorConfig, cache: Cache, staging: Staging, held: Callable[[str], bool],
                 clock: Callable[[], float] = time.time):
        self.config = config
        self.cache = cache
        self.staging = staging
        self.held = held  # a runner holds a lease on the job (by uid)
        self.clock = clock
        self._owed: dict[str, _Owed] = {}  # area → its job's uid, failures so far
        self._wake = asyncio.Event()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def job_gone(self, body: Mapping[str, Any]) -> None:
        """The cache let a job go (its last known body): its area is owed deletion."""
        area = job_area(body, self.config)
        if area is not None:
            self._owed.setdefault(area, _Owed(str((body.get("metadata") or {}).get("uid"))))
            self._wake.set()

    def owed(self) -> list[str]:
        return sorted(self._owed)

    async def run(self, synced: Callable[[], bool]) -> None:
        """Sweep once ``synced()`` (the cache holds every job), then delete what is owed as it comes."""
        sweep = asyncio.create_task(self._sweep_when(synced), name="S3 sweep")
        try:
            while True:
                self._wake.clear()
                wait = await self.delete_due()
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass
        finally:
            sweep.cancel()

    async def delete_due(self) -> float | None:
        """Delete every owed area that is due, one after another; seconds until the next one is (None: none owed)."""
        wait: float | None = None
        for area, owed in list(self._owed.items()):
            now = self.now_ms()
            if self.cache.job(owed.uid) is not None:  # a full list brought it back (it was not gone): keep it
                del self._owed[area]
                continue
            if self.held(owed.uid):
                wait = _soonest(wait, HELD_RECHECK_SECONDS)
                continue
            if owed.not_before_ms > now:
                wait = _soonest(wait, (owed.not_before_ms - now) / 1000)
                continue
            try:
                count = await asyncio.to_thread(self._delete_area, area)
            except Exception as e:
                code = (getattr(e, "response", None) or {}).get("Error", {}).get("Code")
                if code in PERMANENT_S3_ERRORS:
                    del self._owed[area]
                    log.warning("cannot delete %s: %s: %s; left in place", area, code, e)
                    continue
                owed.failures += 1
                delay = retry_delay_ms(owed.failures)
                owed.not_before_ms = now + delay
                wait = _soonest(wait, delay / 1000)
                log.warning("cannot delete %s yet (%s: %s); trying again in %.0f s", area, type(e).__name__, e,
                            delay / 1000)
                continue
            del self._owed[area]
            log.info("deleted %s (%d objects): its job is gone", area, count)
        return wait

    def _delete_area(self, area: str) -> int:
        """Delete every object under ``area`` (blocking: in a worker thread); how many there were."""
        keys = list(self.staging.keys_under(area))
        self.staging.delete_keys(split_s3_uri(area)[0], keys)
        return len(keys)

    async def _sweep_when(self, synced: Callable[[], bool]) -> None:
        while not synced():
            await asyncio.sleep(1)
        for location, listed in sweep_roots(self.config):
            try:
                found = await asyncio.to_thread(self._areas_under, location, listed)
            except Exception as e:  # the deletions on events go on; the next leadership sweeps again
                log.warning("cannot list %s for the areas of deleted jobs: %s", listed, e)
                continue
            gone = {area: uid for area, uid in found.items() if self.cache.job(uid) is None}
            for area, uid in gone.items():
                self._owed.setdefault(area, _Owed(uid))
            if gone:
                log.info("%d areas under %s belong to jobs deleted while no operator led: deleting them", len(gone),
                         listed)
                self._wake.set()

    def _areas_under(self, location: str, listed: str) -> dict[str, str]:
        """The job areas (area → uid) with objects under ``listed`` (blocking: in a worker thread)."""
        areas: dict[str, str] = {}
        for key in self.staging.keys_under(listed):
            found = area_of_key(location, key)
            if found is not None:
                areas[found[0]] = found[1]
        return areas


def _soonest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)
