"""Warm runner pools against cold starts on the embedded stack, side by side in one run (issue 11).

1. The real runner on the tiny models. Jobs one after the other, each submitted once the previous one is COMPLETED:
   on the pool `tiny-sdxl` with one warm runner (what `img2img local up` starts), and on a pool of the same models
   scaled from zero (`tiny-sdxl-cold`: minReady 0, idleSeconds 0, in a GPU class of its own), each cold job
   submitted once the previous cold runner is gone. Interleaved: a cold job, then `--warm-jobs / --cold-jobs` warm
   ones, so that both see the same machine. Figures from each job's status: `delayTime` (submission -> the runner
   starts the job), `modelLoadTime`, `executionTime`; and the benchmark's submission -> COMPLETED (its watch).
2. No-op runners (`bench/noop-image/bin/img2img-runner serve`: the real protocol, no model work). A burst of jobs on
   N warm runners (a RunnerPool with minReady = maxRunners = N), then the same burst on the cold path: the implicit
   pool of a GPU class of its own, scaled from zero with idleSeconds 0 and no ceiling below the burst, its runners
   serving one job each (`IMG2IMG_NOOP_JOBS=1`: a runner exits once its job is done), so that each job starts a
   fresh runner pod and the pod goes when its job is done. That is what stands for the pod-per-job path, which is
   gone (every job runs on a runner of a pool); without the one-job limit a runner that is up early takes several
   jobs of the burst while the others start. The operator is restarted for each burst (the runners' environment is
   its configuration). Figures: jobs/s, runner pods created per job, how the jobs spread over runners, and the
   operator's CPU ms per job (utime + stime from /proc/<pid>/stat before and after each burst,
   `operator_scale.cpu_seconds`).

Prints figures; asserts nothing about timing. `--json FILE` writes every figure for `run_all.py`.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import kubeapi  # noqa: E402
import machine  # noqa: E402
import operator_scale as scale  # noqa: E402
from stats import fmt, publish, stack_run_arguments, summary  # noqa: E402

from img2img.kube import Kube, connect, job_path  # noqa: E402
from img2img.local.bootstrap import TINY_POOL, TINY_POOL_MODELS, pool_manifest  # noqa: E402
from img2img.local.stack import StackInfo  # noqa: E402
from img2img.local.supervisor import wait_until  # noqa: E402

COLD_POOL = f"{TINY_POOL}-cold"
COLD_CLASS = "cold"  # the GPU class of the pools scaled from zero (the tiny models' cold pool; the no-op cold path)
WARM_CLASS = "warm"  # the GPU class of the no-op warm pool
NOOP_WARM_POOL = "noop-warm"
JOB_SECONDS = 300.0  # one sequential job, cold start included, on a loaded machine

TARGETS = {
    "warm_delay_p50_ms": 150.0,  # <= delayTime of a job on a warm runner
    "warm_delay_p99_ms": 500.0,  # <=
    "warm_jobs_per_s": 30.0,  # >= N warm no-op runners, a burst
    "warm_over_cold": 3.0,  # >= jobs/s warm / jobs/s on the cold path
}


def log(msg: str) -> None:
    print(f"[warm_pool {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def light_input() -> dict:
    """A quick job on the tiny models (SDXL base, 64x64, 2 steps): the delay does not depend on the job's size."""
    return {"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"},
            "payload": {"init_images": [scale.tiny_png_b64()], "prompt": "a red circle", "steps": 2, "width": 64,
                        "height": 64, "denoising_strength": 0.5, "seed": 1,
                        "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0"}}}


# ---- figures (pure) -----------------------------------------------------------------------------------------------
def sequential_figures(jobs: list[dict]) -> dict:
    """Summaries of sequential jobs' records ({status, seconds, delayTime, modelLoadTime, executionTime}): the
    COMPLETED ones only."""
    ok = [j for j in jobs if j["status"] == "COMPLETED"]
    return {
        "jobs": len(jobs),
        "completed": len(ok),
        "delay_ms": summary(j["delayTime"] for j in ok),
        "model_load_ms": summary(j["modelLoadTime"] or 0 for j in ok),
        "execution_ms": summary(j["executionTime"] for j in ok),
        "submit_to_done_ms": summary(j["seconds"] * 1000 for j in ok),
        "runners": len({j["runnerPod"] for j in ok}),
    }


def throughput_figures(phase: dict, runner_of_job: list[str]) -> dict:
    """From a burst (`operator_scale.run_phase`) and the runner of each COMPLETED job (`status.runnerPod`): jobs/s,
    the operator's CPU ms per COMPLETED job, runner pods created per job submitted, and how the jobs spread over
    runners (`first_job_share`: the share of jobs that were their runner's first, 1.0 when every job started a
    fresh runner)."""
    done = phase["completed"]
    per_runner = Counter(runner_of_job)
    return {
        "jobs_per_s": phase["jobs_per_s"],
        "operator_cpu_ms_per_job": phase["cpu_seconds"].get("operator", 0.0) * 1000 / done if done else math.nan,
        "pods_created_per_job": phase["writes_by_request"].get("POST pods", 0.0),
        "runners": len(per_runner),
        "max_jobs_per_runner": max(per_runner.values(), default=0),
        "first_job_share": len(per_runner) / len(runner_of_job) if runner_of_job else math.nan,
    }


def verdicts(results: dict) -> list[tuple[str, float, float, str, bool]]:
    """(what, measured, target, unit, higher is better) for every target there is a figure for."""
    out = []
    warm = (results.get("sequential") or {}).get("warm")
    if warm and warm["completed"]:
        out.append(("delayTime on a warm runner, p50 (real runner, tiny models)", warm["delay_ms"]["p50"],
                    TARGETS["warm_delay_p50_ms"], "ms", False))
        out.append(("delayTime on a warm runner, p99 (real runner, tiny models)", warm["delay_ms"]["p99"],
                    TARGETS["warm_delay_p99_ms"], "ms", False))
    burst = results.get("throughput") or {}
    if "warm" in burst:
        n = results["parameters"]["runners"]
        out.append((f"jobs/s on {n} warm no-op runners (burst)", burst["warm"]["jobs_per_s"],
                    TARGETS["warm_jobs_per_s"], "jobs/s", True))
    if "warm" in burst and "cold" in burst and burst["cold"]["jobs_per_s"]:
        out.append(("jobs/s warm / cold path (a fresh runner per job)",
                    burst["warm"]["jobs_per_s"] / burst["cold"]["jobs_per_s"], TARGETS["warm_over_cold"], "×", True))
    return out


# ---- 1. sequential jobs on the real runner --------------------------------------------------------------------------
def run_one(kube: Kube, tracker: scale.Tracker, workload: scale.Workload, namespace: str, name: str) -> dict:
    """Submit one job and wait for its end; its record."""
    path = workload.collection(namespace)
    tracker.submitted[name] = time.monotonic()
    kube.request("POST", path, body=workload.manifest(namespace, name))
    with tracker.cond:
        if not tracker.cond.wait_for(lambda: name in tracker.finished, timeout=JOB_SECONDS):
            raise RuntimeError(f"job {namespace}/{name} did not finish within {JOB_SECONDS:.0f} s")
    status = kube.request("GET", job_path(namespace, name)).get("status") or {}
    record = {"name": name, "seconds": tracker.finished[name][0] - tracker.submitted[name],
              **{k: status.get(k) for k in ("status", "delayTime", "modelLoadTime", "executionTime", "runnerPod")}}
    log(f"{name}: {record['status']}, delayTime {record['delayTime']} ms, modelLoadTime {record['modelLoadTime']} "
        f"ms, on {record['runnerPod']}")
    return record


def sequential(kube: Kube, stack: scale.BenchStack, info: StackInfo, args: argparse.Namespace) -> dict:
    """Warm and cold jobs one after the other on the real runner, interleaved."""
    scale.start_pool(stack, info, TINY_POOL, "local", 1, tuple(TINY_POOL_MODELS))  # at most one: never a second
    info.kubectl("apply", "--server-side", "-f", "-",
                 input=pool_manifest(COLD_POOL, COLD_CLASS, TINY_POOL_MODELS, min_ready=0, maxRunners=1,
                                     idleSeconds=0))
    namespace = "bench-sequential"
    job_input = light_input()
    warm, cold = scale.operator_workload(job_input), scale.operator_workload(job_input, gpu_class=COLD_CLASS)
    scale.create_namespace(kube, info, namespace, warm)
    tracker = scale.Tracker(warm)  # only the outcome is read: the same for both workloads
    path = warm.collection(namespace)
    watch = kubeapi.Follow(kube, path, kubeapi.version_now(kube, path), tracker.on_job)
    records: dict[str, list[dict]] = {"warm": [], "cold": []}
    per_cold = max(1, args.warm_jobs // max(1, args.cold_jobs))
    try:
        while len(records["warm"]) < args.warm_jobs or len(records["cold"]) < args.cold_jobs:
            if len(records["cold"]) < args.cold_jobs:
                wait_gone(kube, stack, COLD_POOL)
                records["cold"].append(run_one(kube, tracker, cold, namespace, f"cold-{len(records['cold']):03d}"))
                wait_gone(kube, stack, COLD_POOL)  # its runner goes (idleSeconds 0) before the warm jobs run
            for _ in range(min(per_cold, args.warm_jobs - len(records["warm"]))):
                records["warm"].append(run_one(kube, tracker, warm, namespace, f"warm-{len(records['warm']):03d}"))
    finally:
        watch.stop()
    return {"jobs": records, "warm": sequential_figures(records["warm"]), "cold": sequential_figures(records["cold"])}


def wait_gone(kube: Kube, stack: scale.BenchStack, pool: str) -> None:
    wait_until(f"no runner in pool {pool}", lambda: not scale.runner_pods(kube, pool), JOB_SECONDS,
                     stack.logs / "operator.log")


# ---- 2. a burst on warm no-op runners and on the cold path --------------------------------------------------------
def cold_path_overrides(limit: int) -> dict:
    """The operator for the cold path: an implicit pool from zero whose no-op runners serve one job and go."""
    overrides = scale.operator_overrides(limit, classes=(COLD_CLASS,))
    overrides["runner"]["env"] = {"IMG2IMG_NOOP_JOBS": "1"}
    overrides["runners"] = {"implicitPool": {"idleSeconds": 0}}
    return overrides


def throughput(kube: Kube, stack: scale.BenchStack, info: StackInfo, args: argparse.Namespace,
               limit: int) -> dict:
    """A burst on the warm pool of no-op runners, then the same on the cold path, the operator restarted for each."""
    for pool in (TINY_POOL, COLD_POOL):
        scale.remove_pool(kube, stack, info, pool)
    job_input = scale.seed_input()
    out: dict[str, Any] = {"phases": {}}
    paths = [("warm", WARM_CLASS, scale.operator_overrides(limit, classes=(WARM_CLASS,)))]
    if not args.skip_cold:
        paths.append(("cold", COLD_CLASS, cold_path_overrides(limit)))
    for key, gpu_class, overrides in paths:
        stack.stop("operator")
        stack.start_operator(info, overrides)
        if key == "warm":
            log(f"pool {NOOP_WARM_POOL}: {args.runners} no-op runners")
            scale.start_pool(stack, info, NOOP_WARM_POOL, WARM_CLASS, args.runners, scale.models_of(job_input))
        workload = scale.operator_workload(job_input, gpu_class=gpu_class)
        namespace = f"bench-{key}-burst"
        scale.create_namespace(kube, info, namespace, workload)
        phase = scale.run_phase(kube, stack, workload, namespace, args.jobs, rate=None, workers=args.workers,
                                timeout=60 + args.jobs, limit=limit)
        jobs, _ = kube.list(workload.collection(namespace))
        done = [j for j in jobs if workload.outcome(j) == "COMPLETED"]
        out["phases"][key] = phase
        out[key] = throughput_figures(phase, [j["status"].get("runnerPod") or "?" for j in done])
        if key == "warm":
            scale.remove_pool(kube, stack, info, NOOP_WARM_POOL)
    return out


def run(args: argparse.Namespace) -> dict:
    """Both parts on one stack, brought up here and always taken down."""
    state_dir = Path(args.state_dir) if args.state_dir else Path(tempfile.mkdtemp(prefix="img2img-bench-"))
    limit = args.jobs * 10  # the GPU classes' maxConcurrent and the node's GPUs: the cold path has no ceiling
    cold_class = {"gpuClasses": {COLD_CLASS: {"resources": {"nvidia.com/gpu": 1}, "maxConcurrent": limit}}}
    stack = scale.BenchStack(state_dir=state_dir, with_operator=True, with_models=True, with_gateway=False,
                             gpus=limit, operator_overrides=cold_class)
    results: dict[str, Any] = {"parameters": vars(args).copy(), "machine": machine.describe(), "targets": TARGETS}
    wall = time.monotonic()
    try:
        log(f"starting the stack in {state_dir} (the operator, the tiny models, the pool {TINY_POOL})")
        info = stack.up()
        kube = connect(info.kubeconfig, pool_size=args.workers)
        if not args.skip_sequential:
            results["sequential"] = sequential(kube, stack, info, args)
        if not args.skip_throughput:
            results["throughput"] = throughput(kube, stack, info, args, limit)
    finally:
        log("stopping the stack")
        try:
            stack.down()
        finally:
            if not args.keep and not args.state_dir:
                shutil.rmtree(state_dir, ignore_errors=True)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in machine.load_average()]
    results["wall_seconds"] = time.monotonic() - wall
    return results


# ---- printing -----------------------------------------------------------------------------------------------------
def print_report(results: dict, out=sys.stdout) -> None:
    def line(text: str = "") -> None:
        print(text, file=out)

    line("== warm runner pools (embedded stack) ==")
    seq = results.get("sequential")
    if seq:
        for key, label in (("warm", "warm runner"), ("cold", "pool scaled from zero")):
            s = seq[key]
            line(f"sequential, {label}: {s['completed']}/{s['jobs']} COMPLETED on {s['runners']} runner(s)")
            line(f"  delayTime:     {fmt(s['delay_ms'])}")
            line(f"  modelLoadTime: {fmt(s['model_load_ms'])}")
            line(f"  executionTime: {fmt(s['execution_ms'])}")
            line(f"  submit -> COMPLETED: {fmt(s['submit_to_done_ms'])}")
    tp = results.get("throughput")
    if tp:
        for key, label in (("warm", f"{results['parameters']['runners']} warm no-op runners"),
                           ("cold", "cold path (a fresh runner per job)")):
            if key not in tp:
                continue
            phase, f = tp["phases"][key], tp[key]
            line(f"burst, {label}: {phase['completed']}/{phase['jobs']} COMPLETED, {f['jobs_per_s']:.1f} jobs/s; "
                 f"operator CPU {f['operator_cpu_ms_per_job']:.1f} ms/job; runner pods created "
                 f"{f['pods_created_per_job']:.2f}/job; {f['runners']} runners, at most {f['max_jobs_per_runner']} "
                 f"jobs on one, {f['first_job_share']:.0%} of jobs on a fresh runner; submit -> work starts "
                 f"{fmt(phase['submit_to_start_ms'])}")
            line("  CPU s: " + ", ".join(f"{k} {v:.1f}" for k, v in phase["cpu_seconds"].items() if v))
    for what, measured, target, unit, higher in verdicts(results):
        line(f"target: {what}: {measured:.3g} {unit} vs {'>=' if higher else '<='} {target:g} -> "
             f"{scale.met(measured, target, higher)}")
    line(f"wall time {results.get('wall_seconds', 0):.0f} s")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warm-jobs", type=int, default=40, help="sequential jobs on the warm runner (default 40)")
    p.add_argument("--cold-jobs", type=int, default=4, help="sequential jobs on the pool from zero (default 4)")
    p.add_argument("--jobs", type=int, default=300, help="jobs of each burst on no-op runners (default 300)")
    p.add_argument("--runners", type=int, default=scale.DEFAULT_RUNNERS,
                   help=f"warm no-op runners (default {scale.DEFAULT_RUNNERS})")
    p.add_argument("--workers", type=int, default=8, help="concurrent create requests of a burst (default 8)")
    p.add_argument("--skip-sequential", action="store_true", help="only the bursts on no-op runners")
    p.add_argument("--skip-throughput", action="store_true", help="only the sequential jobs on the real runner")
    p.add_argument("--skip-cold", action="store_true", help="the burst on warm no-op runners only, not the cold path")
    return stack_run_arguments(p)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return publish(run(args), print_report, args.json)


if __name__ == "__main__":
    sys.exit(main())
