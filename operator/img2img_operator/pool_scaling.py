"""How many runners each pool should have, which to remove, and what its status says (POOLS.md, "Scaling"). Pure.

Per pool, from its sizing, its runners (starting, idle, busy) and the jobs waiting for it:

    desired = clamp(busy + queued + buffer, minReady, maxRunners)

``desired − (starting + ready)`` runners are created when positive. When there are more, idle runners that have
been idle longer than ``idleSeconds`` are removed, longest idle first: never a busy one, never below ``minReady``
ready runners. Runners that failed or vanished are not passed in: they are replaced by the same rule. The ceiling
wins over the floor (a GPU class whose ``maxConcurrent`` is below a pool's ``minReady`` caps it).

A GPU class that no RunnerPool names gets an implicit pool, named after the class: nothing preloaded, no warm floor,
``maxRunners`` = the class's ``maxConcurrent`` (else ``runners.implicitPool.maxRunners``), ``idleSeconds`` from
``runners.implicitPool``. A RunnerPool without ``maxRunners`` takes the same ceiling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from img2img.api.needs import model_key
from img2img.api.pool import RunnerPool
from img2img.api.status import READY, STALLED

from .config import OperatorConfig
from .status import by_type, condition

RunnerState = Literal["starting", "idle", "busy"]

# Why a starting runner's pod waits that will not pass by waiting a little longer (container waiting reasons, and
# PodScheduled's reason): the pool is stalled until someone acts (or the cluster autoscaler adds a node).
STALL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                           "CreateContainerError", "Unschedulable"})
FAILED_BEFORE_TAKE = "RunnerFailedBeforeTake"


@dataclass(frozen=True)
class Pool:
    """A pool's effective sizing: the RunnerPool's spec with defaults applied, or a GPU class's implicit pool."""

    name: str
    gpu_class: str
    models: tuple[str, ...]
    min_ready: int
    buffer: int
    max_runners: int
    idle_seconds: int
    implicit: bool = False  # a GPU class's pool, in memory only
    uid: str | None = None  # the RunnerPool's uid: the owner of its runner pods

    @property
    def floor(self) -> int:
        """minReady, under the ceiling."""
        return min(self.min_ready, self.max_runners)


@dataclass(frozen=True)
class Runner:
    name: str
    state: RunnerState
    created_ms: int
    idle_since_ms: int | None = None  # idle runners: since when
    waiting_reason: str | None = None  # starting runners: why the pod does not run yet (ImagePullBackOff, …)
    waiting_message: str = ""


@dataclass(frozen=True)
class ScalePlan:
    create: int  # new runner pods to create
    remove: tuple[str, ...]  # idle runners to delete
    wake_at: int | None  # ms: when the plan changes with nothing else happening (an idle runner expires)


class PoolProblem(ValueError):
    """A RunnerPool that cannot be served as written; the message names the field."""


# ---- pools --------------------------------------------------------------------------------------------------------
def _ceiling(gpu_class: str, config: OperatorConfig) -> int:
    limit = config.gpu_classes[gpu_class].max_concurrent
    return limit if limit is not None else config.runners.implicit_pool.max_runners


def pool_of(resource: RunnerPool, config: OperatorConfig) -> Pool:
    """The effective sizing of a RunnerPool; PoolProblem when its GPU class is not configured."""
    spec = resource.spec
    if spec.gpuClass not in config.gpu_classes:
        raise PoolProblem(f"spec.gpuClass: {spec.gpuClass!r} is not one of the operator's GPU classes "
                          f"({', '.join(sorted(config.gpu_classes))})")
    meta = resource.metadata
    return Pool(name=str(meta.name), gpu_class=spec.gpuClass, models=tuple(spec.models), min_ready=spec.minReady,
                buffer=spec.buffer,
                max_runners=spec.maxRunners if spec.maxRunners is not None else _ceiling(spec.gpuClass, config),
                idle_seconds=spec.idleSeconds, uid=getattr(meta, "uid", None))


def implicit_pool(gpu_class: str, config: OperatorConfig, taken: frozenset[str] = frozenset()) -> Pool:
    """The pool of a GPU class no RunnerPool names; named after the class, unless a RunnerPool has that name."""
    name = gpu_class if gpu_class not in taken else f"{gpu_class}-implicit"
    return Pool(name=name, gpu_class=gpu_class, models=(), min_ready=0, buffer=0,
                max_runners=_ceiling(gpu_class, config), idle_seconds=config.runners.implicit_pool.idle_seconds,
                implicit=True)


def all_pools(resources: Sequence[RunnerPool], config: OperatorConfig) -> tuple[list[Pool], dict[str, str]]:
    """Every pool the operator serves: the RunnerPools it can serve, then an implicit pool for each GPU class
    none of them names. Also the problems of the RunnerPools it cannot serve, by name (for their status)."""
    pools: list[Pool] = []
    problems: dict[str, str] = {}
    for resource in resources:
        try:
            pools.append(pool_of(resource, config))
        except PoolProblem as problem:
            problems[str(resource.metadata.name)] = str(problem)
    served = {p.gpu_class for p in pools}
    taken = frozenset(p.name for p in pools)
    pools += [implicit_pool(c, config, taken) for c in config.gpu_classes if c not in served]
    return pools, problems


def queue_shares(waiting: Sequence[frozenset[str]], pools: Sequence[Pool], busy: Mapping[str, int]) -> dict[str, int]:
    """Split the waiting jobs of one GPU class (their model keys, in queue order) among the class's pools.

    Each job counts for the first pool that preloads all its models and has room (``maxRunners − busy`` not yet
    taken), else for the pool with room that preloads the fewest models (new runners load little they will not
    use), else for the first pool (it waits, and its pool cannot grow).
    """
    room = {p.name: max(0, p.max_runners - busy.get(p.name, 0)) for p in pools}
    shares = {p.name: 0 for p in pools}
    if not pools:
        return shares
    preloaded = {p.name: frozenset(model_key(m) for m in p.models) for p in pools}
    for models in waiting:
        with_room = [p.name for p in pools if room[p.name] > 0]
        warm = [name for name in with_room if models <= preloaded[name]]
        lightest = sorted(with_room, key=lambda n: len(preloaded[n]))  # stable: ties keep the pools' order
        name = (warm or lightest or [pools[0].name])[0]
        shares[name] += 1
        room[name] = max(0, room[name] - 1)
    return shares


# ---- scaling ------------------------------------------------------------------------------------------------------
def desired_runners(pool: Pool, busy: int, queued: int) -> int:
    return min(max(busy + queued + pool.buffer, pool.min_ready), pool.max_runners)


def plan_scale(pool: Pool, runners: Sequence[Runner], queued: int, now_ms: int) -> ScalePlan:
    busy = sum(r.state == "busy" for r in runners)
    idle = [r for r in runners if r.state == "idle"]
    ready = busy + len(idle)
    have = len(runners)
    desired = desired_runners(pool, busy, queued)
    if have <= desired:
        return ScalePlan(create=desired - have, remove=(), wake_at=None)

    idle_ms = pool.idle_seconds * 1000

    def expires(r: Runner) -> int:
        return (r.idle_since_ms if r.idle_since_ms is not None else r.created_ms) + idle_ms

    by_idle_time = sorted(idle, key=lambda r: (expires(r), r.name))
    expired = [r for r in by_idle_time if expires(r) <= now_ms]
    count = min(have - desired, len(expired), max(0, ready - pool.floor))
    remove = tuple(r.name for r in expired[:count])
    # one more can go later only if the pool stays above both its desired size and its floor
    if have - count > desired and ready - count > pool.floor:
        later = [expires(r) for r in by_idle_time if expires(r) > now_ms]
        wake_at = min(later) if later else None
    else:
        wake_at = None
    return ScalePlan(create=0, remove=remove, wake_at=wake_at)


# ---- status -------------------------------------------------------------------------------------------------------
POOL_STATUS_INTERVAL_MS = 1000  # at most one status write a second per pool: its counts move with every job


def status_write_at(wanted: Mapping[str, Any], stored: Mapping[str, Any], last_written_ms: int | None,
                    now_ms: int) -> int | None:
    """When to write a pool's status: None when ``wanted`` is what is stored; else now, or, within
    ``POOL_STATUS_INTERVAL_MS`` of its last write, once that interval has passed (then with what is wanted then)."""
    if wanted == stored:
        return None
    return now_ms if last_written_ms is None else max(now_ms, last_written_ms + POOL_STATUS_INTERVAL_MS)


def pool_status(pool: Pool, runners: Sequence[Runner], queued: int, now_ms: int, *,
                generation: int | None = None, previous_conditions: Sequence[Mapping[str, Any]] = (),
                failed_before_take: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """The RunnerPool's status: counts, and the conditions ``Ready`` (the warm floor is up) and ``Stalled`` (runners
    cannot start). ``failed_before_take``: (runner, reason) of the pool's runner pods that ended before they asked
    for work, since the pool last had a ready runner; they stall the pool while none is ready."""
    busy = sum(r.state == "busy" for r in runners)
    ready = busy + sum(r.state == "idle" for r in runners)
    starting = sum(r.state == "starting" for r in runners)
    stuck = sorted((r for r in runners if r.state == "starting" and r.waiting_reason in STALL_REASONS),
                   key=lambda r: r.name)
    problems = [f"runner {r.name}: {r.waiting_reason}" + (f": {r.waiting_message}" if r.waiting_message else "")
                for r in stuck]
    stall_reason = stuck[0].waiting_reason if stuck else None
    if failed_before_take and ready == 0:
        problems += [f"runner {name} ended before it asked for work: {why}" for name, why in failed_before_take]
        stall_reason = stall_reason or FAILED_BEFORE_TAKE
    floor = pool.floor

    previous = by_type(previous_conditions)
    ready_message = f"{ready} runners ready (minReady {floor})"
    conditions = [
        condition(READY, ready >= floor, "MinReady" if ready >= floor else (
            "Stalled" if stall_reason else "Starting"), ready_message, now_ms, previous.get(READY), generation),
        condition(STALLED, stall_reason is not None, stall_reason or "AsExpected",
                  "; ".join(problems), now_ms, previous.get(STALLED), generation),
    ]
    status: dict[str, Any] = {"readyRunners": ready, "busyRunners": busy, "startingRunners": starting,
                              "queuedJobs": queued, "conditions": conditions}
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def problem_status(problem: str, now_ms: int, *, generation: int | None = None,
                   previous_conditions: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The status of a RunnerPool the operator cannot serve as written (``PoolProblem``): stalled, no runners."""
    previous = by_type(previous_conditions)
    status: dict[str, Any] = {"readyRunners": 0, "busyRunners": 0, "startingRunners": 0, "queuedJobs": 0,
                              "conditions": [
                                  condition(READY, False, "InvalidSpec", problem, now_ms, previous.get(READY),
                                            generation),
                                  condition(STALLED, True, "InvalidSpec", problem, now_ms, previous.get(STALLED),
                                            generation)]}
    if generation is not None:
        status["observedGeneration"] = generation
    return status
