"""kube-scheduler's decisions as the executor makes them: quantities, filters and their messages, queue order, gates,
and the kubelet's admission."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from img2img.local.executor.quantities import parse_quantity, pod_requests
from img2img.local.executor.scheduling import (
    admit, fits, matches_node_affinity, schedule, scheduling_order, tolerates, unschedulable_condition,
    untolerated_taint, wants_scheduler,
)

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def node(name="local-gpu-0", gpus="1", cpu="2", memory="24Gi", pods="110", labels=None, taints=None,
         unschedulable=False):
    n = {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": taints or []},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods, "nvidia.com/gpu": gpus}},
    }
    if unschedulable:
        n["spec"]["unschedulable"] = True
    return n


def pod(name="p", gpus=None, cpu=None, memory=None, node_name=None, phase="Pending", selector=None,
        tolerations=None, priority=None, created="2026-01-01T00:00:00Z", **spec_extra):
    limits, requests = {}, {}
    if gpus is not None:
        limits["nvidia.com/gpu"] = str(gpus)
    if cpu is not None:
        requests["cpu"] = cpu
    if memory is not None:
        requests["memory"] = memory
    spec = {"containers": [{"name": "main", "image": "img2img/runner:local", "command": ["true"],
                            "resources": {"limits": limits, "requests": requests}}], **spec_extra}
    if node_name:
        spec["nodeName"] = node_name
    if selector:
        spec["nodeSelector"] = selector
    if tolerations:
        spec["tolerations"] = tolerations
    if priority is not None:
        spec["priority"] = priority
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "creationTimestamp": created},
            "spec": spec, "status": {"phase": phase}}


# ---- quantities ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,value", [
    ("500m", Decimal("0.5")), ("2", Decimal(2)), ("24Gi", Decimal(24 * 2**30)), ("1k", Decimal(1000)),
    ("1e3", Decimal(1000)), ("1.5", Decimal("1.5")), (3, Decimal(3)), ("100Mi", Decimal(100 * 2**20)),
])
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


def test_parse_quantity_rejects_garbage():
    with pytest.raises(ValueError):
        parse_quantity("lots")


def test_pod_requests_sum_containers_max_init_and_default_to_limits():
    p = pod(gpus=1, cpu="500m")
    p["spec"]["containers"].append({"name": "side", "resources": {"requests": {"cpu": "250m"}}})
    p["spec"]["initContainers"] = [{"name": "init", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]
    req = pod_requests(p)
    assert req["nvidia.com/gpu"] == 1
    assert req["cpu"] == 1  # max(0.75, 1)
    assert req["memory"] == 2**30


# ---- tolerations --------------------------------------------------------------------------------------------------
TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@pytest.mark.parametrize("toleration,ok", [
    ({"key": "nvidia.com/gpu", "operator": "Exists"}, True),
    ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, True),
    ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, False),
    ({"key": "nvidia.com/gpu", "value": "present"}, True),  # operator defaults to Equal
    ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "absent"}, False),
    ({"operator": "Exists"}, True),  # empty key + Exists tolerates everything
    ({"key": "other", "operator": "Exists"}, False),
])
def test_toleration_matching(toleration, ok):
    assert tolerates(toleration, TAINT) is ok


def test_prefer_no_schedule_taints_do_not_filter():
    soft = {"key": "x", "value": "y", "effect": "PreferNoSchedule"}
    assert untolerated_taint([soft], []) is None
    assert untolerated_taint([soft, TAINT], []) == TAINT


# ---- node affinity ------------------------------------------------------------------------------------------------
def test_node_selector_and_required_affinity():
    n = node(labels={"nvidia.com/gpu.product": "A100", "zone": "a", "gpus": "8"})
    assert matches_node_affinity(pod(selector={"nvidia.com/gpu.product": "A100"}), n)
    assert not matches_node_affinity(pod(selector={"nvidia.com/gpu.product": "L4"}), n)

    def with_terms(*terms):
        return pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": list(terms)}}})

    def expr(key, op, *values):
        return {"matchExpressions": [{"key": key, "operator": op, "values": list(values)}]}

    assert matches_node_affinity(with_terms(expr("zone", "In", "a")), n)
    assert not matches_node_affinity(with_terms(expr("zone", "NotIn", "a")), n)
    assert matches_node_affinity(with_terms(expr("missing", "DoesNotExist")), n)
    assert matches_node_affinity(with_terms(expr("gpus", "Gt", "4")), n)
    assert not matches_node_affinity(with_terms(expr("gpus", "Lt", "4")), n)
    # terms are ORed
    by_name = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["local-gpu-0"]}]}
    assert matches_node_affinity(with_terms(expr("zone", "In", "b"), by_name), n)
    assert not matches_node_affinity(with_terms({}), n)  # an empty term matches nothing


# ---- fits and the scheduler's message -----------------------------------------------------------------------------
def test_fits_counts_only_non_terminal_pods_of_the_node():
    n = node(gpus="1")
    running = pod("a", gpus=1, node_name="local-gpu-0", phase="Running")
    finished = pod("b", gpus=1, node_name="local-gpu-0", phase="Succeeded")
    assert fits(pod("c", gpus=1), n, [finished]).ok
    r = fits(pod("c", gpus=1), n, [running, finished])
    assert r.reasons == ["Insufficient nvidia.com/gpu"] and r.resolvable


def test_terminating_pods_still_hold_their_resources():
    holder = pod("a", gpus=1, node_name="local-gpu-0", phase="Running")
    holder["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not fits(pod("c", gpus=1), node(), [holder]).ok


def test_two_gpus_on_a_one_gpu_node_message():
    result = schedule(pod(gpus=2), [node()], {})
    assert result.node is None
    assert result.message == ("0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are "
                              "available: 1 No preemption victims found for incoming pod.")


def test_node_selector_mismatch_message():
    result = schedule(pod(selector={"nvidia.com/gpu.product": "H100"}), [node()], {})
    assert result.message == ("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. "
                              "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.")


def test_taint_message_and_toleration():
    tainted = node(taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}])
    result = schedule(pod(gpus=1), [tainted], {})
    assert "1 node(s) had untolerated taint {nvidia.com/gpu: present}." in result.message
    ok = schedule(pod(gpus=1, tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]), [tainted], {})
    assert ok.node == "local-gpu-0"


def test_unschedulable_node_and_multiple_reasons_are_counted_and_sorted():
    nodes = [node("a", gpus="0"), node("b", unschedulable=True), node("c", labels={"x": "y"}, gpus="0", cpu="1")]
    result = schedule(pod(gpus=1, cpu="1500m"), nodes, {})
    assert result.message == (
        "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) were unschedulable, "
        "2 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: "
        "1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
    )


def test_no_nodes_message():
    assert schedule(pod(), [], {}).message == "no nodes available to schedule pods"


def test_too_many_pods():
    n = node(pods="1")
    r = fits(pod("b"), n, [pod("a", node_name="local-gpu-0", phase="Running")])
    assert r.reasons == ["Too many pods"]


def test_schedule_prefers_the_least_allocated_node():
    busy = pod("a", gpus=1, cpu="1", node_name="n1", phase="Running")
    result = schedule(pod(gpus=1), [node("n1", gpus="2"), node("n2", gpus="2")], {"n1": [busy]})
    assert result.node == "n2"


def test_scheduling_order_priority_then_age():
    old = pod("old", created="2026-01-01T00:00:00Z")
    new = pod("new", created="2026-01-01T00:00:05Z")
    urgent = pod("urgent", created="2026-01-01T00:00:09Z", priority=100)
    assert [p["metadata"]["name"] for p in scheduling_order([new, urgent, old])] == ["urgent", "old", "new"]


def test_wants_scheduler():
    assert wants_scheduler(pod())
    assert not wants_scheduler(pod(node_name="x"))
    assert not wants_scheduler(pod(schedulerName="other"))
    assert wants_scheduler(pod(schedulerName="other"), "other")
    gone = pod()
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not wants_scheduler(gone)


def test_unschedulable_condition_keeps_transition_time():
    first = unschedulable_condition("Unschedulable", "m1", NOW, None)
    later = unschedulable_condition("Unschedulable", "m2", NOW + dt.timedelta(seconds=9), first)
    assert later["lastTransitionTime"] == first["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert later["message"] == "m2"


def test_kubelet_admission():
    active = [pod("a", gpus=1, node_name="local-gpu-0", phase="Running")]
    ok, reason, message = admit(pod("b", gpus=1, node_name="local-gpu-0"), node(), active)
    assert not ok and reason == "OutOfnvidia.com/gpu"
    assert message == ("Pod was rejected: Node didn't have enough resource: nvidia.com/gpu, requested: 1, used: 1, "
                       "capacity: 1")
    ok, reason, _ = admit(pod("b", selector={"x": "y"}, node_name="local-gpu-0"), node(), [])
    assert not ok and reason == "NodeAffinity"
    assert admit(pod("b", gpus=1), node(), [])[0]




def test_a_gated_pod_is_not_placed():
    result = schedule(pod(gpus=1, schedulingGates=[{"name": "wait"}]), [node()], {})
    assert (result.node, result.reason) == (None, "SchedulingGated")
    assert result.message == "Scheduling is blocked due to non-empty scheduling gates"
    assert schedule(pod(gpus=2), [node()], {}).reason == "Unschedulable"
