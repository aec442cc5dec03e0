"""The figures bench/warm_pool.py makes from what it measured (the stack runs are `make bench`'s, not tests')."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import warm_pool  # noqa: E402


def record(status: str, delay: int, load: int | None = 0, runner: str = "tiny-sdxl-a1b2c") -> dict:
    return {"status": status, "seconds": delay / 1000 + 0.3, "delayTime": delay, "modelLoadTime": load,
            "executionTime": 250, "runnerPod": runner}


def burst(completed: int, operator_cpu_s: float, pod_creates_per_job: float = 0.0) -> dict:
    writes = {"POST img2imgjobs": 1.0, **({"POST pods": pod_creates_per_job} if pod_creates_per_job else {})}
    return {"completed": completed, "jobs_per_s": 20.0, "cpu_seconds": {"operator": operator_cpu_s, "etcd": 9.0},
            "writes_by_request": writes}


def test_sequential_delays_are_the_completed_jobs_only():
    jobs = [record("COMPLETED", 80), record("COMPLETED", 120), record("FAILED", 9000), record("COMPLETED", 100)]

    figures = warm_pool.sequential_figures(jobs)

    assert (figures["jobs"], figures["completed"]) == (4, 3)
    assert figures["delay_ms"]["p50"] == 100 and figures["delay_ms"]["max"] == 120
    assert figures["runners"] == 1


def test_sequential_model_load_time_missing_counts_as_none_loaded():
    figures = warm_pool.sequential_figures([record("COMPLETED", 90, load=None), record("COMPLETED", 90, load=400)])

    assert figures["model_load_ms"]["min"] == 0 and figures["model_load_ms"]["max"] == 400


def test_operator_cpu_per_job_is_its_own_cpu_over_the_completed_jobs():
    figures = warm_pool.throughput_figures(burst(completed=200, operator_cpu_s=5.0), ["r1"] * 200)

    assert figures["operator_cpu_ms_per_job"] == pytest.approx(25.0)  # 5 s over 200 jobs; etcd's CPU is not its


def test_a_runner_per_job_shows_as_every_job_on_a_fresh_runner():
    fresh = warm_pool.throughput_figures(burst(4, 1.0, pod_creates_per_job=1.0), ["c-1", "c-2", "c-3", "c-4"])
    reused = warm_pool.throughput_figures(burst(4, 1.0), ["w-1", "w-2", "w-1", "w-1"])

    assert (fresh["runners"], fresh["max_jobs_per_runner"], fresh["first_job_share"]) == (4, 1, 1.0)
    assert fresh["pods_created_per_job"] == 1.0
    assert (reused["runners"], reused["max_jobs_per_runner"], reused["first_job_share"]) == (2, 3, 0.5)
    assert reused["pods_created_per_job"] == 0.0


def test_a_burst_with_nothing_completed_has_no_cpu_per_job():
    figures = warm_pool.throughput_figures(burst(0, 1.0), [])

    assert math.isnan(figures["operator_cpu_ms_per_job"]) and math.isnan(figures["first_job_share"])


def test_verdicts_give_the_warm_delay_targets_and_the_warm_to_cold_ratio():
    results = {
        "parameters": {"runners": 8},
        "sequential": {"warm": warm_pool.sequential_figures([record("COMPLETED", d) for d in (60, 80, 100, 700)])},
        "throughput": {"warm": {"jobs_per_s": 36.0}, "cold": {"jobs_per_s": 9.0}},
    }

    found = {what: (measured, target, higher) for what, measured, target, _, higher in warm_pool.verdicts(results)}

    p50 = next(v for k, v in found.items() if "p50" in k)
    assert p50 == (90.0, 150.0, False)
    ratio = next(v for k, v in found.items() if "warm / cold" in k)
    assert ratio == (4.0, 3.0, True)
    assert any("8 warm no-op runners" in k and v[0] == 36.0 for k, v in found.items())


def test_verdicts_leave_out_what_was_not_measured():
    results = {"parameters": {"runners": 8}, "throughput": {"warm": {"jobs_per_s": 36.0}, "cold": {"jobs_per_s": 0.0}}}

    whats = [v[0] for v in warm_pool.verdicts(results)]

    assert len(whats) == 1 and "warm no-op runners" in whats[0]
