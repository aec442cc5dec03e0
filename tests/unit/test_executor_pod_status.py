"""The kubelet's pod status: container exits and termination messages, phase, conditions, kills, and what an
executor restart reports for the containers it lost."""

from __future__ import annotations

import datetime as dt

import pytest

from img2img.local.executor.exits import backoff_delay, exit_code_of, should_restart, termination_message
from img2img.local.executor.kills import (
    DEADLINE_MESSAGE, DEADLINE_REASON, NODE_LOW_MESSAGE, kill_decision, kill_outcome,
)
from img2img.local.executor.pod_status import (
    ContainerRun, PodView, build_pod_status, mark_unknown, pod_phase, recover_runs, rejected_status, was_started,
)

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


# ---- termination messages -----------------------------------------------------------------------------------------
def test_termination_message_from_file_truncated():
    assert termination_message(b'{"ok": 1}', "File", 0) == '{"ok": 1}'
    assert len(termination_message(b"x" * 10000, "File", 1)) == 4096


def test_termination_message_fallback_to_logs_only_on_error_with_empty_file():
    log = b"".join(f"line {i}\n".encode() for i in range(200))
    assert termination_message(b"", "File", 1, log) == ""
    assert termination_message(b"", "FallbackToLogsOnError", 0, log) == ""
    tail = termination_message(b"", "FallbackToLogsOnError", 3, log)
    assert tail.splitlines()[0] == "line 120" and tail.endswith("line 199\n")
    assert termination_message(b"file wins", "FallbackToLogsOnError", 3, log) == "file wins"
    big = b"y" * 5000 + b"\n"
    assert len(termination_message(b"", "FallbackToLogsOnError", 1, big)) == 2048


def test_exit_codes_and_backoff():
    assert exit_code_of(3) == 3
    assert exit_code_of(-9) == 137 and exit_code_of(-15) == 143
    assert [backoff_delay(n) for n in (1, 2, 3, 6, 9)] == [10, 20, 40, 300, 300]
    assert should_restart("Always", 0) and should_restart("OnFailure", 1)
    assert not should_restart("OnFailure", 0) and not should_restart("Never", 1)


# ---- pod status ---------------------------------------------------------------------------------------------------
def run(name="main", state="waiting", exit_code=None, reason="ContainerCreating", last=None):
    r = ContainerRun(name, "img2img/runner:local", state=state, reason=reason, exit_code=exit_code, last_state=last)
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
    assert pod_phase(policy, [], runs, terminal) == phase


def test_pod_phase_with_init_containers():
    assert pod_phase("Never", [run("init", state="running")], [run(reason="PodInitializing")], False) == "Pending"
    assert pod_phase("Never", [run("init", state="terminated", exit_code=1)], [run()], False) == "Failed"
    assert pod_phase("OnFailure", [run("init", state="terminated", exit_code=1)], [run()], False) == "Pending"
    done = run("init", state="terminated", exit_code=0)
    assert pod_phase("Never", [done], [run(state="running")], False) == "Running"


def view(runs, **kw):
    defaults = dict(restart_policy="Never", init_runs=[], runs=runs, host_ip="127.0.0.1", pod_ip="127.0.0.1",
                    start_time=NOW, sandbox_ready=True)
    defaults.update(kw)
    return PodView(**defaults)


def conds(status):
    return {c["type"]: c for c in status["conditions"]}


def test_status_container_creating():
    s = build_pod_status(view([run()]), [], NOW)
    assert s["phase"] == "Pending"
    assert s["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert s["containerStatuses"][0]["image"] == "docker.io/img2img/runner:local"
    c = conds(s)
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "ContainersNotReady"
    assert c["Ready"]["message"] == "containers with unready status: [main]"
    assert c["Initialized"]["status"] == "True" and c["PodScheduled"]["status"] == "True"
    assert s["startTime"] == "2026-01-02T03:04:05Z" and s["hostIPs"] == [{"ip": "127.0.0.1"}]


def test_status_running_is_ready_and_keeps_transition_times():
    s1 = build_pod_status(view([run()]), [], NOW)
    s2 = build_pod_status(view([run(state="running")]), s1["conditions"], NOW + dt.timedelta(seconds=5))
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
    s = build_pod_status(view([r], terminal=True), [], NOW)
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
    s = build_pod_status(view([r], terminal=True, phase_override="Failed", reason=DEADLINE_REASON,
                                message=DEADLINE_MESSAGE), [], NOW)
    assert (s["phase"], s["reason"], s["message"]) == ("Failed", "DeadlineExceeded",
                                                       "Pod was active on the node longer than the specified deadline")
    assert "DisruptionTarget" not in conds(s)
    msg = NODE_LOW_MESSAGE.format(resource="memory")
    s = build_pod_status(view([r], terminal=True, phase_override="Failed", reason="Evicted", message=msg,
                                disruption=msg), [], NOW)
    d = conds(s)["DisruptionTarget"]
    assert (d["status"], d["reason"], d["message"]) == ("True", "TerminationByKubelet",
                                                        "The node was low on resource: memory. ")
    assert s["reason"] == "Evicted"


def test_status_waiting_with_last_state_and_init_containers():
    r = run(reason="CrashLoopBackOff", last={"exitCode": 1, "reason": "Error"})
    r.restart_count = 2
    s = build_pod_status(view([r], restart_policy="Always", init_runs=[run("init", state="terminated", exit_code=0,
                                                                              reason="Completed")]), [], NOW)
    cs = s["containerStatuses"][0]
    assert cs["lastState"] == {"terminated": {"exitCode": 1, "reason": "Error"}} and cs["restartCount"] == 2
    assert s["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert s["phase"] == "Running"


def test_rejected_status():
    s = rejected_status("OutOfnvidia.com/gpu", "Pod was rejected: ...", "127.0.0.1", NOW)
    assert s["phase"] == "Failed" and "containerStatuses" not in s


def test_was_started():
    assert not was_started({"state": {"waiting": {"reason": "ContainerCreating"}}})
    assert was_started({"state": {"running": {}}})
    assert was_started({"state": {"waiting": {}}, "lastState": {"terminated": {"exitCode": 1}}})




# ---- kills --------------------------------------------------------------------------------------------------------
def doomed(grace=30, deadline=None, annotations=None, deleted=None):
    spec = {"terminationGracePeriodSeconds": grace}
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    meta = {"name": "p", "annotations": annotations or {}}
    if deleted is not None:
        meta["deletionTimestamp"] = "2026-01-02T03:04:05Z"
        meta["deletionGracePeriodSeconds"] = deleted
    return {"metadata": meta, "spec": spec}


def decide(pod, now=NOW, shutdown=False, removed=False):
    return kill_decision(pod, now, NOW, shutdown=shutdown, removed=removed, shutdown_grace=5)


def test_kill_decisions_and_their_grace():
    assert decide(doomed()) is None
    assert decide(doomed(), shutdown=True) == ("shutdown", 5.0)  # capped by shutdownGracePeriodSeconds
    assert decide(doomed(grace=2), shutdown=True) == ("shutdown", 2.0)
    assert decide(doomed(deleted=7), removed=True) == ("removed", 0.0)
    assert decide(doomed(deleted=7)) == ("delete", 7.0)  # the deletion's grace, not the spec's
    assert decide(doomed(annotations={"local.img2img.dev/evict": "true"})) == ("evict", 0.0)
    assert decide(doomed(annotations={"local.img2img.dev/evict": "false"})) is None
    assert decide(doomed(deadline=10), now=NOW + dt.timedelta(seconds=9)) is None
    assert decide(doomed(deadline=10), now=NOW + dt.timedelta(seconds=10)) == ("deadline", 30.0)


def test_kill_outcomes():
    deadline = kill_outcome("deadline", doomed())
    assert (deadline.reason, deadline.message, deadline.disruption, deadline.event_type) == (
        "DeadlineExceeded", "Pod was active on the node longer than the specified deadline", None, "Normal")
    evicted = kill_outcome("evict", doomed(annotations={"local.img2img.dev/evict": "ephemeral-storage"}))
    assert evicted.message == evicted.disruption == "The node was low on resource: ephemeral-storage. "
    assert kill_outcome("evict", doomed(annotations={"local.img2img.dev/evict": "yes"})).message == (
        "The node was low on resource: memory. ")
    shutdown = kill_outcome("shutdown", doomed())
    assert (shutdown.reason, shutdown.disruption, shutdown.event_type) == (
        "Terminated", "Pod was terminated in response to imminent node shutdown.", None)
    assert kill_outcome("delete", doomed()) is None  # the containers' exits decide the phase


# ---- after an executor restart ------------------------------------------------------------------------------------
def api_status(state, restarts=0, last=None):
    return {"containerStatuses": [{"name": "main", "state": state, "restartCount": restarts,
                                   "containerID": "containerd://abc", "lastState": last or {}}]}


def test_a_running_container_lost_with_the_executor_is_unknown_under_restart_policy_never():
    runs = [run()]
    assert recover_runs(runs, api_status({"running": {"startedAt": "2026-01-02T03:04:05Z"}}), "Never")
    r = runs[0]
    assert (r.state, r.reason, r.exit_code, r.restart_count) == ("terminated", "ContainerStatusUnknown", 137, 1)
    assert r.message == "The container could not be located when the pod was terminated"
    status = build_pod_status(view(runs), [], NOW)
    assert status["phase"] == "Failed"


def test_a_running_container_lost_with_the_executor_restarts_under_on_failure():
    runs = [run()]
    assert recover_runs(runs, api_status({"running": {}}, restarts=2), "OnFailure")
    r = runs[0]
    assert (r.state, r.restart_count, r.container_id) == ("waiting", 3, "containerd://abc")
    assert r.last_state["reason"] == "ContainerStatusUnknown" and r.last_state["exitCode"] == 137


def test_a_finished_container_keeps_its_state_and_nothing_started_changes_nothing():
    runs = [run()]
    finished = {"terminated": {"exitCode": 3, "reason": "Error", "message": "m",
                               "startedAt": "2026-01-02T03:04:05Z", "finishedAt": "2026-01-02T03:04:08Z"}}
    assert recover_runs(runs, api_status(finished), "Never")
    r = runs[0]
    assert (r.state, r.exit_code, r.message, r.finished_at) == ("terminated", 3, "m", NOW + dt.timedelta(seconds=3))
    untouched = [run()]
    assert not recover_runs(untouched, api_status({"waiting": {"reason": "ContainerCreating"}}), "Never")
    assert untouched[0] == run()


def test_containers_not_terminated_when_the_pod_is_killed_are_unknown():
    runs = [run(state="terminated", exit_code=143, reason="Error"), run("b")]
    mark_unknown(runs)
    assert (runs[0].reason, runs[0].exit_code) == ("Error", 143)
    assert (runs[1].state, runs[1].reason, runs[1].exit_code) == ("terminated", "ContainerStatusUnknown", 137)
