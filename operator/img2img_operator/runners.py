"""The runners as the operator sees them: their pods, and what they said on the runner endpoint. Pure.

States (POOLS.md): ``starting`` (the pod exists and has not asked for work yet), ``idle`` (waiting in a take, or
asked within the take's wait + 5 s), ``busy`` (holds a lease), gone (pod deleted, being deleted, or ended: not a
runner any more). A starting runner's pod says why it does not run yet (image pull back-off, unschedulable), and an
ended one why it ended: the pool's status reports both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .pool_scaling import Runner
from .views import PodView

IDLE_GRACE_MS = 5000  # between two takes a runner is still idle (its next take is on its way)


@dataclass
class Seen:
    """What a runner said on the endpoint."""

    models: tuple[str, ...]  # the names it serves without loading (its last take)
    idle_since_ms: int
    last_take_ms: int
    waiting: int = 0  # takes of it in progress (long polls)
    assigned: bool = False  # its last take ended with an assignment: its next take starts a new idle time


class Registry:
    """Runners by name, from their takes. A runner never seen has not asked for work yet."""

    def __init__(self) -> None:
        self._seen: dict[str, Seen] = {}

    def taking(self, runner: str, models: Iterable[str], now: int) -> Seen:
        """A take of ``runner`` begins (it waits for work with ``models``)."""
        seen = self._seen.get(runner)
        if seen is None:
            seen = self._seen[runner] = Seen(tuple(models), idle_since_ms=now, last_take_ms=now)
        elif seen.assigned:
            seen.idle_since_ms, seen.assigned = now, False
        seen.models = tuple(models)
        seen.last_take_ms = now
        seen.waiting += 1
        return seen

    def took(self, runner: str, now: int, assigned: bool) -> None:
        """A take of ``runner`` ends: with an assignment, or empty-handed (it will ask again)."""
        seen = self._seen.get(runner)
        if seen is not None:
            seen.waiting = max(0, seen.waiting - 1)
            seen.last_take_ms = now
            seen.assigned = seen.assigned or assigned

    def get(self, runner: str) -> Seen | None:
        return self._seen.get(runner)

    def forget(self, runner: str) -> None:
        self._seen.pop(runner, None)

    def names(self) -> list[str]:
        return list(self._seen)


def idle(seen: Seen | None, now: int, wait_ms: int) -> bool:
    return seen is not None and not seen.assigned and (
        seen.waiting > 0 or now - seen.last_take_ms <= wait_ms + IDLE_GRACE_MS)


def runner_view(pod: PodView, seen: Seen | None, busy: bool, now: int, wait_ms: int) -> Runner | None:
    """The runner of a pod as the pool's scaling counts it; None when the pod is no runner any more."""
    if not pod.live:
        return None
    created = pod.created_ms if pod.created_ms is not None else now
    if busy:
        return Runner(pod.name, "busy", created)
    if idle(seen, now, wait_ms):
        assert seen is not None
        return Runner(pod.name, "idle", created, idle_since_ms=seen.idle_since_ms)
    reason, message = waiting_reason(pod)
    return Runner(pod.name, "starting", created, waiting_reason=reason, waiting_message=message)


def waiting_reason(pod: PodView) -> tuple[str | None, str]:
    """Why a runner's pod does not run yet: its container's waiting reason, or the scheduler's refusal."""
    container = pod.container
    if container is not None and container.waiting_reason:
        return container.waiting_reason, container.waiting_message or ""
    scheduled = pod.conditions.get("PodScheduled")
    if scheduled is not None and scheduled.status == "False" and scheduled.reason == "Unschedulable":
        return "Unschedulable", scheduled.message or ""
    return None, ""


def overdue_start(pod: PodView, seen: Seen | None, now: int, limit_seconds: int | None) -> str | None:
    """Why a runner's pod is removed for not starting: still Pending (unscheduled, or its image not pulled) or Unknown
    (its node lost) ``limit_seconds`` after its creation, and it never asked for work; None while it is not."""
    if (limit_seconds is None or seen is not None or not pod.live or pod.phase not in ("Pending", "Unknown")
            or pod.created_ms is None or now < pod.created_ms + limit_seconds * 1000):
        return None
    reason, message = waiting_reason(pod)
    why = f"{reason}: {message}" if reason and message else reason or pod.reason or "no reason given"
    return (f"removed: still {pod.phase} {(now - pod.created_ms) // 1000} s after its creation (runners."
            f"maxPendingSeconds: {limit_seconds}): {why}")


def why_ended(pod: PodView) -> str:
    """Why a runner's pod ended, in a line: its exit (code, reason, the end of what it said), or the pod's reason."""
    term = pod.container.terminated if pod.container else None
    if term is not None:
        said = " ".join((term.message or "").split())[-300:]
        reason = f" ({term.reason})" if term.reason and term.reason not in ("Error", "Completed") else ""
        return f"exit code {term.exit_code}{reason}" + (f": {said}" if said else "")
    return ": ".join(p for p in (pod.reason, pod.message) if p) or f"pod {pod.phase}"
