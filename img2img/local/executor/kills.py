"""Why the kubelet kills a pod it runs, with how much grace, and what the pod's status says afterwards.

Deletion (graceful: `deletionGracePeriodSeconds`; the Eviction API is a deletion too), node-pressure eviction on
demand (annotate a pod `local.img2img.dev/evict: "true"`, or a resource name such as `"memory"`),
`activeDeadlineSeconds`, and graceful node shutdown (the executor stops: grace capped by
`shutdownGracePeriodSeconds`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

EVICT_ANNOTATION = "local.img2img.dev/evict"
MIN_KILL_GRACE = 2.0  # kuberuntime's minimumGracePeriodInSeconds
DEFAULT_GRACE = 30.0  # terminationGracePeriodSeconds when the pod does not say
# The kubelet's words (pkg/kubelet/active_deadline.go, eviction, nodeshutdown).
DEADLINE_REASON = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
EVICTED_REASON = "Evicted"
NODE_LOW_MESSAGE = "The node was low on resource: {resource}. "
SHUTDOWN_REASON = "Terminated"
SHUTDOWN_MESSAGE = "Pod was terminated in response to imminent node shutdown."


def active_deadline(pod: Mapping, start_time: dt.datetime) -> dt.datetime | None:
    """When `activeDeadlineSeconds` runs out, counted from the pod's start; None without one."""
    seconds = (pod.get("spec") or {}).get("activeDeadlineSeconds")
    return None if seconds is None else start_time + dt.timedelta(seconds=int(seconds))


def kill_decision(pod: Mapping, now: dt.datetime, start_time: dt.datetime, *, shutdown: bool, removed: bool,
                  shutdown_grace: float) -> tuple[str, float] | None:
    """(why, grace seconds) when the pod must be killed now, else None; the first reason wins.

    `shutdown`: the executor is stopping (grace capped by `shutdown_grace`); `removed`: the pod is gone from the
    API server (no grace left to honour).
    """
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    grace = float(spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE) or 0)
    if shutdown:
        return "shutdown", min(grace, shutdown_grace)
    if removed:
        return "removed", 0.0
    if meta.get("deletionTimestamp"):
        return "delete", float(meta.get("deletionGracePeriodSeconds") or 0)
    evict = (meta.get("annotations") or {}).get(EVICT_ANNOTATION, "")
    if evict and evict.lower() not in ("false", "0", "no"):
        return "evict", 0.0
    deadline = active_deadline(pod, start_time)
    if deadline is not None and now >= deadline:
        return "deadline", grace
    return None


@dataclass(frozen=True)
class KillOutcome:
    """What the killed pod's status says (phase Failed), and the Event the kubelet records (None: no Event)."""

    reason: str
    message: str
    disruption: str | None = None  # the DisruptionTarget condition's message (TerminationByKubelet)
    event_type: str | None = None


def kill_outcome(why: str, pod: Mapping) -> KillOutcome | None:
    """The status a kill of kind `why` (see kill_decision) leaves; None when the containers' exits decide it."""
    if why == "deadline":
        return KillOutcome(DEADLINE_REASON, DEADLINE_MESSAGE, event_type="Normal")
    if why == "evict":
        value = ((pod.get("metadata") or {}).get("annotations") or {}).get(EVICT_ANNOTATION, "")
        resource = value if value.lower() not in ("true", "yes", "1", "") else "memory"
        message = NODE_LOW_MESSAGE.format(resource=resource)
        return KillOutcome(EVICTED_REASON, message, disruption=message, event_type="Warning")
    if why == "shutdown":
        return KillOutcome(SHUTDOWN_REASON, SHUTDOWN_MESSAGE, disruption=SHUTDOWN_MESSAGE)
    return None
