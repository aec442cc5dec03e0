"""The operator's picture of the cluster: jobs by uid, runner pods by job (a reflector, kubespawner-style).

Fed by kopf's watch events, by the responses of the operator's own writes, and by full lists (at start and every
``timing.resyncSeconds``). No I/O here; the dispatcher reads ``snapshot()``.

Merging is newest-wins by resourceVersion (etcd's revision, compared as a number), so a late watch event never
undoes a newer write response. Deleted objects leave a tombstone: a late event cannot bring them back, and a runner
pod that vanished stays visible (``PodView.gone``) to its job's decisions — a pod seen once and then gone is a lost
attempt, never a pod to create again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from img2img.api.status import TERMINAL

from .views import JobView, PodView, job_uid_of_pod, resource_version

Body = Mapping[str, Any]
JOB_TOMBSTONE_SECONDS = 600


def kept_of_job(body: Body) -> Body:
    """What the operator keeps of a job in memory. Never ``managedFields``; of a finished job, not its input nor its
    output either (tens of KB each, an inline image and A1111's echo): every decision about a finished job reads only
    its metadata, controls and the rest of its status (its TTL, its pods, observedGeneration). With 10,000 finished
    jobs present this is most of the operator's memory."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    finished = status.get("status") in TERMINAL
    if "managedFields" not in meta and not finished:
        return body
    kept = {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    if finished:
        kept["spec"] = {k: v for k, v in (body.get("spec") or {}).items() if k != "input"}
        kept["status"] = {k: v for k, v in status.items() if k != "output"}
    return kept


def _uid(body: Body) -> str:
    return (body.get("metadata") or {}).get("uid") or ""


def _newer(incoming: Body, stored: Body | None) -> bool:
    if stored is None:
        return True
    new, old = resource_version(incoming), resource_version(stored)
    return new is None or old is None or new >= old


@dataclass
class _PodEntry:
    body: Body
    job_uid: str
    gone_ms: int | None = None


class Cache:
    def __init__(self, on_change: Callable[[], None] | None = None, clock: Callable[[], float] = time.time):
        self._jobs: dict[str, Body] = {}
        self._job_tombstones: dict[str, tuple[int | None, float]] = {}  # uid → (resourceVersion, when)
        self._pods: dict[str, _PodEntry] = {}  # pod uid → entry (tombstones included)
        self._first_seen: dict[str, int] = {}
        self._changed: set[str] = set()  # job uids whose job or pods changed since take_changed()
        self._on_change = on_change or (lambda: None)
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # ---- jobs -------------------------------------------------------------------------------------------------
    def job_event(self, kind: str | None, body: Body) -> None:
        """A watch event (kind None = the initial listing, ADDED, MODIFIED, DELETED)."""
        uid = _uid(body)
        if not uid:
            return
        if kind == "DELETED":
            self.forget_job(uid, resource_version(body))
            return
        if kind == "ADDED" and uid not in self._first_seen and uid not in self._jobs:
            self._first_seen[uid] = self._now_ms()
        self.put_job(body)

    def put_job(self, body: Body) -> bool:
        uid = _uid(body)
        if not uid:
            return False
        tomb = self._job_tombstones.get(uid)
        if tomb is not None:
            rv = resource_version(body)
            if tomb[0] is None or rv is None or rv <= tomb[0]:
                return False
        if not _newer(body, self._jobs.get(uid)):
            return False
        self._jobs[uid] = kept_of_job(body)
        self._changed.add(uid)
        self._on_change()
        return True

    def forget_job(self, uid: str, rv: int | None = None) -> None:
        """The job is gone: its pods' tombstones go with it (live pods stay until their own DELETED)."""
        self._jobs.pop(uid, None)
        self._first_seen.pop(uid, None)
        self._changed.add(uid)
        self._job_tombstones[uid] = (rv, self._clock())
        for pod_uid in [k for k, e in self._pods.items() if e.job_uid == uid and e.gone_ms is not None]:
            del self._pods[pod_uid]
        self._prune()
        self._on_change()

    def _prune(self) -> None:
        horizon = self._clock() - JOB_TOMBSTONE_SECONDS
        for uid in [u for u, (_, when) in self._job_tombstones.items() if when < horizon]:
            del self._job_tombstones[uid]

    def job(self, uid: str) -> Body | None:
        return self._jobs.get(uid)

    def job_known_gone(self, uid: str) -> bool:
        return uid in self._job_tombstones

    # ---- pods -------------------------------------------------------------------------------------------------
    def pod_event(self, kind: str | None, body: Body) -> None:
        uid = _uid(body)
        if not uid:
            return
        if kind == "DELETED":
            self.pod_gone(body)
        else:
            self.put_pod(body)

    def put_pod(self, body: Body) -> bool:
        uid = _uid(body)
        job_uid = job_uid_of_pod(body)
        if not uid or not job_uid:
            return False
        entry = self._pods.get(uid)
        if entry is not None and (entry.gone_ms is not None or not _newer(body, entry.body)):
            return False
        self._pods[uid] = _PodEntry(body, job_uid)
        self._changed.add(job_uid)
        self._on_change()
        return True

    def pod_gone(self, body: Body) -> None:
        uid = _uid(body)
        job_uid = job_uid_of_pod(body)
        if not uid or not job_uid:
            return
        entry = self._pods.get(uid)
        if entry is not None and entry.gone_ms is not None:
            return
        last = body if entry is None or _newer(body, entry.body) else entry.body
        if job_uid in self._jobs:
            self._pods[uid] = _PodEntry(last, job_uid, gone_ms=self._now_ms())
        else:
            self._pods.pop(uid, None)
        self._changed.add(job_uid)
        self._on_change()

    # ---- full lists (start, resync) ---------------------------------------------------------------------------
    def replace_jobs(self, items: Iterable[Body], list_rv: int | None) -> None:
        """A full list of jobs: add what is new, drop what the list no longer has (unless newer than the list)."""
        listed = set()
        for body in items:
            listed.add(_uid(body))
            self.put_job(body)
        for uid, body in list(self._jobs.items()):
            rv = resource_version(body)
            if uid not in listed and (list_rv is None or rv is None or rv <= list_rv):
                self.forget_job(uid, list_rv)

    def replace_pods(self, items: Iterable[Body], list_rv: int | None) -> None:
        listed = set()
        for body in items:
            listed.add(_uid(body))
            self.put_pod(body)
        for uid, entry in list(self._pods.items()):
            if entry.gone_ms is not None or uid in listed:
                continue
            rv = resource_version(entry.body)
            if list_rv is None or rv is None or rv <= list_rv:
                self.pod_gone(entry.body)

    # ---- reading ----------------------------------------------------------------------------------------------
    def snapshot(self, skip: Callable[[str], bool] | None = None) -> list[tuple[JobView, list[PodView]]]:
        """Every job with its runner pods, but those ``skip(uid)`` passes over (views are built only for the rest)."""
        entries: dict[str, list[_PodEntry]] = {}
        for entry in self._pods.values():
            entries.setdefault(entry.job_uid, []).append(entry)
        return [
            (JobView.from_body(body, self._first_seen.get(uid)),
             [PodView.from_body(e.body, gone_ms=e.gone_ms) for e in entries.get(uid, [])])
            for uid, body in self._jobs.items()
            if skip is None or not skip(uid)
        ]

    def take_changed(self) -> set[str]:
        """The uids of the jobs whose job or pods changed (or went) since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def orphans(self) -> list[PodView]:
        """Live runner pods whose job is known to be gone (deleted while its pod ran)."""
        pods = [
            PodView.from_body(e.body)
            for e in self._pods.values()
            if e.gone_ms is None and e.job_uid not in self._jobs and self.job_known_gone(e.job_uid)
        ]
        return [p for p in pods if p.live and not p.deleting]

    def pod_count(self) -> int:
        return sum(1 for e in self._pods.values() if e.gone_ms is None)

    def __len__(self) -> int:
        return len(self._jobs)
