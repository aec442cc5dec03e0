"""Read-only views of the objects the operator decides on: an Img2ImgJob and a runner pod. Pure.

The cache keeps raw bodies (as the API returns them); these views pick out what the decisions need, so that
``lifecycle`` reads as decisions rather than as dictionary digging.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from img2img import API_GROUP
from img2img.api.times import parse_time_ms

MANAGED_BY = "img2img-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
RUNNER_COMPONENT = "runner"  # the chart's NetworkPolicy lets only pods with this component reach the operator
LABEL_POOL = f"{API_GROUP}/pool"
LABEL_GPU_CLASS = f"{API_GROUP}/gpu-class"
LABEL_LEADER = f"{API_GROUP}/leader"  # "true" on the leading operator's pod: the runner endpoint's Service selects it
ANNOTATION_SUBMITTED_AT = f"{API_GROUP}/submitted-at"
RUNNER_CONTAINER = "runner"
# the size of a job's spec.input as JSON, on the body the cache keeps instead of the input (``cache.kept_of_job``)
INPUT_BYTES = "inputBytes"
Key = tuple[str, int]  # a job's (uid, generation): what a verdict and a staged input belong to


def resource_version(body: Mapping[str, Any]) -> int | None:
    """The resourceVersion as a number (etcd's revision), for newest-wins merging; None if it is not one."""
    rv = (body.get("metadata") or {}).get("resourceVersion")
    try:
        return int(rv)
    except (TypeError, ValueError):
        return None


# ---- the job ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobView:
    namespace: str
    name: str
    uid: str
    generation: int
    created_ms: int
    annotations: Mapping[str, str]
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    deleting: bool = False
    first_seen_ms: int | None = None  # when this operator process first saw the job on a live watch event
    resource_version: str | None = None
    input_bytes: int = 0  # of spec.input as JSON, when the spec comes without it (the cache keeps no input)

    @classmethod
    def from_body(cls, body: Mapping[str, Any], first_seen_ms: int | None = None) -> JobView:
        meta = body.get("metadata") or {}
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 1),
            created_ms=parse_time_ms(meta.get("creationTimestamp")) or 0,
            annotations=dict(meta.get("annotations") or {}),
            spec=body.get("spec") or {},
            status=body.get("status") or {},
            deleting=bool(meta.get("deletionTimestamp")),
            first_seen_ms=first_seen_ms,
            resource_version=meta.get("resourceVersion"),
            input_bytes=int(body.get(INPUT_BYTES) or 0),
        )

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def state(self) -> str | None:
        return self.status.get("status")

    @property
    def attempts(self) -> int:
        try:
            return int(self.status.get("attempts") or 0)
        except (TypeError, ValueError):
            return 0


# ---- the runner pod -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str | None = None
    message: str | None = None  # the termination message, or the log's tail (FallbackToLogsOnError)


@dataclass(frozen=True)
class ContainerView:
    waiting_reason: str | None = None
    waiting_message: str | None = None
    terminated: Terminated | None = None


@dataclass(frozen=True)
class Condition:
    status: str
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class PodView:
    name: str
    uid: str
    pool: str = ""  # the img2img.dev/pool label
    namespace: str = ""
    phase: str = "Pending"  # Pending, Running, Succeeded, Failed, Unknown
    reason: str | None = None  # pod-level: Evicted, DeadlineExceeded, Preempting, NodeLost, …
    message: str | None = None
    created_ms: int | None = None
    deleting: bool = False
    conditions: Mapping[str, Condition] = field(default_factory=dict)
    container: ContainerView | None = None

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def live(self) -> bool:
        """Running or about to, and not being deleted: a runner that may still ask for work."""
        return not self.finished and not self.deleting

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PodView:
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        labels = meta.get("labels") or {}
        conditions = {
            c.get("type"): Condition(str(c.get("status")), c.get("reason"), c.get("message"))
            for c in status.get("conditions") or []
            if c.get("type")
        }
        container = None
        for cs in status.get("containerStatuses") or []:
            if cs.get("name") == RUNNER_CONTAINER:
                container = _container_view(cs)
        return cls(
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            pool=labels.get(LABEL_POOL, ""),
            namespace=meta.get("namespace", ""),
            phase=status.get("phase") or "Pending",
            reason=status.get("reason"),
            message=status.get("message"),
            created_ms=parse_time_ms(meta.get("creationTimestamp")),
            deleting=bool(meta.get("deletionTimestamp")),
            conditions=conditions,
            container=container,
        )


def _container_view(cs: Mapping[str, Any]) -> ContainerView:
    state = cs.get("state") or {}
    waiting = state.get("waiting") or None
    terminated = state.get("terminated") or None
    term = None
    if terminated is not None:
        term = Terminated(
            exit_code=int(terminated.get("exitCode") or 0),
            reason=terminated.get("reason"),
            message=terminated.get("message"),
        )
    return ContainerView(
        waiting_reason=(waiting or {}).get("reason"),
        waiting_message=(waiting or {}).get("message"),
        terminated=term,
    )

