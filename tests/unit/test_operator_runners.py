"""runners: a runner's state from its pod and its takes (starting, idle, busy, gone) and why it does not run."""

from __future__ import annotations

from img2img_operator.runners import Registry, overdue_start, runner_view, why_ended

from operator_samples import SEC, T0, runner_pod, terminated, waiting

WAIT_MS = 25 * SEC


def test_a_runner_is_starting_until_it_asks_for_work_then_idle_then_busy():
    registry = Registry()
    pod = runner_pod("l4-aaaaa", "Running", created=T0)
    assert runner_view(pod, registry.get("l4-aaaaa"), False, T0 + SEC, WAIT_MS).state == "starting"
    seen = registry.taking("l4-aaaaa", ["sd_xl_base_1.0"], T0 + 2 * SEC)
    idle = runner_view(pod, seen, False, T0 + 3 * SEC, WAIT_MS)
    assert (idle.state, idle.idle_since_ms) == ("idle", T0 + 2 * SEC)
    registry.took("l4-aaaaa", T0 + 27 * SEC, assigned=False)  # its long poll ended empty: it asks again
    assert runner_view(pod, seen, False, T0 + 30 * SEC, WAIT_MS).idle_since_ms == T0 + 2 * SEC
    assert runner_view(pod, seen, True, T0 + 30 * SEC, WAIT_MS).state == "busy"
    # silent longer than a take's wait and a little: not idle any more
    assert runner_view(pod, seen, False, T0 + 27 * SEC + WAIT_MS + 6 * SEC, WAIT_MS).state == "starting"


def test_a_runner_idle_again_after_a_job_counts_its_idle_time_from_then():
    registry = Registry()
    registry.taking("r", [], T0)
    registry.took("r", T0 + SEC, assigned=True)
    assert runner_view(runner_pod("r"), registry.get("r"), False, T0 + 2 * SEC, WAIT_MS).state == "starting"
    seen = registry.taking("r", [], T0 + 60 * SEC)
    assert runner_view(runner_pod("r"), seen, False, T0 + 61 * SEC, WAIT_MS).idle_since_ms == T0 + 60 * SEC


def test_ended_or_deleted_pods_are_no_runners():
    assert runner_view(runner_pod(phase="Failed"), None, False, T0, WAIT_MS) is None
    assert runner_view(runner_pod(phase="Succeeded"), None, False, T0, WAIT_MS) is None
    assert runner_view(runner_pod(deleted=T0), None, False, T0, WAIT_MS) is None


def test_why_a_runner_does_not_run_yet():
    pulling = runner_pod(phase="Pending", container=waiting("ImagePullBackOff", "pull access denied"))
    view = runner_view(pulling, None, False, T0, WAIT_MS)
    assert (view.state, view.waiting_reason, view.waiting_message) == ("starting", "ImagePullBackOff",
                                                                       "pull access denied")
    unschedulable = runner_pod(phase="Pending", conditions=[{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}])
    view = runner_view(unschedulable, None, False, T0, WAIT_MS)
    assert view.waiting_reason == "Unschedulable" and "Insufficient nvidia.com/gpu" in view.waiting_message
    assert runner_view(runner_pod(phase="Pending"), None, False, T0, WAIT_MS).waiting_reason is None


def test_why_a_runner_ended():
    crashed = runner_pod(phase="Failed", container=terminated(3, "Traceback …\nModelError: unknown model 'x'\n"))
    assert why_ended(crashed) == "exit code 3: Traceback … ModelError: unknown model 'x'"
    killed = runner_pod(phase="Failed", container=terminated(137, reason="OOMKilled"))
    assert why_ended(killed) == "exit code 137 (OOMKilled)"
    evicted = runner_pod(phase="Failed", reason="Evicted", message="The node was low on resource: memory.")
    assert why_ended(evicted) == "Evicted: The node was low on resource: memory."


def test_a_runner_pod_not_running_max_pending_seconds_after_its_creation_is_overdue_saying_why():
    pulling = runner_pod("l4-aaaaa", "Pending", created=T0, container=waiting("ImagePullBackOff", "back-off pulling"))
    assert overdue_start(pulling, None, T0 + 899 * SEC, 900) is None
    assert overdue_start(pulling, None, T0 + 900 * SEC, 900) == (
        "removed: still Pending 900 s after its creation (runners.maxPendingSeconds: 900): ImagePullBackOff: "
        "back-off pulling")
    node_lost = runner_pod("l4-bbbbb", "Unknown", created=T0, reason="NodeLost")
    assert overdue_start(node_lost, None, T0 + 901 * SEC, 900).endswith("still Unknown 901 s after its creation "
                                                                         "(runners.maxPendingSeconds: 900): NodeLost")


def test_a_runner_that_runs_asked_for_work_or_has_no_limit_is_never_overdue():
    late = T0 + 3600 * SEC
    assert overdue_start(runner_pod("r", "Running", created=T0), None, late, 900) is None  # loading its models
    seen = Registry().taking("r", [], T0 + SEC)
    assert overdue_start(runner_pod("r", "Unknown", created=T0), seen, late, 900) is None  # its lease covers it
    assert overdue_start(runner_pod("r", "Pending", created=T0), None, late, None) is None
