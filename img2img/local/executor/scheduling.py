"""kube-scheduler's decisions, and the kubelet's admission that repeats them for a pod bound to its node.

Plain API dicts in, plain values out. The filters (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity,
NodeResourcesFit), their order and the message strings (`FitError`, the preemption summary) follow kube-scheduler;
scoring is LeastAllocated-like; the queue is PrioritySort. No preemption.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from img2img.local.executor.kube_time import rfc3339
from img2img.local.executor.pod_status import is_terminal
from img2img.local.executor.quantities import format_quantity, node_allocatable, pod_requests

DEFAULT_SCHEDULER = "default-scheduler"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"


def holds_resources(pod: Mapping) -> bool:
    """Whether a bound pod counts against its node: every pod not Succeeded/Failed, terminating ones included."""
    return not is_terminal(pod)


# ---- taints and tolerations ---------------------------------------------------------------------------------------
def tolerates(toleration: Mapping, taint: Mapping) -> bool:
    """v1.Toleration.ToleratesTaint."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    if operator == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def untolerated_taint(taints: Iterable[Mapping], tolerations: Iterable[Mapping],
                      effects: tuple[str, ...] = ("NoSchedule", "NoExecute")) -> Mapping | None:
    tolerations = list(tolerations or [])
    for taint in taints or []:
        if taint.get("effect") not in effects:
            continue
        if not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


# ---- node affinity ------------------------------------------------------------------------------------------------
def _match_requirement(req: Mapping, values_of: Mapping[str, str]) -> bool:
    key, op, values = req.get("key"), req.get("operator"), list(req.get("values") or [])
    present = key in values_of
    value = values_of.get(key)
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        try:
            lhs, rhs = int(value), int(values[0])
        except (TypeError, ValueError):
            return False
        return lhs > rhs if op == "Gt" else lhs < rhs
    return False


def _match_term(term: Mapping, node: Mapping) -> bool:
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False  # an empty term matches no objects
    labels = (node.get("metadata") or {}).get("labels") or {}
    node_fields = {"metadata.name": (node.get("metadata") or {}).get("name")}
    return all(_match_requirement(r, labels) for r in expressions) and all(
        _match_requirement(r, node_fields) for r in fields
    )


def matches_node_affinity(pod: Mapping, node: Mapping) -> bool:
    """nodeSelector AND requiredDuringSchedulingIgnoredDuringExecution (terms ORed)."""
    spec = pod.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if required is not None:
        terms = required.get("nodeSelectorTerms") or []
        if not any(_match_term(t, node) for t in terms):
            return False
    return True


# ---- fit ------------------------------------------------------------------------------------------------------------
@dataclass
class NodeFit:
    """The result of the filter plugins for one node. `resolvable`: preemption could help (resources only)."""

    node: str
    reasons: list[str] = field(default_factory=list)
    resolvable: bool = True

    @property
    def ok(self) -> bool:
        return not self.reasons


def insufficient_resources(pod: Mapping, node: Mapping,
                           bound_pods: Iterable[Mapping]) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    """(resource, requested, used, allocatable) for every resource the pod does not fit, "pods" first."""
    alloc = node_allocatable(node)
    holding = [p for p in bound_pods if holds_resources(p)]
    used: dict[str, Decimal] = {}
    for p in holding:
        for name, q in pod_requests(p).items():
            used[name] = used.get(name, Decimal(0)) + q
    out = []
    max_pods = alloc.get("pods")
    if max_pods is not None and len(holding) + 1 > max_pods:
        out.append(("pods", Decimal(1), Decimal(len(holding)), max_pods))
    for name, q in sorted(pod_requests(pod).items()):
        if q <= 0:
            continue
        have = alloc.get(name, Decimal(0))
        if q > have - used.get(name, Decimal(0)):
            out.append((name, q, used.get(name, Decimal(0)), have))
    return out


def fits(pod: Mapping, node: Mapping, bound_pods: Iterable[Mapping]) -> NodeFit:
    """kube-scheduler's filters, in its order, for one node. `bound_pods`: the pods already assigned to the node."""
    name = (node.get("metadata") or {}).get("name", "")
    spec = pod.get("spec") or {}
    tolerations = spec.get("tolerations") or []
    node_spec = node.get("spec") or {}
    if node_spec.get("unschedulable"):
        taint = {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
        if not any(tolerates(t, taint) for t in tolerations):
            return NodeFit(name, ["node(s) were unschedulable"], resolvable=False)
    if spec.get("nodeName") and spec["nodeName"] != name:
        return NodeFit(name, ["node(s) didn't match the requested node name"], resolvable=False)
    taint = untolerated_taint(node_spec.get("taints") or [], tolerations)
    if taint is not None:
        return NodeFit(name, [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"],
                       resolvable=False)
    if not matches_node_affinity(pod, node):
        return NodeFit(name, ["node(s) didn't match Pod's node affinity/selector"], resolvable=False)
    missing = insufficient_resources(pod, node, bound_pods)
    if missing:
        return NodeFit(name, ["Too many pods" if r == "pods" else f"Insufficient {r}" for r, *_ in missing])
    return NodeFit(name)


def fit_error_message(results: list[NodeFit]) -> str:
    """framework.FitError.Error() plus the preemption post-filter's summary, as kube-scheduler words it."""
    if not results:
        return "no nodes available to schedule pods"
    n = len(results)
    counts = Counter(reason for r in results for reason in r.reasons)
    reasons = sorted(f"{v} {k}" for k, v in counts.items())
    message = f"0/{n} nodes are available: {', '.join(reasons)}."
    pre = Counter("No preemption victims found for incoming pod" if r.resolvable
                  else "Preemption is not helpful for scheduling" for r in results)
    message += f" preemption: 0/{n} nodes are available: {', '.join(sorted(f'{v} {k}' for k, v in pre.items()))}."
    return message


def _score(pod: Mapping, node: Mapping, bound_pods: list[Mapping]) -> float:
    """LeastAllocated-like: the mean free fraction, after placing the pod, over cpu, memory and what the pod asks."""
    alloc = node_allocatable(node)
    used: dict[str, Decimal] = {}
    for p in bound_pods:
        if holds_resources(p):
            for k, q in pod_requests(p).items():
                used[k] = used.get(k, Decimal(0)) + q
    req = pod_requests(pod)
    names = {"cpu", "memory"} | set(req)
    fractions = []
    for k in names:
        cap = alloc.get(k, Decimal(0))
        if cap > 0:
            fractions.append(float((cap - used.get(k, Decimal(0)) - req.get(k, Decimal(0))) / cap))
    return sum(fractions) / len(fractions) if fractions else 0.0


@dataclass
class ScheduleResult:
    node: str | None
    reason: str = ""  # when node is None: the PodScheduled=False reason (Unschedulable, SchedulingGated)
    message: str = ""


def schedule(pod: Mapping, nodes: list[Mapping], pods_by_node: Mapping[str, list[Mapping]]) -> ScheduleResult:
    """Pick a node for `pod` (None, with the scheduler's reason and message, when it cannot be placed)."""
    if (pod.get("spec") or {}).get("schedulingGates"):
        return ScheduleResult(None, "SchedulingGated", "Scheduling is blocked due to non-empty scheduling gates")
    results = []
    feasible = []
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        name = node["metadata"]["name"]
        bound = pods_by_node.get(name, [])
        r = fits(pod, node, bound)
        results.append(r)
        if r.ok:
            feasible.append((-_score(pod, node, bound), name))
    if feasible:
        return ScheduleResult(sorted(feasible)[0][1])
    return ScheduleResult(None, "Unschedulable", fit_error_message(results))


def wants_scheduler(pod: Mapping, scheduler_name: str = DEFAULT_SCHEDULER) -> bool:
    """An unbound, live pod addressed to this scheduler (a gated one too: it is told `SchedulingGated`)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    return (
        not spec.get("nodeName")
        and (spec.get("schedulerName") or DEFAULT_SCHEDULER) == scheduler_name
        and not meta.get("deletionTimestamp")
        and not is_terminal(pod)
    )


def scheduling_order(pods: Iterable[Mapping]) -> list[Mapping]:
    """PrioritySort: higher spec.priority first, then older first."""
    return sorted(pods, key=lambda p: (-int((p.get("spec") or {}).get("priority") or 0),
                                       (p.get("metadata") or {}).get("creationTimestamp") or "",
                                       (p.get("metadata") or {}).get("name") or ""))


def unschedulable_condition(reason: str, message: str, now: dt.datetime, previous: Mapping | None) -> dict:
    same = previous and previous.get("status") == "False"
    return {
        "type": "PodScheduled",
        "status": "False",
        "reason": reason,
        "message": message,
        "lastProbeTime": None,
        "lastTransitionTime": previous.get("lastTransitionTime") if same else rfc3339(now),
    }


def admit(pod: Mapping, node: Mapping, active_pods: Iterable[Mapping]) -> tuple[bool, str, str]:
    """The kubelet's admission (predicateAdmitHandler) for a pod bound to this node: node affinity and resources."""
    if not matches_node_affinity(pod, node):
        return False, "NodeAffinity", "Pod was rejected: Predicate NodeAffinity failed"
    missing = insufficient_resources(pod, node, active_pods)
    if missing:
        r, requested, used, cap = missing[0]
        return (False, f"OutOf{r}", "Pod was rejected: Node didn't have enough resource: "
                f"{r}, requested: {format_quantity(r, requested)}, used: {format_quantity(r, used)}, "
                f"capacity: {format_quantity(r, cap)}")
    return True, "", ""

