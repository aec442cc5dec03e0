"""Admission: which queued jobs may start now, and where every waiting job stands. Pure.

Order: priority (higher first), then submission time (earlier first), then namespace/name (a stable tie-break).
Limits: a global one, one per GPU class, one per namespace (the namespace's policy); a job starts when it fits all
three. A job that does
not fit does not hold back jobs behind it that do (a full GPU class does not stop another class, a namespace at its
limit does not stop another namespace): none of those could have used the slot the blocked job waits for.

A slot is held by every job a runner works on (IN_PROGRESS), or is being handed to, or still stops on (cancelled or
timed out while its runner finishes its step: the GPU is not free before the runner reports). An admitted job is
offered to the runners of its GPU class until one takes it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class QueueEntry:
    uid: str
    namespace: str
    name: str
    gpu_class: str
    priority: int
    submitted_at: int  # ms since the epoch
    running: bool = False  # holds a slot now
    eligible: bool = True  # a waiting job in retry back-off is not eligible yet (it keeps its place)

    @property
    def sort_key(self) -> tuple:
        return (-self.priority, self.submitted_at, self.namespace, self.name, self.uid)


@dataclass(frozen=True)
class Limits:
    max_concurrent: int | None = None
    max_concurrent_per_namespace: int | None = None  # every namespace not in the next
    max_concurrent_by_namespace: Mapping[str, int | None] = field(default_factory=dict)
    max_concurrent_per_class: Mapping[str, int | None] = field(default_factory=dict)

    def of_namespace(self, namespace: str) -> int | None:
        return self.max_concurrent_by_namespace.get(namespace, self.max_concurrent_per_namespace)


@dataclass(frozen=True)
class Admission:
    admit: tuple[str, ...]  # uids to start now, in start order
    positions: Mapping[str, int]  # uid → 1-based place among the jobs of its GPU class still waiting
    running: int  # slots held after admitting


def _fits(limit: int | None, used: int) -> bool:
    return limit is None or used < limit


def admit(entries: Iterable[QueueEntry], limits: Limits) -> Admission:
    entries = list(entries)
    running = [e for e in entries if e.running]
    by_class = Counter(e.gpu_class for e in running)
    by_namespace = Counter(e.namespace for e in running)
    total = len(running)

    admitted: list[str] = []
    waiting: list[QueueEntry] = []
    for entry in sorted((e for e in entries if not e.running), key=lambda e: e.sort_key):
        if (
            entry.eligible
            and _fits(limits.max_concurrent, total)
            and _fits(limits.max_concurrent_per_class.get(entry.gpu_class), by_class[entry.gpu_class])
            and _fits(limits.of_namespace(entry.namespace), by_namespace[entry.namespace])
        ):
            admitted.append(entry.uid)
            total += 1
            by_class[entry.gpu_class] += 1
            by_namespace[entry.namespace] += 1
        else:
            waiting.append(entry)

    positions: dict[str, int] = {}
    places: Counter[str] = Counter()
    for entry in waiting:  # already in queue order
        places[entry.gpu_class] += 1
        positions[entry.uid] = places[entry.gpu_class]
    return Admission(admit=tuple(admitted), positions=positions, running=total)
