"""pool_scaling: pools' effective sizing, how many runners to create or remove, and the RunnerPool's status."""

from __future__ import annotations

import pytest
from img2img.api.pool import RunnerPool
from img2img_operator.config import parse_config
from img2img_operator.pool_scaling import (
    Pool,
    PoolProblem,
    Runner,
    ScalePlan,
    all_pools,
    implicit_pool,
    plan_scale,
    pool_of,
    pool_status,
    queue_shares,
    status_write_at,
)

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SEC = 1000
CONFIG = parse_config({"s3": {"bucket": "b"}, "defaultGpuClass": "l4",
                       "gpuClasses": {"l4": {"maxConcurrent": 2}, "a100": {}}})


def resource(name: str, uid: str = "uid-1", **spec) -> RunnerPool:
    return RunnerPool.model_validate({"apiVersion": "img2img.dev/v1alpha1", "kind": "RunnerPool",
                                      "metadata": {"name": name, "uid": uid}, "spec": {"gpuClass": "l4", **spec}})


def pool(min_ready=0, buffer=0, max_runners=10, idle_seconds=60, models=()) -> Pool:
    return Pool(name="sdxl", gpu_class="l4", models=tuple(models), min_ready=min_ready, buffer=buffer,
                max_runners=max_runners, idle_seconds=idle_seconds)


def idle(name: str, idle_for_s: float) -> Runner:
    return Runner(name, "idle", created_ms=NOW - 3600 * SEC, idle_since_ms=NOW - int(idle_for_s * SEC))


def busy(name: str) -> Runner:
    return Runner(name, "busy", created_ms=NOW - 3600 * SEC)


def starting(name: str, reason: str | None = None, message: str = "") -> Runner:
    return Runner(name, "starting", created_ms=NOW - 5 * SEC, waiting_reason=reason, waiting_message=message)


# ---- pools --------------------------------------------------------------------------------------------------------
def test_a_pool_without_a_ceiling_takes_its_gpu_classs_max_concurrent():
    shaped = pool_of(resource("sdxl", models=["sd_xl_base_1.0"], minReady=1, buffer=1, idleSeconds=120), CONFIG)
    assert shaped == Pool(name="sdxl", gpu_class="l4", models=("sd_xl_base_1.0",), min_ready=1, buffer=1,
                          max_runners=2, idle_seconds=120, uid="uid-1")
    assert pool_of(resource("big", gpuClass="a100"), CONFIG).max_runners == 8  # no maxConcurrent: implicitPool's
    assert pool_of(resource("capped", maxRunners=5), CONFIG).max_runners == 5
    assert pool_of(resource("lazy"), CONFIG).idle_seconds == 300  # the RunnerPool's own default


def test_a_pool_of_an_unknown_gpu_class_is_a_problem_naming_the_field():
    with pytest.raises(PoolProblem, match=r"spec.gpuClass: 'h100' is not one of the operator's GPU classes "
                                          r"\(a100, l4\)"):
        pool_of(resource("fast", gpuClass="h100"), CONFIG)


def test_the_implicit_pool_scales_from_zero_up_to_the_classs_limit():
    assert implicit_pool("l4", CONFIG) == Pool(name="l4", gpu_class="l4", models=(), min_ready=0, buffer=0,
                                               max_runners=2, idle_seconds=60, implicit=True)
    tuned = parse_config({"s3": {"bucket": "b"}, "gpuClasses": {"a100": {}},
                          "runners": {"implicitPool": {"idleSeconds": 5, "maxRunners": 3}}})
    assert (implicit_pool("a100", tuned).max_runners, implicit_pool("a100", tuned).idle_seconds) == (3, 5)


def test_every_class_is_served_by_its_pools_or_its_implicit_pool():
    pools, problems = all_pools([resource("sdxl"), resource("fast", uid="uid-2", gpuClass="h100")], CONFIG)
    assert [(p.name, p.gpu_class, p.implicit) for p in pools] == [("sdxl", "l4", False), ("a100", "a100", True)]
    assert list(problems) == ["fast"] and problems["fast"].startswith("spec.gpuClass: 'h100'")


def test_a_runner_pool_named_after_another_class_keeps_its_name():
    pools, _ = all_pools([resource("a100")], CONFIG)  # a pool of class l4 named "a100"
    assert [(p.name, p.gpu_class) for p in pools] == [("a100", "l4"), ("a100-implicit", "a100")]


def test_waiting_jobs_go_to_a_pool_that_preloads_their_models_while_it_has_room():
    sdxl = Pool("sdxl", "l4", ("sd_xl_base_1.0", "sdxl_vae.safetensors"), 0, 0, 2, 60)
    general = Pool("general", "l4", (), 0, 0, 4, 60)
    xl, sd15 = frozenset({"sd_xl_base_1.0", "sdxl_vae"}), frozenset({"v1-5-pruned-emaonly"})
    # sdxl has room for one more (2 − 1 busy): the first SDXL job; everything else goes to general
    assert queue_shares([xl, sd15, xl, xl], [sdxl, general], {"sdxl": 1}) == {"sdxl": 1, "general": 3}
    # a job no pool preloads goes where new runners preload the least, even when a fuller pool comes first
    assert queue_shares([sd15, xl], [sdxl, general], {}) == {"sdxl": 1, "general": 1}
    assert queue_shares([sd15, sd15], [sdxl, general], {"general": 4}) == {"sdxl": 2, "general": 0}


def test_waiting_jobs_beyond_every_pools_room_stay_with_the_first_pool():
    full = Pool("sdxl", "l4", (), 0, 0, 1, 60)
    assert queue_shares([frozenset(), frozenset()], [full], {"sdxl": 1}) == {"sdxl": 2}
    assert queue_shares([frozenset()], [], {}) == {}


# ---- scaling ------------------------------------------------------------------------------------------------------
def test_scale_from_zero_up_to_the_ceiling():
    assert plan_scale(pool(max_runners=2), [], queued=3, now_ms=NOW) == ScalePlan(2, (), None)
    assert plan_scale(pool(max_runners=2), [], queued=1, now_ms=NOW) == ScalePlan(1, (), None)
    assert plan_scale(pool(), [], queued=0, now_ms=NOW) == ScalePlan(0, (), None)


def test_the_warm_floor_is_kept_with_nothing_queued():
    assert plan_scale(pool(min_ready=2), [], queued=0, now_ms=NOW) == ScalePlan(2, (), None)
    assert plan_scale(pool(min_ready=2), [idle("a", 1)], queued=0, now_ms=NOW) == ScalePlan(1, (), None)


def test_buffer_keeps_idle_runners_above_demand():
    runners = [busy("a"), busy("b"), idle("c", 5)]
    # desired = busy 2 + queued 1 + buffer 2 = 5; there are 3
    assert plan_scale(pool(min_ready=1, buffer=2), runners, queued=1, now_ms=NOW) == ScalePlan(2, (), None)


def test_starting_runners_count_so_nothing_is_created_twice():
    runners = [busy("a"), busy("b"), idle("c", 5), starting("d"), starting("e")]
    assert plan_scale(pool(min_ready=1, buffer=2), runners, queued=1, now_ms=NOW) == ScalePlan(0, (), None)


def test_the_ceiling_wins_over_the_floor():
    assert plan_scale(pool(min_ready=3, max_runners=2), [], queued=0, now_ms=NOW) == ScalePlan(2, (), None)


def test_idle_runners_past_idle_seconds_go_longest_idle_first_and_the_next_expiry_is_a_wake_up():
    runners = [idle("b", 70), busy("d"), idle("a", 100), idle("c", 10)]
    # desired = max(busy 1 + 0 + 0, minReady 1) = 1; a and b are past 60 s, c is not (it expires in 50 s)
    assert plan_scale(pool(min_ready=1), runners, queued=0, now_ms=NOW) == ScalePlan(0, ("a", "b"), NOW + 50 * SEC)


def test_an_idle_runner_expires_at_exactly_idle_seconds():
    assert plan_scale(pool(), [idle("a", 60)], queued=0, now_ms=NOW) == ScalePlan(0, ("a",), None)
    assert plan_scale(pool(), [idle("a", 59)], queued=0, now_ms=NOW) == ScalePlan(0, (), NOW + 1 * SEC)


def test_never_below_min_ready():
    two = [idle("a", 900), idle("b", 600)]
    assert plan_scale(pool(min_ready=2), two, queued=0, now_ms=NOW) == ScalePlan(0, (), None)
    three = [idle("a", 900), idle("b", 600), idle("c", 300)]
    assert plan_scale(pool(min_ready=2), three, queued=0, now_ms=NOW) == ScalePlan(0, ("a",), None)


def test_starting_runners_do_not_stand_in_for_the_warm_floor():
    # one ready runner, long idle, and one starting: the ready one stays until the other is ready too
    runners = [idle("a", 900), starting("b")]
    assert plan_scale(pool(min_ready=1), runners, queued=0, now_ms=NOW) == ScalePlan(0, (), None)


def test_busy_runners_are_never_removed():
    runners = [busy("a"), busy("b")]
    assert plan_scale(pool(idle_seconds=0), runners, queued=0, now_ms=NOW) == ScalePlan(0, (), None)


def test_idle_runners_wanted_for_the_queue_stay():
    runners = [idle("a", 900), idle("b", 900)]
    assert plan_scale(pool(), runners, queued=2, now_ms=NOW) == ScalePlan(0, (), None)
    assert plan_scale(pool(), runners, queued=1, now_ms=NOW) == ScalePlan(0, ("a",), None)


def test_idle_seconds_zero_removes_surplus_at_once():
    runners = [idle("a", 0), busy("b")]
    assert plan_scale(pool(idle_seconds=0), runners, queued=0, now_ms=NOW) == ScalePlan(0, ("a",), None)


# ---- status -------------------------------------------------------------------------------------------------------
def conditions_by_type(status: dict) -> dict:
    return {c["type"]: c for c in status["conditions"]}


def test_counts_and_a_ready_pool():
    runners = [busy("a"), idle("b", 5), idle("c", 5), starting("d")]
    status = pool_status(pool(min_ready=2), runners, queued=3, now_ms=NOW, generation=4)
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "readyRunners": 3, "busyRunners": 1, "startingRunners": 1, "queuedJobs": 3, "observedGeneration": 4}
    ready, stalled = conditions_by_type(status)["Ready"], conditions_by_type(status)["Stalled"]
    assert ready == {"type": "Ready", "status": "True", "reason": "MinReady",
                     "message": "3 runners ready (minReady 2)", "lastTransitionTime": "2026-01-01T00:00:00Z",
                     "observedGeneration": 4}
    assert (stalled["status"], stalled["reason"], stalled["message"]) == ("False", "AsExpected", "")


def test_a_pool_whose_runners_cannot_pull_their_image_is_stalled_with_the_reason():
    runners = [starting("sdxl-b2", "ImagePullBackOff", 'Back-off pulling image "runner:typo"'),
               starting("sdxl-a1", "Unschedulable", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
               starting("sdxl-c3", "ContainerCreating")]
    status = pool_status(pool(min_ready=1), runners, queued=0, now_ms=NOW)
    ready, stalled = conditions_by_type(status)["Ready"], conditions_by_type(status)["Stalled"]
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "Stalled", "0 runners ready (minReady 1)")
    assert (stalled["status"], stalled["reason"]) == ("True", "Unschedulable")
    assert stalled["message"] == ("runner sdxl-a1: Unschedulable: 0/3 nodes are available: 3 Insufficient "
                                  "nvidia.com/gpu.; runner sdxl-b2: ImagePullBackOff: Back-off pulling image "
                                  '"runner:typo"')
    assert "observedGeneration" not in status


def test_runners_still_starting_normally_are_not_a_stall():
    status = pool_status(pool(min_ready=1), [starting("a", "ContainerCreating")], queued=2, now_ms=NOW)
    ready, stalled = conditions_by_type(status)["Ready"], conditions_by_type(status)["Stalled"]
    assert (ready["status"], ready["reason"]) == ("False", "Starting")
    assert stalled["status"] == "False"


def test_runners_that_end_before_asking_for_work_stall_a_pool_with_none_ready():
    failures = [("sdxl-x1", "Error: exit code 3 (model not in the catalog)")]
    status = pool_status(pool(min_ready=1), [starting("sdxl-x2")], queued=1, now_ms=NOW,
                         failed_before_take=failures)
    stalled = conditions_by_type(status)["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("True", "RunnerFailedBeforeTake")
    assert stalled["message"] == ("runner sdxl-x1 ended before it asked for work: Error: exit code 3 (model not "
                                  "in the catalog)")
    recovered = pool_status(pool(min_ready=1), [idle("sdxl-x2", 1)], queued=0, now_ms=NOW,
                            failed_before_take=failures)
    assert conditions_by_type(recovered)["Stalled"]["status"] == "False"


def test_a_condition_keeps_its_transition_time_while_its_status_holds():
    earlier = [{"type": "Ready", "status": "True", "reason": "MinReady", "lastTransitionTime": "2025-12-31T23:00:00Z"},
               {"type": "Stalled", "status": "False", "reason": "AsExpected",
                "lastTransitionTime": "2025-12-31T23:00:00Z"}]
    runners = [idle("a", 5), starting("b", "ImagePullBackOff")]
    status = pool_status(pool(min_ready=1), runners, queued=0, now_ms=NOW + 1500, previous_conditions=earlier)
    ready, stalled = conditions_by_type(status)["Ready"], conditions_by_type(status)["Stalled"]
    assert ready["lastTransitionTime"] == "2025-12-31T23:00:00Z"  # still True
    assert stalled["lastTransitionTime"] == "2026-01-01T00:00:01Z"  # became True now (whole seconds)


def test_a_pools_status_is_written_at_most_once_a_second_and_not_at_all_when_unchanged():
    busy = {"readyRunners": 8, "busyRunners": 8}
    idle = {"readyRunners": 8, "busyRunners": 3}
    assert status_write_at(busy, busy, None, 5_000) is None  # stored already
    assert status_write_at(busy, {}, None, 5_000) == 5_000  # never written by this process: now
    assert status_write_at(idle, busy, 4_800, 5_000) == 5_800  # written 200 ms ago: in 800 ms
    assert status_write_at(idle, busy, 3_000, 5_000) == 5_000  # written 2 s ago: now
