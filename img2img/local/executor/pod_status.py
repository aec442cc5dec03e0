"""The kubelet's pod status: container states, the pod phase (`getPhase`), the kubelet-owned conditions.

Plain data in, API dicts out: `PodView` holds what the kubelet knows about one pod, `build_pod_status` turns it into
the status it PATCHes (strategic merge: conditions merge by type, container lists replace).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from img2img.api.times import parse_rfc3339
from img2img.local.executor.images import normalize_image
from img2img.local.executor.kube_time import rfc3339

TERMINAL_PHASES = ("Succeeded", "Failed")
# What the kubelet reports for a container it cannot find any more (pkg/kubelet/container).
UNKNOWN_EXIT_CODE = 137
UNKNOWN_MESSAGE = "The container could not be located when the pod was terminated"
UNKNOWN_DELETED_MESSAGE = ("The container could not be located when the pod was deleted.  "
                           "The container used to be Running")
TERMINATION_BY_KUBELET = "TerminationByKubelet"


def is_terminal(pod: Mapping) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


@dataclass
class ContainerRun:
    """What the executor knows about one container instance (and its previous one)."""

    name: str
    image: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    container_id: str = ""
    image_id: str = ""
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    exit_code: int | None = None
    restart_count: int = 0
    last_state: dict | None = None  # API form of lastState.terminated

    def terminated_dict(self) -> dict:
        d = {"exitCode": self.exit_code if self.exit_code is not None else 0, "reason": self.reason}
        if self.message:
            d["message"] = self.message
        d["startedAt"] = rfc3339(self.started_at)
        d["finishedAt"] = rfc3339(self.finished_at)
        if self.container_id:
            d["containerID"] = self.container_id
        return d

    @property
    def ready(self) -> bool:
        return self.state == "running"  # no readiness probes: ready once started


def container_status(run: ContainerRun) -> dict:
    status: dict = {
        "name": run.name,
        "image": normalize_image(run.image),
        "imageID": run.image_id,
        "ready": run.ready,
        "restartCount": run.restart_count,
        "started": run.state == "running",
    }
    if run.container_id:
        status["containerID"] = run.container_id
    if run.state == "running":
        status["state"] = {"running": {"startedAt": rfc3339(run.started_at)}}
    elif run.state == "terminated":
        status["state"] = {"terminated": run.terminated_dict()}
    else:
        waiting = {"reason": run.reason}
        if run.message:
            waiting["message"] = run.message
        status["state"] = {"waiting": waiting}
    status["lastState"] = {"terminated": run.last_state} if run.last_state else {}
    return status


def pod_phase(restart_policy: str, init_runs: list[ContainerRun], runs: list[ContainerRun], terminal: bool) -> str:
    """kubelet getPhase (no sidecar containers). `terminal`: the kubelet decided the pod is done (deleted, killed)."""
    pending_init = failed_init = 0
    for r in init_runs:
        if r.state == "terminated":
            if r.exit_code != 0:
                failed_init += 1
        elif r.state == "waiting" and r.last_state and r.last_state.get("exitCode", 0) != 0:
            failed_init += 1
        else:
            pending_init += 1
    if failed_init and restart_policy == "Never":
        return "Failed"
    if pending_init or failed_init:
        return "Failed" if terminal else "Pending"
    running = waiting = stopped = succeeded = 0
    for r in runs:
        if r.state == "running":
            running += 1
        elif r.state == "terminated":
            stopped += 1
            if r.exit_code == 0:
                succeeded += 1
        elif r.last_state:
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if terminal:
            return "Succeeded" if stopped == succeeded else "Failed"
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _condition(ctype: str, ok: bool, previous: Mapping[str, Mapping], now: dt.datetime,
               reason: str = "", message: str = "") -> dict:
    status = "True" if ok else "False"
    prev = previous.get(ctype)
    # reason/message always present (None = absent): a strategic merge patch must clear what an older status set.
    return {"type": ctype, "status": status, "reason": reason or None, "message": message or None,
            "lastProbeTime": None,
            "lastTransitionTime": prev.get("lastTransitionTime") if prev and prev.get("status") == status
            else rfc3339(now)}


def pod_conditions(phase: str, init_runs: list[ContainerRun], runs: list[ContainerRun], sandbox_ready: bool,
                   previous: Iterable[Mapping], now: dt.datetime) -> list[dict]:
    """The kubelet-owned conditions (PodReadyToStartContainers, Initialized, ContainersReady, Ready, PodScheduled)."""
    prev = {c.get("type"): c for c in previous or []}
    terminal = phase in TERMINAL_PHASES
    conds = [_condition("PodReadyToStartContainers", sandbox_ready and not terminal, prev, now)]
    incomplete = [r.name for r in init_runs if not (r.state == "terminated" and r.exit_code == 0)]
    if not init_runs:
        conds.append(_condition("Initialized", True, prev, now))
    elif not incomplete:
        conds.append(_condition("Initialized", True, prev, now, reason="PodCompleted" if terminal else ""))
    else:
        conds.append(_condition("Initialized", False, prev, now, "ContainersNotInitialized",
                                f"containers with incomplete status: [{' '.join(incomplete)}]"))
    if terminal:
        ready, reason, message = False, "PodCompleted", ""
    else:
        unready = [r.name for r in runs if not r.ready]
        ready = not unready and not incomplete
        reason = "" if ready else "ContainersNotReady"
        message = "" if ready else f"containers with unready status: [{' '.join(unready or [r.name for r in runs])}]"
    conds.append(_condition("ContainersReady", ready, prev, now, reason, message))
    conds.append(_condition("Ready", ready, prev, now, reason, message))
    conds.append(_condition("PodScheduled", True, prev, now))
    return conds


def disruption_condition(message: str, previous: Iterable[Mapping], now: dt.datetime) -> dict:
    prev = {c.get("type"): c for c in previous or []}
    return _condition("DisruptionTarget", True, prev, now, TERMINATION_BY_KUBELET, message)


@dataclass
class PodView:
    """The kubelet-side facts one status is built from."""

    restart_policy: str
    init_runs: list[ContainerRun]
    runs: list[ContainerRun]
    host_ip: str
    pod_ip: str | None
    start_time: dt.datetime
    sandbox_ready: bool = False
    terminal: bool = False  # the kubelet killed the pod (deletion, deadline, eviction, shutdown)
    phase_override: str | None = None  # Failed with a reason (deadline, eviction, shutdown, admission)
    reason: str | None = None
    message: str | None = None
    disruption: str | None = None  # DisruptionTarget message (TerminationByKubelet)


def build_pod_status(view: PodView, previous_conditions: Iterable[Mapping], now: dt.datetime) -> dict:
    """The status a kubelet would PATCH (strategic merge: conditions merge by type, container lists replace)."""
    phase = view.phase_override or pod_phase(view.restart_policy, view.init_runs, view.runs, view.terminal)
    previous_conditions = list(previous_conditions or [])
    status: dict = {
        "phase": phase,
        "conditions": pod_conditions(phase, view.init_runs, view.runs, view.sandbox_ready, previous_conditions, now),
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "startTime": rfc3339(view.start_time),
        "containerStatuses": [container_status(r) for r in view.runs],
    }
    if view.init_runs:
        status["initContainerStatuses"] = [container_status(r) for r in view.init_runs]
    if view.pod_ip:
        status["podIP"] = view.pod_ip
        status["podIPs"] = [{"ip": view.pod_ip}]
    if view.reason:
        status["reason"] = view.reason
    if view.message:
        status["message"] = view.message
    if view.disruption:
        status["conditions"].append(disruption_condition(view.disruption, previous_conditions, now))
    return status


def rejected_status(reason: str, message: str, host_ip: str, now: dt.datetime) -> dict:
    """Kubelet admission rejection: the pod fails before anything runs."""
    return {"phase": "Failed", "reason": reason, "message": message, "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}], "startTime": rfc3339(now)}


def was_started(container_status_api: Mapping | None) -> bool:
    """Whether an API container status shows the container ran (used after an executor restart)."""
    if not container_status_api:
        return False
    state = container_status_api.get("state") or {}
    return "running" in state or "terminated" in state or bool(container_status_api.get("lastState") or {})



def recover_runs(runs: list[ContainerRun], status: Mapping, restart_policy: str) -> bool:
    """After an executor restart: the containers the API shows as started are gone (this process cannot have them).

    Updates `runs` from the API status as the kubelet reports containers it cannot find: a running one is terminated
    `ContainerStatusUnknown` (`Never`) or waits for its restart with that as `lastState`. False when none had started.
    """
    listed = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    old = {s["name"]: s for s in listed}
    if not any(was_started(s) for s in old.values()):
        return False
    for run in runs:
        s = old.get(run.name)
        if not s:
            continue
        state = s.get("state") or {}
        run.restart_count = int(s.get("restartCount") or 0)
        run.container_id = s.get("containerID", "")
        run.image_id = s.get("imageID", "")
        last = (s.get("lastState") or {}).get("terminated")
        run.last_state = last or None
        if "terminated" in state:
            t = state["terminated"]
            run.state, run.reason, run.message = "terminated", t.get("reason", "Error"), t.get("message", "")
            run.exit_code = int(t.get("exitCode", 0))
            run.started_at, run.finished_at = parse_rfc3339(t.get("startedAt")), parse_rfc3339(t.get("finishedAt"))
        elif "running" in state:
            if restart_policy == "Never":
                run.state, run.reason, run.message = "terminated", "ContainerStatusUnknown", UNKNOWN_MESSAGE
                run.exit_code = UNKNOWN_EXIT_CODE
                run.started_at = run.finished_at = None
                run.restart_count += 1
            else:
                run.last_state = {"exitCode": UNKNOWN_EXIT_CODE, "reason": "ContainerStatusUnknown",
                                  "message": UNKNOWN_DELETED_MESSAGE, "startedAt": None, "finishedAt": None}
                run.restart_count += 1
                run.state, run.reason, run.message = "waiting", "ContainerCreating", ""
    return True


def mark_unknown(runs: Iterable[ContainerRun]) -> None:
    """After the pod was killed: a container not terminated by then (never started, waiting for a restart, not
    reaped in time) is reported as one the kubelet cannot find."""
    for run in runs:
        if run.state != "terminated":
            run.state, run.reason, run.message = "terminated", "ContainerStatusUnknown", UNKNOWN_MESSAGE
            run.exit_code = UNKNOWN_EXIT_CODE
            run.started_at = run.finished_at = None
