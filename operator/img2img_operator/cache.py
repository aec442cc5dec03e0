"""The operator's picture of the cluster: jobs by uid, runner pods and RunnerPools by name (a reflector).

Fed by the reflectors (``Kube.reflect``: full lists, at start and every ``timing.resyncSeconds``, and the watch
events between them) and by the responses of the operator's own writes. No I/O here; the dispatcher reads
``snapshot()``, the runner endpoint reads jobs and pods.

Merging is newest-wins by resourceVersion (etcd's revision, compared as a number), so a late watch event never
undoes a newer write response. Deleted objects leave a tombstone: a late event or an older list cannot bring them
back. Jobs live in any watched namespace; runner pods and pools in the runner namespace only, and a pod there counts
as a runner only when ``is_runner`` says the operator made it (``runner_pods.made_by_operator``): one that merely
carries the runner labels is never seen, so it is never counted, served, adopted or removed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from img2img.api.status import TERMINAL

from .status import json_size
from .views import INPUT_BYTES, JobView, Key, PodView, resource_version

Body = Mapping[str, Any]
TOMBSTONE_SECONDS = 600


def kept_of_job(body: Body, input_bytes: int | None = None) -> Body:
    """What the operator keeps of a job in memory. Never ``managedFields`` nor ``spec.input`` (inline images, up to
    1.5 MB a job: it is read when the job's verdict is reached, ``verdicts``); of an active job, the input's size as
    JSON (``INPUT_BYTES``, ``input_bytes`` when known: the status's budget counts it); of a finished job, not its
    output either (tens of KB, A1111's echo). With 10,000 jobs present this is most of the operator's memory."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    finished = status.get("status") in TERMINAL
    if "managedFields" not in meta and "input" not in spec and not (finished and "output" in status):
        return body  # kept already (a listed page's job, stored): nothing to copy
    kept = {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"},
            "spec": {k: v for k, v in spec.items() if k != "input"}}
    if "input" in spec and not finished:
        kept[INPUT_BYTES] = json_size(spec["input"]) if input_bytes is None else input_bytes
    if finished:
        kept["status"] = {k: v for k, v in status.items() if k != "output"}
    return kept


def _meta(body: Body, key: str) -> str:
    return (body.get("metadata") or {}).get(key) or ""


def _newer(incoming: Body, stored: Body | None) -> bool:
    if stored is None:
        return True
    new, old = resource_version(incoming), resource_version(stored)
    return new is None or old is None or new >= old


class _Store:
    """Objects of one kind by key, newest wins, with tombstones for deleted ones."""

    def __init__(self, key: Callable[[Body], str], clock: Callable[[], float], keep: Callable[[Body], Body] = dict,
                 gone: Callable[[Body], None] = lambda body: None):
        self.items: dict[str, Body] = {}
        self._gone = gone  # told the last body of an object that is forgotten
        self._tombstones: dict[str, tuple[int | None, float]] = {}  # key → (resourceVersion, when)
        self._key = key
        self._keep = keep
        self._clock = clock

    def put(self, body: Body) -> str | None:
        """Store ``body`` unless an equal or newer version (or its deletion) is known; its key if stored."""
        key = self._key(body)
        if not key:
            return None
        tomb = self._tombstones.get(key)
        if tomb is not None:
            rv = resource_version(body)
            if tomb[0] is None or rv is None or rv <= tomb[0]:
                return None
            del self._tombstones[key]
        stored = self.items.get(key)
        if stored is body:  # listed again, unchanged (``Cache.listed_job``): no second copy
            return key
        if not _newer(body, stored):
            return None
        self.items[key] = self._keep(body)
        return key

    def forget(self, key: str, rv: int | None) -> None:
        body = self.items.pop(key, None)
        if body is not None:
            self._gone(body)
        self._tombstones[key] = (rv, self._clock())
        horizon = self._clock() - TOMBSTONE_SECONDS
        for old in [k for k, (_, when) in self._tombstones.items() if when < horizon]:
            del self._tombstones[old]

    def gone(self, key: str) -> bool:
        return key in self._tombstones

    def replace(self, items: Iterable[Body], list_rv: int | None, namespace: str | None = None
                ) -> tuple[list[str], list[str]]:
        """A full list (of one namespace, else of all): add what is new, drop what the list no longer has (unless
        newer than the list). Returns (keys stored, keys dropped)."""
        listed, stored = set(), []
        for body in items:
            listed.add(self._key(body))
            key = self.put(body)
            if key:
                stored.append(key)
        dropped = []
        for key, body in list(self.items.items()):
            rv = resource_version(body)
            if (key not in listed and (namespace is None or _meta(body, "namespace") == namespace)
                    and (list_rv is None or rv is None or rv <= list_rv)):
                self.forget(key, list_rv)
                dropped.append(key)
        return stored, dropped


class Cache:
    def __init__(self, on_change: Callable[[], None] | None = None, clock: Callable[[], float] = time.time,
                 is_runner: Callable[[Body], bool] = lambda body: True):
        self._jobs = _Store(lambda b: _meta(b, "uid"), clock, keep=self.keep_job, gone=self._job_gone)
        # told the last body of every job that goes (deleted, or missing from a full list): the leader's ``cleanup``
        self.on_job_gone: Callable[[Body], None] | None = None
        self._pods = _Store(lambda b: _meta(b, "name"), clock)
        self._pools = _Store(lambda b: _meta(b, "name"), clock)
        self._first_seen: dict[str, int] = {}
        # the view of each unfinished job's stored body, kept while that body is the stored one: a pass and every
        # take read each waiting job, and building a view costs more than the decision that reads it
        self._views: dict[str, tuple[Body, JobView]] = {}
        self._changed: set[str] = set()  # job uids whose job changed (or whose attempt did) since take_changed()
        self._on_change = on_change or (lambda: None)
        self._clock = clock
        self._is_runner = is_runner
        # where an active job's input goes as it arrives, before the cache drops it: the leader's dispatcher holds
        # it until the job's verdict is reached (``verdicts.Verdicts.arrived``); None: dropped (a standby)
        self.on_input: Callable[[Key, Any, int], None] | None = None

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # ---- jobs -------------------------------------------------------------------------------------------------
    def job_event(self, kind: str | None, body: Body) -> None:
        """A watch event (kind None = the initial listing, ADDED, MODIFIED, DELETED)."""
        uid = _meta(body, "uid")
        if not uid:
            return
        if kind == "DELETED":
            self.forget_job(uid, resource_version(body))
            return
        if kind == "ADDED" and uid not in self._first_seen and uid not in self._jobs.items:
            self._first_seen[uid] = self._now_ms()
        self.put_job(body)

    def put_job(self, body: Body) -> bool:
        uid = self._jobs.put(body)
        if uid is None:
            return False
        self.touch(uid)
        return True

    def forget_job(self, uid: str, rv: int | None = None) -> None:
        self._jobs.forget(uid, rv)
        self._first_seen.pop(uid, None)
        self._views.pop(uid, None)
        self.touch(uid)

    def _job_gone(self, body: Body) -> None:
        if self.on_job_gone is not None:
            self.on_job_gone(body)

    def touch(self, uid: str) -> None:
        """Something about the job changed (its attempt's lease, say): decide on it in the next pass."""
        self._changed.add(uid)
        self._on_change()

    def keep_job(self, body: Body) -> Body:
        """What the cache keeps of ``body`` (``kept_of_job``); an active job's input handed to ``on_input`` first.
        The input's size is measured once a generation (JSON of a megabyte of images takes milliseconds)."""
        spec_input = (body.get("spec") or {}).get("input")
        meta = body.get("metadata") or {}
        if spec_input is None or (body.get("status") or {}).get("status") in TERMINAL:
            return kept_of_job(body)
        key = (meta.get("uid") or "", int(meta.get("generation") or 1))
        stored = self._jobs.items.get(key[0])
        same = stored is not None and int((stored.get("metadata") or {}).get("generation") or 1) == key[1]
        size = stored.get(INPUT_BYTES) if same else None
        if size is None:
            size = json_size(spec_input)
        if self.on_input is not None and not meta.get("deletionTimestamp"):
            self.on_input(key, spec_input, size)
        return kept_of_job(body, size)

    def job(self, uid: str) -> Body | None:
        return self._jobs.items.get(uid)

    def job_view(self, uid: str) -> JobView | None:
        body = self._jobs.items.get(uid)
        return self._view(uid, body) if body is not None else None

    def _view(self, uid: str, body: Body) -> JobView:
        kept = self._views.get(uid)
        if kept is not None and kept[0] is body:
            return kept[1]
        view = JobView.from_body(body, self._first_seen.get(uid))
        if view.state in TERMINAL:  # decided once, then settled: not worth the memory with thousands present
            self._views.pop(uid, None)
        else:
            self._views[uid] = (body, view)
        return view

    def listed_job(self, body: Body) -> Body:
        """What a listed job becomes in memory, as its list page arrives: the cached body itself when the cache
        holds this very version (a relist of 10,000 unchanged jobs then costs no second copy of them), else what the
        cache keeps of it (``keep_job``: an active job's input handed on for its verdict first)."""
        stored = self._jobs.items.get(_meta(body, "uid"))
        version = _meta(body, "resourceVersion")
        if stored is not None and version and _meta(stored, "resourceVersion") == version:
            return stored
        return self.keep_job(body)

    def replace_jobs(self, items: Iterable[Body], list_rv: int | None, namespace: str | None = None) -> None:
        """A full list of the jobs of ``namespace`` (None: of every namespace)."""
        stored, dropped = self._jobs.replace(items, list_rv, namespace)
        for uid in stored + dropped:
            self._changed.add(uid)
        for uid in dropped:
            self._first_seen.pop(uid, None)
            self._views.pop(uid, None)
        self._on_change()

    # ---- runner pods and pools (the runner namespace) ---------------------------------------------------------
    def pod_event(self, kind: str | None, body: Body) -> None:
        if kind == "DELETED":
            self._pods.forget(_meta(body, "name"), resource_version(body))
            self._on_change()
        else:
            self.put_pod(body)

    def put_pod(self, body: Body) -> None:
        if self._is_runner(body) and self._pods.put(body):
            self._on_change()

    def replace_pods(self, items: Iterable[Body], list_rv: int | None) -> None:
        self._pods.replace([body for body in items if self._is_runner(body)], list_rv)
        self._on_change()

    def pod(self, name: str) -> PodView | None:
        body = self._pods.items.get(name)
        return PodView.from_body(body) if body is not None else None

    def pods(self) -> list[PodView]:
        return [PodView.from_body(body) for body in self._pods.items.values()]

    def pool_event(self, kind: str | None, body: Body) -> None:
        if kind == "DELETED":
            self._pools.forget(_meta(body, "name"), resource_version(body))
            self._on_change()
        else:
            self.put_pool(body)

    def put_pool(self, body: Body) -> None:
        if self._pools.put(body):
            self._on_change()

    def replace_pools(self, items: Iterable[Body], list_rv: int | None) -> None:
        self._pools.replace(items, list_rv)
        self._on_change()

    def pools(self) -> list[Body]:
        return list(self._pools.items.values())

    # ---- reading ----------------------------------------------------------------------------------------------
    def snapshot(self, skip: Callable[[str], bool] | None = None) -> list[JobView]:
        """Every job but those ``skip(uid)`` passes over (views are built only for the rest)."""
        return [self._view(uid, body) for uid, body in self._jobs.items.items() if skip is None or not skip(uid)]

    def take_changed(self) -> set[str]:
        """The uids of the jobs that changed (or went) since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def pod_count(self) -> int:
        return len(self._pods.items)

    def __len__(self) -> int:
        return len(self._jobs.items)
