"""What a runner pod says about its attempt: starting, running, succeeded, or failed (and whether to retry). Pure.

Failure classes (the exit codes are docs/architecture.md's, "Operator → runner"):

| what the pod shows | reason | retried |
|---|---|---|
| ``DisruptionTarget`` condition (preemption, eviction, taint manager, node shutdown, pod GC) | Preempted, Evicted, NodeShutdown, NodeLost | yes |
| pod reason Evicted / Preempting / Shutdown / NodeLost / OutOf<resource> / UnexpectedAdmissionError | Evicted, … | yes |
| the pod vanished before finishing (deleted by someone, evicted through the API) | PodLost | yes |
| terminating on a lost node longer than ``timing.nodeLostGraceSeconds`` | NodeLost | yes |
| ErrImagePull / ImagePullBackOff longer than ``timing.imagePullGraceSeconds`` | ImagePullBackOff | yes |
| exit code 5 (storage) / any unknown code (crash) | StorageError / RunnerCrashed | yes |
| exit code 2 / 3 / 4 | BadInput / ModelError / CudaOutOfMemory | no |
| container OOMKilled | OOMKilled | no (the same job would be killed again) |
| InvalidImageName; CreateContainer(Config)Error longer than ``timing.containerConfigGraceSeconds`` | InvalidImage, ContainerConfigError | no |
| pod reason DeadlineExceeded, or running past ``timeoutSeconds`` + ``timing.deadlineGraceSeconds`` | DeadlineExceeded | no: TIMED_OUT |
"""

from __future__ import annotations

from dataclasses import dataclass

from img2img.api.exitcodes import ExitCode
from img2img.api.termination import TerminationMessage

from .config import Waits
from .views import PodView

PENDING = "pending"  # created, not running yet
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
TERMINATING = "terminating"  # being deleted but not finished: its resources are not free yet

_DISRUPTION_REASONS = {
    "PreemptionByScheduler": "Preempted",
    "PreemptionByKubeScheduler": "Preempted",
    "EvictionByEvictionAPI": "Evicted",
    "TerminationByKubelet": "Evicted",
    "DeletionByTaintManager": "NodeLost",
    "DeletionByPodGC": "NodeLost",
}
_POD_DISRUPTION_REASONS = {
    "Evicted": "Evicted",
    "Preempting": "Preempted",
    "Shutdown": "NodeShutdown",
    "NodeShutdown": "NodeShutdown",
    "Terminated": "NodeShutdown",
    "NodeLost": "NodeLost",
    "UnexpectedAdmissionError": "AdmissionError",
    "NodeAffinity": "AdmissionError",
}
_EXIT_REASONS = {
    ExitCode.BAD_INPUT: "BadInput",
    ExitCode.MODEL: "ModelError",
    ExitCode.CUDA_OOM: "CudaOutOfMemory",
    ExitCode.STORAGE: "StorageError",
    ExitCode.CRASH: "RunnerCrashed",
}
IMAGE_PULL_WAITING = {"ErrImagePull", "ImagePullBackOff"}
CONFIG_WAITING = {"CreateContainerConfigError", "CreateContainerError"}


@dataclass(frozen=True)
class Failure:
    reason: str  # CamelCase, usable as a condition and Event reason
    message: str
    retriable: bool
    timed_out: bool = False
    exit_code: int | None = None
    field: str | None = None  # the job field a runner refused (bad input, unknown model)

    def describe(self) -> str:
        return f"{self.reason}: {self.message}" if self.message else self.reason


@dataclass(frozen=True)
class Observation:
    kind: str
    pod: PodView
    failure: Failure | None = None
    report: TerminationMessage | None = None  # the runner's own, when it wrote one
    started_ms: int | None = None  # when the runner container started (running or finished)
    wake_at: int | None = None  # ms: look again then even if nothing happens (a grace period ends)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _exit_failure(pod: PodView, report: TerminationMessage | None) -> Failure:
    term = pod.container.terminated if pod.container else None
    assert term is not None
    code = term.exit_code
    runner_error = report.error if report else None
    if report is None:  # no report: the text is the tail of the runner's log (FallbackToLogsOnError)
        said = (term.message or "").strip()
    else:
        said = str(runner_error) if runner_error else ""
    if term.reason == "OOMKilled":
        return Failure("OOMKilled", said or "the runner exceeded its memory limit and was killed",
                       retriable=False, exit_code=code)
    try:
        known = ExitCode(code)
    except ValueError:
        known = None
    if known is None or known == ExitCode.OK:
        # 0 in a failed pod, a signal (128+n) or a code we do not know: a crash, which may pass
        return Failure("RunnerCrashed", said or f"the runner exited with code {code}"
                       + (f" ({term.reason})" if term.reason and term.reason != "Error" else ""),
                       retriable=True, exit_code=code)
    return Failure(_EXIT_REASONS[known], said or f"the runner exited with code {code} ({known.name})",
                   retriable=known.retriable, exit_code=code,
                   field=runner_error.field if runner_error else None)


def _failed(pod: PodView, report: TerminationMessage | None) -> Failure:
    if pod.reason == "DeadlineExceeded":
        return Failure("DeadlineExceeded", pod.message or "the pod ran past its activeDeadlineSeconds",
                       retriable=False, timed_out=True)
    disruption = pod.conditions.get("DisruptionTarget")
    if disruption is not None and disruption.status == "True":
        reason = _DISRUPTION_REASONS.get(disruption.reason or "", "Disrupted")
        if disruption.reason == "TerminationByKubelet":  # node-pressure eviction or node shutdown: the pod says which
            reason = _POD_DISRUPTION_REASONS.get(pod.reason or "", reason)
        return Failure(reason, disruption.message or pod.message or f"the pod was disrupted ({disruption.reason})",
                       retriable=True)
    if pod.reason in _POD_DISRUPTION_REASONS or (pod.reason or "").startswith("OutOf"):
        reason = _POD_DISRUPTION_REASONS.get(pod.reason or "", "AdmissionError")
        return Failure(reason, pod.message or f"the pod failed ({pod.reason})", retriable=True)
    if pod.container is not None and pod.container.terminated is not None:
        return _exit_failure(pod, report)
    return Failure("PodFailed", pod.message or f"the pod failed ({pod.reason or 'no reason given'})",
                   retriable=True)


def observe(pod: PodView, now: int, timeout_seconds: int, waits: Waits) -> Observation:
    """The state of one attempt from its pod (a tombstone if the pod is gone)."""
    container = pod.container
    term = container.terminated if container else None
    started = (container.running_since_ms if container else None) or (term.started_ms if term else None)

    if pod.phase in ("Succeeded", "Failed"):
        report = TerminationMessage.parse(term.message if term else None)
        if pod.phase == "Succeeded":
            return Observation(SUCCEEDED, pod, report=report, started_ms=started)
        return Observation(FAILED, pod, failure=_failed(pod, report), report=report, started_ms=started)
    if pod.gone:
        return Observation(FAILED, pod, started_ms=started, failure=Failure(
            "PodLost", f"the runner pod {pod.name} was deleted before it finished (evicted, preempted or removed)",
            retriable=True))

    if pod.deleting:
        disruption = pod.conditions.get("DisruptionTarget")
        if disruption is not None and disruption.status == "True" and pod.deleted_ms is not None:
            lost_at = pod.deleted_ms + _ms(waits.node_lost_grace_seconds)
            if now >= lost_at:
                return Observation(FAILED, pod, started_ms=started, failure=Failure(
                    "NodeLost", f"the runner pod {pod.name} has been terminating since "
                    f"{(now - pod.deleted_ms) // 1000} s ({disruption.reason})", retriable=True))
            return Observation(TERMINATING, pod, started_ms=started, wake_at=lost_at)
        return Observation(TERMINATING, pod, started_ms=started)

    # The operator's own deadline, in case the kubelet does not enforce activeDeadlineSeconds (or the pod never
    # got a node): counted from the kubelet's start of the pod, else from its creation.
    base = pod.started_ms or pod.created_ms
    deadline = base + _ms(timeout_seconds) + _ms(waits.deadline_grace_seconds) if base is not None else None
    if deadline is not None and now >= deadline:
        return Observation(FAILED, pod, started_ms=started, failure=Failure(
            "DeadlineExceeded", f"the runner did not finish within timeoutSeconds ({timeout_seconds} s)",
            retriable=False, timed_out=True))

    if pod.phase == "Running":
        return Observation(RUNNING, pod, started_ms=started or pod.started_ms, wake_at=deadline)

    waiting = container.waiting_reason if container else None
    since = pod.started_ms or pod.created_ms or now
    if waiting in IMAGE_PULL_WAITING:
        until = since + _ms(waits.image_pull_grace_seconds)
        if now >= until:
            return Observation(FAILED, pod, failure=Failure(
                "ImagePullBackOff", container.waiting_message or f"cannot pull the runner image ({waiting})",
                retriable=True))
        return Observation(PENDING, pod, wake_at=_earliest(until, deadline))
    if waiting == "InvalidImageName":
        return Observation(FAILED, pod, failure=Failure(
            "InvalidImage", container.waiting_message or "the runner image name is invalid",
            retriable=False))
    if waiting in CONFIG_WAITING:
        until = since + _ms(waits.container_config_grace_seconds)
        if now >= until:
            return Observation(FAILED, pod, failure=Failure(
                "ContainerConfigError", container.waiting_message or waiting, retriable=False))
        return Observation(PENDING, pod, wake_at=_earliest(until, deadline))
    return Observation(PENDING, pod, wake_at=deadline)


def _earliest(*times: int | None) -> int | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None
