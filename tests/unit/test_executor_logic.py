"""Pure decisions of the local executor: scheduling filters and messages, kubelet admission, env, pod status."""

from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal

import pytest

from img2img.local import executor_logic as L

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
    assert L.parse_quantity(text) == value


def test_parse_quantity_rejects_garbage():
    with pytest.raises(ValueError):
        L.parse_quantity("lots")


def test_pod_requests_sum_containers_max_init_and_default_to_limits():
    p = pod(gpus=1, cpu="500m")
    p["spec"]["containers"].append({"name": "side", "resources": {"requests": {"cpu": "250m"}}})
    p["spec"]["initContainers"] = [{"name": "init", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]
    req = L.pod_requests(p)
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
    assert L.tolerates(toleration, TAINT) is ok


def test_prefer_no_schedule_taints_do_not_filter():
    soft = {"key": "x", "value": "y", "effect": "PreferNoSchedule"}
    assert L.untolerated_taint([soft], []) is None
    assert L.untolerated_taint([soft, TAINT], []) == TAINT


# ---- node affinity ------------------------------------------------------------------------------------------------
def test_node_selector_and_required_affinity():
    n = node(labels={"nvidia.com/gpu.product": "A100", "zone": "a", "gpus": "8"})
    assert L.matches_node_affinity(pod(selector={"nvidia.com/gpu.product": "A100"}), n)
    assert not L.matches_node_affinity(pod(selector={"nvidia.com/gpu.product": "L4"}), n)

    def with_terms(*terms):
        return pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": list(terms)}}})

    def expr(key, op, *values):
        return {"matchExpressions": [{"key": key, "operator": op, "values": list(values)}]}

    assert L.matches_node_affinity(with_terms(expr("zone", "In", "a")), n)
    assert not L.matches_node_affinity(with_terms(expr("zone", "NotIn", "a")), n)
    assert L.matches_node_affinity(with_terms(expr("missing", "DoesNotExist")), n)
    assert L.matches_node_affinity(with_terms(expr("gpus", "Gt", "4")), n)
    assert not L.matches_node_affinity(with_terms(expr("gpus", "Lt", "4")), n)
    # terms are ORed
    by_name = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["local-gpu-0"]}]}
    assert L.matches_node_affinity(with_terms(expr("zone", "In", "b"), by_name), n)
    assert not L.matches_node_affinity(with_terms({}), n)  # an empty term matches nothing


# ---- fits and the scheduler's message -----------------------------------------------------------------------------
def test_fits_counts_only_non_terminal_pods_of_the_node():
    n = node(gpus="1")
    running = pod("a", gpus=1, node_name="local-gpu-0", phase="Running")
    finished = pod("b", gpus=1, node_name="local-gpu-0", phase="Succeeded")
    assert L.fits(pod("c", gpus=1), n, [finished]).ok
    r = L.fits(pod("c", gpus=1), n, [running, finished])
    assert r.reasons == ["Insufficient nvidia.com/gpu"] and r.resolvable


def test_terminating_pods_still_hold_their_resources():
    holder = pod("a", gpus=1, node_name="local-gpu-0", phase="Running")
    holder["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not L.fits(pod("c", gpus=1), node(), [holder]).ok


def test_two_gpus_on_a_one_gpu_node_message():
    result = L.schedule(pod(gpus=2), [node()], {})
    assert result.node is None
    assert result.message == ("0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are "
                              "available: 1 No preemption victims found for incoming pod.")


def test_node_selector_mismatch_message():
    result = L.schedule(pod(selector={"nvidia.com/gpu.product": "H100"}), [node()], {})
    assert result.message == ("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. "
                              "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.")


def test_taint_message_and_toleration():
    tainted = node(taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}])
    result = L.schedule(pod(gpus=1), [tainted], {})
    assert "1 node(s) had untolerated taint {nvidia.com/gpu: present}." in result.message
    ok = L.schedule(pod(gpus=1, tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]), [tainted], {})
    assert ok.node == "local-gpu-0"


def test_unschedulable_node_and_multiple_reasons_are_counted_and_sorted():
    nodes = [node("a", gpus="0"), node("b", unschedulable=True), node("c", labels={"x": "y"}, gpus="0", cpu="1")]
    result = L.schedule(pod(gpus=1, cpu="1500m"), nodes, {})
    assert result.message == (
        "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) were unschedulable, "
        "2 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: "
        "1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
    )


def test_no_nodes_message():
    assert L.schedule(pod(), [], {}).message == "no nodes available to schedule pods"


def test_too_many_pods():
    n = node(pods="1")
    r = L.fits(pod("b"), n, [pod("a", node_name="local-gpu-0", phase="Running")])
    assert r.reasons == ["Too many pods"]


def test_schedule_prefers_the_least_allocated_node():
    busy = pod("a", gpus=1, cpu="1", node_name="n1", phase="Running")
    result = L.schedule(pod(gpus=1), [node("n1", gpus="2"), node("n2", gpus="2")], {"n1": [busy]})
    assert result.node == "n2"


def test_scheduling_order_priority_then_age():
    old = pod("old", created="2026-01-01T00:00:00Z")
    new = pod("new", created="2026-01-01T00:00:05Z")
    urgent = pod("urgent", created="2026-01-01T00:00:09Z", priority=100)
    assert [p["metadata"]["name"] for p in L.scheduling_order([new, urgent, old])] == ["urgent", "old", "new"]


def test_wants_scheduler():
    assert L.wants_scheduler(pod())
    assert not L.wants_scheduler(pod(node_name="x"))
    assert not L.wants_scheduler(pod(schedulerName="other"))
    assert L.wants_scheduler(pod(schedulerName="other"), "other")
    gone = pod()
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not L.wants_scheduler(gone)


def test_unschedulable_condition_keeps_transition_time():
    first = L.unschedulable_condition("Unschedulable", "m1", NOW, None)
    later = L.unschedulable_condition("Unschedulable", "m2", NOW + dt.timedelta(seconds=9), first)
    assert later["lastTransitionTime"] == first["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert later["message"] == "m2"


def test_kubelet_admission():
    active = [pod("a", gpus=1, node_name="local-gpu-0", phase="Running")]
    ok, reason, message = L.admit(pod("b", gpus=1, node_name="local-gpu-0"), node(), active)
    assert not ok and reason == "OutOfnvidia.com/gpu"
    assert message == ("Pod was rejected: Node didn't have enough resource: nvidia.com/gpu, requested: 1, used: 1, "
                       "capacity: 1")
    ok, reason, _ = L.admit(pod("b", selector={"x": "y"}, node_name="local-gpu-0"), node(), [])
    assert not ok and reason == "NodeAffinity"
    assert L.admit(pod("b", gpus=1), node(), [])[0]


# ---- images -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ref,normal", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("img2img/runner:local", "docker.io/img2img/runner:local"),
    ("ghcr.io/a/b:1", "ghcr.io/a/b:1"),
    ("localhost:5000/x", "localhost:5000/x:latest"),
    ("repo/x@sha256:abc", "docker.io/repo/x@sha256:abc"),
])
def test_normalize_image(ref, normal):
    assert L.normalize_image(ref) == normal


def test_match_image_by_pattern_as_written_or_normalized():
    table = {"img2img/runner:*": {"path_prepend": ["/venv/bin"]}, "docker.io/library/busybox:*": {}}
    assert L.match_image("img2img/runner:local", table) == {"path_prepend": ["/venv/bin"]}
    assert L.match_image("busybox", table) == {}
    assert L.match_image("nosuch/image:1", table) is None
    assert L.image_id("img2img/runner:local").startswith("docker.io/img2img/runner@sha256:")


# ---- env ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,out", [
    ("$(A)-$(B)", "1-$(B)"),
    ("$$(A)", "$(A)"),
    ("$$", "$"),
    ("a$b", "a$b"),
    ("$(A", "$(A"),
    ("end$", "end$"),
    ("$(A)$(A)", "11"),
])
def test_expand(text, out):
    assert L.expand(text, {"A": "1"}) == out


SECRET = {"data": {"key": base64.b64encode(b"s3cr3t").decode(), "OTHER": base64.b64encode(b"o").decode()}}
CONFIGMAP = {"data": {"mode": "fast", "bad key": "x"}}


def _env(container, pod_obj=None):
    p = pod_obj or pod()
    return L.container_env(
        p, container,
        get_secret=lambda ns, name: SECRET if name == "s" else None,
        get_configmap=lambda ns, name: CONFIGMAP if name == "c" else None,
        service_env={"KUBERNETES_SERVICE_HOST": "127.0.0.1"}, pod_ip="127.0.0.1", host_ip="127.0.0.1",
        node_alloc={"cpu": Decimal(2), "memory": Decimal(2**30)},
    )


def test_container_env_sources():
    env = _env({"name": "main", "envFrom": [{"configMapRef": {"name": "c"}, "prefix": "CM_"}],
                "env": [
                    {"name": "PLAIN", "value": "x-$(CM_mode)"},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "key"}}},
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "mode"}}},
                    {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k", "optional": True}}},
                ]})
    assert env["PLAIN"] == "x-fast"
    assert env["TOKEN"] == "s3cr3t"
    assert env["MODE"] == "fast" and env["CM_mode"] == "fast" and "CM_bad key" not in env
    assert (env["NAME"], env["NS"], env["UID"], env["IP"]) == ("p", "ns", "uid-p", "127.0.0.1")
    assert env["CPU"] == "2" and env["MEM"] == "1024"
    assert "OPT" not in env
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"


@pytest.mark.parametrize("var,message", [
    ({"secretKeyRef": {"name": "missing", "key": "k"}}, 'secret "missing" not found'),
    ({"secretKeyRef": {"name": "s", "key": "nope"}}, "couldn't find key nope in Secret ns/s"),
    ({"configMapKeyRef": {"name": "missing", "key": "k"}}, 'configmap "missing" not found'),
    ({"configMapKeyRef": {"name": "c", "key": "nope"}}, "couldn't find key nope in ConfigMap ns/c"),
])
def test_container_env_errors_are_create_container_config_errors(var, message):
    with pytest.raises(L.EnvError) as err:
        _env({"name": "main", "env": [{"name": "X", "valueFrom": var}]})
    assert str(err.value) == message


def test_container_argv_expands_and_requires_a_command():
    assert L.container_argv({"command": ["echo"], "args": ["$(A)", "$$(A)"]}, {"A": "1"}) == ["echo", "1", "$(A)"]
    assert L.container_argv({"args": ["x"]}, {}) is None


# ---- termination messages -----------------------------------------------------------------------------------------
def test_termination_message_from_file_truncated():
    assert L.termination_message(b'{"ok": 1}', "File", 0) == '{"ok": 1}'
    assert len(L.termination_message(b"x" * 10000, "File", 1)) == 4096


def test_termination_message_fallback_to_logs_only_on_error_with_empty_file():
    log = b"".join(f"line {i}\n".encode() for i in range(200))
    assert L.termination_message(b"", "File", 1, log) == ""
    assert L.termination_message(b"", "FallbackToLogsOnError", 0, log) == ""
    tail = L.termination_message(b"", "FallbackToLogsOnError", 3, log)
    assert tail.splitlines()[0] == "line 120" and tail.endswith("line 199\n")
    assert L.termination_message(b"file wins", "FallbackToLogsOnError", 3, log) == "file wins"
    big = b"y" * 5000 + b"\n"
    assert len(L.termination_message(b"", "FallbackToLogsOnError", 1, big)) == 2048


def test_exit_codes_and_backoff():
    assert L.exit_code_of(3) == 3
    assert L.exit_code_of(-9) == 137 and L.exit_code_of(-15) == 143
    assert [L.crash_backoff(n) for n in (1, 2, 3, 6, 9)] == [10, 20, 40, 300, 300]
    assert L.should_restart("Always", 0) and L.should_restart("OnFailure", 1)
    assert not L.should_restart("OnFailure", 0) and not L.should_restart("Never", 1)


# ---- pod status ---------------------------------------------------------------------------------------------------
def run(name="main", state="waiting", exit_code=None, reason="ContainerCreating", last=None):
    r = L.ContainerRun(name, "img2img/runner:local", state=state, reason=reason, exit_code=exit_code, last_state=last)
    if state != "waiting":
        r.started_at = NOW
        r.container_id = "containerd://abc"
    if state == "terminated":
        r.finished_at = NOW + dt.timedelta(seconds=3)
    return r


@pytest.mark.parametrize("policy,runs,terminal,phase", [
    ("Never", [run()], False, "Pending"),
    ("Never", [run(state="running")], False, "Running"),
    ("Never", [run(state="terminated", exit_code=0, reason="Completed")], False, "Succeeded"),
    ("Never", [run(state="terminated", exit_code=3, reason="Error")], False, "Failed"),
    ("Never", [run(state="terminated", exit_code=0), run("b", state="running")], False, "Running"),
    ("Always", [run(state="terminated", exit_code=0)], False, "Running"),
    ("OnFailure", [run(state="terminated", exit_code=1)], False, "Running"),
    ("OnFailure", [run(state="terminated", exit_code=0)], False, "Succeeded"),
    ("Always", [run(state="terminated", exit_code=0)], True, "Succeeded"),
    ("Always", [run(state="terminated", exit_code=143)], True, "Failed"),
    ("Always", [run(reason="CrashLoopBackOff", last={"exitCode": 1})], False, "Running"),
])
def test_pod_phase(policy, runs, terminal, phase):
    assert L.pod_phase(policy, [], runs, terminal) == phase


def test_pod_phase_with_init_containers():
    assert L.pod_phase("Never", [run("init", state="running")], [run(reason="PodInitializing")], False) == "Pending"
    assert L.pod_phase("Never", [run("init", state="terminated", exit_code=1)], [run()], False) == "Failed"
    assert L.pod_phase("OnFailure", [run("init", state="terminated", exit_code=1)], [run()], False) == "Pending"
    done = run("init", state="terminated", exit_code=0)
    assert L.pod_phase("Never", [done], [run(state="running")], False) == "Running"


def view(runs, **kw):
    defaults = dict(restart_policy="Never", init_runs=[], runs=runs, host_ip="127.0.0.1", pod_ip="127.0.0.1",
                    start_time=NOW, sandbox_ready=True)
    defaults.update(kw)
    return L.PodView(**defaults)


def conds(status):
    return {c["type"]: c for c in status["conditions"]}


def test_status_container_creating():
    s = L.build_pod_status(view([run()]), [], NOW)
    assert s["phase"] == "Pending"
    assert s["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert s["containerStatuses"][0]["image"] == "docker.io/img2img/runner:local"
    c = conds(s)
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "ContainersNotReady"
    assert c["Ready"]["message"] == "containers with unready status: [main]"
    assert c["Initialized"]["status"] == "True" and c["PodScheduled"]["status"] == "True"
    assert s["startTime"] == "2026-01-02T03:04:05Z" and s["hostIPs"] == [{"ip": "127.0.0.1"}]


def test_status_running_is_ready_and_keeps_transition_times():
    s1 = L.build_pod_status(view([run()]), [], NOW)
    s2 = L.build_pod_status(view([run(state="running")]), s1["conditions"], NOW + dt.timedelta(seconds=5))
    cs = s2["containerStatuses"][0]
    assert s2["phase"] == "Running" and cs["ready"] and cs["started"]
    assert cs["state"] == {"running": {"startedAt": "2026-01-02T03:04:05Z"}}
    c1, c2 = conds(s1), conds(s2)
    assert c2["Ready"]["status"] == "True" and c2["Ready"]["reason"] is None and c2["Ready"]["message"] is None
    assert c2["Ready"]["lastTransitionTime"] == "2026-01-02T03:04:10Z"
    assert c2["Initialized"]["lastTransitionTime"] == c1["Initialized"]["lastTransitionTime"]
    assert s2["podIP"] == "127.0.0.1"


def test_status_terminated():
    r = run(state="terminated", exit_code=3, reason="Error")
    r.message = '{"error": "bad"}'
    s = L.build_pod_status(view([r], terminal=True), [], NOW)
    term = s["containerStatuses"][0]["state"]["terminated"]
    assert s["phase"] == "Failed"
    assert term == {"exitCode": 3, "reason": "Error", "message": '{"error": "bad"}',
                    "startedAt": "2026-01-02T03:04:05Z", "finishedAt": "2026-01-02T03:04:08Z",
                    "containerID": "containerd://abc"}
    c = conds(s)
    assert c["Ready"]["reason"] == "PodCompleted" and c["ContainersReady"]["reason"] == "PodCompleted"
    assert c["PodReadyToStartContainers"]["status"] == "False"


def test_status_deadline_and_eviction_overrides():
    r = run(state="terminated", exit_code=143, reason="Error")
    s = L.build_pod_status(view([r], terminal=True, phase_override="Failed", reason=L.DEADLINE_REASON,
                                message=L.DEADLINE_MESSAGE), [], NOW)
    assert (s["phase"], s["reason"], s["message"]) == ("Failed", "DeadlineExceeded",
                                                       "Pod was active on the node longer than the specified deadline")
    assert "DisruptionTarget" not in conds(s)
    msg = L.NODE_LOW_MESSAGE.format(resource="memory")
    s = L.build_pod_status(view([r], terminal=True, phase_override="Failed", reason="Evicted", message=msg,
                                disruption=msg), [], NOW)
    d = conds(s)["DisruptionTarget"]
    assert (d["status"], d["reason"], d["message"]) == ("True", "TerminationByKubelet",
                                                        "The node was low on resource: memory. ")
    assert s["reason"] == "Evicted"


def test_status_waiting_with_last_state_and_init_containers():
    r = run(reason="CrashLoopBackOff", last={"exitCode": 1, "reason": "Error"})
    r.restart_count = 2
    s = L.build_pod_status(view([r], restart_policy="Always", init_runs=[run("init", state="terminated", exit_code=0,
                                                                              reason="Completed")]), [], NOW)
    cs = s["containerStatuses"][0]
    assert cs["lastState"] == {"terminated": {"exitCode": 1, "reason": "Error"}} and cs["restartCount"] == 2
    assert s["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert s["phase"] == "Running"


def test_rejected_status():
    s = L.rejected_status("OutOfnvidia.com/gpu", "Pod was rejected: ...", "127.0.0.1", NOW)
    assert s["phase"] == "Failed" and "containerStatuses" not in s


def test_was_started():
    assert not L.was_started({"state": {"waiting": {"reason": "ContainerCreating"}}})
    assert L.was_started({"state": {"running": {}}})
    assert L.was_started({"state": {"waiting": {}}, "lastState": {"terminated": {"exitCode": 1}}})


# ---- configuration ------------------------------------------------------------------------------------------------
def test_config_accepts_the_stack_camel_case_and_snake_case():
    from img2img.local.executor import Config

    cfg = Config.from_dict({
        "nodeName": "n", "capacity": {"cpu": 2, "nvidia.com/gpu": 1}, "labels": {"a": "b"},
        "stateDir": "/tmp/x", "images": {"img2img/runner:*": {"pathPrepend": ["/v/bin"]}, "plain:*": "/p/bin",
                                         "e:*": {"path_prepend": "/e", "env": {"A": 1}}},
        "taints": [{"key": "k", "effect": "NoSchedule"}], "schedulerName": "s",
    })
    assert cfg.node_name == "n" and cfg.capacity == {"cpu": "2", "nvidia.com/gpu": "1"}
    assert cfg.images["img2img/runner:*"]["path_prepend"] == ["/v/bin"]
    assert cfg.images["plain:*"]["path_prepend"] == ["/p/bin"]
    assert cfg.images["e:*"] == {"path_prepend": ["/e"], "env": {"A": "1"}, "inherit": [], "paths": []}
    assert cfg.scheduler_name == "s" and cfg.taints[0]["key"] == "k"
    default = Config.from_dict({})
    assert default.node_name == "local-gpu-0" and default.capacity["nvidia.com/gpu"] == "1"
