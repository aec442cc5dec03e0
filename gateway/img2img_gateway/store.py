"""The jobs of the endpoints' namespaces, kept by a list + watch per namespace (no GET per request).

Every answer reads from here: ``/status`` finds a job by its RunPod id (its uid, or the id a ``/retry`` job answers
to), ``/runsync`` and ``/status-sync`` wait for a change of one job, ``/health`` counts, ``/stream`` drains the
progress values the watch saw. Jobs are kept without ``spec.input`` (an inline image may be a megabyte); ``/retry``
reads the whole job when it needs it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from img2img.api.answer import job_id
from img2img_gateway.kube import Kube
from img2img_gateway.stream import ProgressLog

log = logging.getLogger("img2img_gateway.store")

RELIST_DELAY = 1.0  # seconds before a failed list or watch is tried again
KEPT_METADATA = ("name", "namespace", "uid", "labels", "annotations", "creationTimestamp", "resourceVersion")


def slim(job: dict[str, Any]) -> dict[str, Any]:
    """The parts of a job the answers read."""
    metadata = job.get("metadata") or {}
    return {"apiVersion": job.get("apiVersion"), "kind": job.get("kind"),
            "metadata": {k: metadata[k] for k in KEPT_METADATA if k in metadata},
            "spec": {k: v for k, v in (job.get("spec") or {}).items() if k != "input"},
            "status": job.get("status") or {}}


def _version(job: dict[str, Any]) -> int:
    try:
        return int(job["metadata"].get("resourceVersion") or 0)
    except ValueError:  # opaque by contract; etcd's are integers
        return 0


def _newer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether job ``a`` was created after job ``b`` (the one an id names when a retry made several)."""
    return (a["metadata"].get("creationTimestamp") or "", a["metadata"]["name"]) > \
        (b["metadata"].get("creationTimestamp") or "", b["metadata"]["name"])


@dataclass
class Namespace:
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name
    by_id: dict[str, str] = field(default_factory=dict)  # RunPod id -> name of the newest job with it
    synced: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        known = self.jobs.get(name)
        if known and known["metadata"].get("uid") == job["metadata"].get("uid") and _version(known) > _version(job):
            return  # an older copy (a create's answer arriving after the watch's update)
        self.jobs[name] = job
        ident = job_id(job)
        holder = self.jobs.get(self.by_id.get(ident, ""))
        if holder is None or holder is job or _newer(job, holder):
            self.by_id[ident] = name

    def remove(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        gone = self.jobs.pop(name, None)
        if gone is None:
            return
        ident = job_id(gone)
        if self.by_id.get(ident) == name:
            del self.by_id[ident]
            for other in self.jobs.values():
                if job_id(other) == ident and (ident not in self.by_id or _newer(other, self.jobs[self.by_id[ident]])):
                    self.by_id[ident] = other["metadata"]["name"]

    def find(self, ident: str) -> dict[str, Any] | None:
        name = self.by_id.get(ident)
        return self.jobs.get(name) if name else None

    def superseded(self) -> set[str]:
        """Names of jobs a newer job with the same id (a ``/retry``) replaced."""
        return {name for name, job in self.jobs.items() if self.by_id.get(job_id(job)) != name}


class JobStore:
    def __init__(self, kube: Kube, namespaces: list[str]):
        self.kube = kube
        self.spaces = {ns: Namespace() for ns in namespaces}
        self.progress: dict[str, ProgressLog] = {}  # by uid
        self._changed: dict[tuple[str, str], asyncio.Event] = {}  # (namespace, id) -> set on its next change
        self._tasks: list[asyncio.Task] = []

    # ---- reading ------------------------------------------------------------------------------------------------
    def find(self, namespace: str, ident: str) -> dict[str, Any] | None:
        return self.spaces[namespace].find(ident)

    def jobs(self, namespace: str) -> list[dict[str, Any]]:
        return list(self.spaces[namespace].jobs.values())

    def superseded(self, namespace: str) -> set[str]:
        return self.spaces[namespace].superseded()

    def progress_log(self, job: dict[str, Any]) -> ProgressLog:
        return self.progress.setdefault(job["metadata"]["uid"], ProgressLog())

    @property
    def synced(self) -> bool:
        return all(space.synced.is_set() for space in self.spaces.values())

    async def wait_synced(self) -> None:
        await asyncio.gather(*(space.synced.wait() for space in self.spaces.values()))

    async def wait_change(self, namespace: str, ident: str, timeout: float | None) -> None:
        """Return at the job's next change, or after ``timeout`` seconds (None: no limit)."""
        event = self._changed.setdefault((namespace, ident), asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    # ---- writing ------------------------------------------------------------------------------------------------
    def put(self, job: dict[str, Any]) -> dict[str, Any]:
        """Keep a job (from the watch, or the answer of our own create or patch); returns the slim copy."""
        kept = slim(job)
        namespace = kept["metadata"]["namespace"]
        self.spaces[namespace].put(kept)
        self.progress_log(kept).record(kept["status"])
        self._notify(namespace, job_id(kept))
        return kept

    def _remove(self, job: dict[str, Any]) -> None:
        namespace = job["metadata"]["namespace"]
        self.spaces[namespace].remove(slim(job))
        self.progress.pop(job["metadata"].get("uid", ""), None)
        self._notify(namespace, job_id(job))

    def _notify(self, namespace: str, ident: str) -> None:
        event = self._changed.pop((namespace, ident), None)
        if event:
            event.set()

    # ---- the watches --------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._follow(ns), name=f"watch {ns}") for ns in self.spaces]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _follow(self, namespace: str) -> None:
        space = self.spaces[namespace]
        while True:
            try:
                items, version = await self.kube.list_jobs(namespace)
                listed = {job["metadata"]["name"] for job in items}
                for job in [j for name, j in space.jobs.items() if name not in listed]:
                    self._remove(job)
                for job in items:
                    self.put(job)
                space.synced.set()
                while True:
                    async for kind, job in self.kube.watch_jobs(namespace, version):
                        version = job["metadata"].get("resourceVersion") or version
                        if kind == "DELETED":
                            self._remove(job)
                        elif kind in ("ADDED", "MODIFIED"):
                            self.put(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # 410 Gone, the API server restarting, a network cut: list again
                log.warning("watch of jobs in %s ended (%s); listing again", namespace, exc)
                await asyncio.sleep(RELIST_DELAY)
