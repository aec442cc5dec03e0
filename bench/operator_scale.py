"""The operator at scale: N jobs through the whole lifecycle on the embedded stack, with no-op runners.

The operator runs unchanged; only its configuration says `runner.image: img2img/noop:bench`, and the local executor's
image table puts `bench/noop-image/bin` first on PATH for `img2img/noop:*`, so each runner pod is a process that
speaks the real runner protocol (take, heartbeat, done; reads input.json and writes result.json through the
assignment's presigned URLs) without the GPU work. Every job runs on a runner of a pool: here a RunnerPool of
`--runners` warm no-op runners (minReady = maxRunners) holding the jobs' models, created before the jobs. The node
and the GPU class get a large capacity, so the concurrency limit is not the bottleneck; the pool's size is.

What changed with pools (the figures keep their meaning, measured where the work now starts): "submission -> work
starts" was "submission -> pod created" (the operator made one pod per job); it is now "submission -> the job
assigned to a runner" (the status IN_PROGRESS naming its runner, seen by the benchmark's watch), and for batch/v1 Jobs
still "-> pod created". Runner pods are created once per pool, not per job: the operator's pod writes per job are
gone from the burst.

Phases, in one run (each bounded in time, each in its own namespace):

1. operator burst: N Img2ImgJobs created at once -> jobs/s through the lifecycle, submission -> work starts and
   -> COMPLETED percentiles, API writes per job (kube-apiserver `apiserver_request_total` by verb and resource,
   before/after), the operator's peak RSS (VmHWM);
2. operator paced: jobs arrive at a steady rate the system sustains (half the burst's jobs/s unless given), so that
   a runner is mostly free -> the latency of submission -> work starts when nothing waits;
3. native burst / paced: the same no-op work as batch/v1 Jobs on the same API server, one pod per Job created by
   kube-controller-manager's job-controller (the operator is stopped, its pool removed), at the same N and rate;
4. present: Img2ImgJobs are added (operator stopped) until `--present` exist, most COMPLETED with a full status and
   a share queued in a GPU class with `maxConcurrent: 0`; the operator starts again (start-up time, writes), the
   pool is created again and the burst runs once more -> the same figures with that many jobs present, and the
   operator's RSS there.

Prints figures; asserts nothing about timing. `--json FILE` writes every figure for `run_all.py`.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import kubeapi  # noqa: E402
import machine  # noqa: E402
from stats import fmt, publish, stack_run_arguments, summary  # noqa: E402

from img2img import API_GROUP, API_VERSION, PLURAL  # noqa: E402
from img2img.api.needs import required_models  # noqa: E402
from img2img.api.payload import Img2ImgPayload  # noqa: E402
from img2img.api.pool import POOL_PLURAL  # noqa: E402
from img2img.kube import Kube, KubeError, connect, job_path  # noqa: E402
from img2img.local.bootstrap import (  # noqa: E402
    BUCKET, RUNNER_NAMESPACE, RUNNER_SERVICE_ACCOUNT, S3_PASSWORD, S3_USER, pool_manifest, wait_pool_ready,
)
from img2img.local.stack import Stack, StackInfo  # noqa: E402
from img2img.local.supervisor import wait_until  # noqa: E402
from img2img_operator.runner_pods import pool_selector  # noqa: E402

NOOP_BIN = BENCH / "noop-image" / "bin"
NOOP_IMAGE = "img2img/noop:bench"
NOOP_IMAGE_PATTERN = "img2img/noop:*"
SEED_REQUEST = BENCH.parent / "tests" / "data" / "seed_request.json"
SUBMITTED_AT = f"{API_GROUP}/submitted-at"
NATIVE_S3_SECRET = "bench-s3"  # the batch/v1 Jobs' S3 credentials, in their namespace
PARKED_CLASS = "parked"  # a GPU class with maxConcurrent 0: its jobs stay queued
NOOP_POOL = "noop"  # the RunnerPool of no-op runners the operator's jobs run on
DEFAULT_RUNNERS = 8  # its size: enough that the operator, not the runners, sets the pace on 2 cores
POOL_READY_SECONDS = 120
# A runner pod's requests: tiny, so that the node's 2 CPUs do not limit how many no-op runners run at once.
NOOP_REQUESTS = {"cpu": "10m", "memory": "32Mi"}
# Writes that are not about jobs: heartbeats of the node and the controllers, the API server's own endpoints,
# kube-controller-manager's service account tokens.
BACKGROUND = frozenset({"leases", "nodes", "nodes/status", "endpoints", "endpointslices", "serviceaccounts/token"})
# Where each workload's work starts, as the benchmark sees it.
START = {"operator": "assigned to a runner", "native": "pod created"}
STALL_SECONDS = 60.0  # a phase where no job starts or finishes for this long is cut short

TARGETS = {
    "jobs_per_s": 50.0,  # >= through the whole lifecycle, N at once
    "p99_submit_to_start_ms": 250.0,  # <= when a runner is free
    "writes_per_job": 6.0,  # <= API writes per job by the operator
    "rss_mb_present": 200.0,  # <= operator RSS with --present jobs
}


def log(msg: str) -> None:
    print(f"[operator_scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- the stack --------------------------------------------------------------------------------------------------
@dataclass
class BenchStack(Stack):
    """The embedded stack, with the no-op image first on PATH for `img2img/noop:*` in the executor's image table,
    and optionally kube-controller-manager's client rate limit raised (`kcm_qps`; its default is 20 QPS, burst 30).

    `Stack` writes the executor's configuration and starts it in one step, so this changes the file just before the
    executor starts (a `Stack(executor_images=..., controller_manager_args=...)` hook would be cleaner).
    """

    kcm_qps: int | None = None

    def spawn(self, state: dict, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        if not self.running(state, name):
            if name == "executor":
                _put_noop_first(argv)
            elif name == "kube-controller-manager" and self.kcm_qps:
                argv = [*argv, f"--kube-api-qps={self.kcm_qps}", f"--kube-api-burst={self.kcm_qps}"]
        super().spawn(state, name, argv, env)


def _put_noop_first(argv: list[str]) -> None:
    import yaml

    config_file = next((Path(a.split("=", 1)[1]) for a in argv if a.startswith("--config=")), None)
    if config_file is None or not config_file.exists():
        raise RuntimeError(f"cannot find the executor's configuration in {argv}")
    config = yaml.safe_load(config_file.read_text())
    images = config.setdefault("images", {})
    entry = dict(images.get(NOOP_IMAGE_PATTERN) or {})
    entry["pathPrepend"] = [str(NOOP_BIN), *[p for p in entry.get("pathPrepend") or [] if p != str(NOOP_BIN)]]
    images[NOOP_IMAGE_PATTERN] = entry
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))


def operator_overrides(limit: int, classes: tuple[str, ...] = ("local",)) -> dict:
    """The operator's configuration for no-op runners: `classes` with room for `limit` jobs each, and the parked
    class; a phase's jobs share one namespace, which may run all of them at once."""
    gpu_classes = {c: {"resources": {"nvidia.com/gpu": 1}, "maxConcurrent": limit} for c in classes}
    return {
        "runner": {"image": NOOP_IMAGE, "resources": {"requests": dict(NOOP_REQUESTS)}},
        "gpuClasses": {**gpu_classes, PARKED_CLASS: {"resources": {"nvidia.com/gpu": 1}, "maxConcurrent": 0}},
        "defaultGpuClass": classes[0],
        "policy": {"default": {"maxConcurrent": None}},
    }


def start_pool(stack: Stack, info: StackInfo, name: str, gpu_class: str, runners: int, models: tuple[str, ...] = (),
               timeout: float = POOL_READY_SECONDS) -> None:
    """A RunnerPool of `runners` runners kept warm (minReady = maxRunners); waits until they all ask for work."""
    info.kubectl("apply", "--server-side", "-f", "-",
                 input=pool_manifest(name, gpu_class, list(models), min_ready=runners, maxRunners=runners))
    wait_pool_ready(info.kubectl, name, runners, timeout, stack.logs / "operator.log")


def runner_pods(kube: Kube, pool: str) -> list[str]:
    """The names of a pool's runner pods (any phase)."""
    selector = ",".join(f"{k}={v}" for k, v in pool_selector(pool).items())
    items, _ = kube.list(f"/api/v1/namespaces/{RUNNER_NAMESPACE}/pods", query={"labelSelector": selector})
    return [pod["metadata"]["name"] for pod in items]


def remove_pool(kube: Kube, stack: Stack, info: StackInfo, name: str) -> None:
    """Delete a RunnerPool and wait until its runner pods are gone (the garbage collector deletes them with it)."""
    info.kubectl("delete", POOL_PLURAL, name, "-n", RUNNER_NAMESPACE, "--ignore-not-found")
    wait_until(f"the runners of pool {name} gone", lambda: not runner_pods(kube, name), POOL_READY_SECONDS,
               stack.logs / "operator.log")


def pid_of(stack: Stack, component: str) -> int | None:
    return stack.read_state().get("pids", {}).get(component)


def memory_mb(pid: int | None) -> dict[str, float]:
    """VmHWM (peak RSS) and VmRSS of a process, in MB (10^6 bytes)."""
    out = {"peak_rss_mb": math.nan, "rss_mb": math.nan}
    if not pid:
        return out
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    out["peak_rss_mb"] = int(line.split()[1]) * 1024 / 1e6
                elif line.startswith("VmRSS:"):
                    out["rss_mb"] = int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return out


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU time (user + system) of each component of the stack so far, and of its reaped children apart
    ("executor children" are the container processes: the sandbox launcher and the no-op runner)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in stack.read_state().get("pids", {}).items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / tick  # utime stime
            children = (int(fields[13]) + int(fields[14])) / tick  # cutime cstime
            if children:
                out[f"{name} children"] = children
        except (OSError, IndexError, ValueError):
            pass
    return out


# ---- what is submitted ------------------------------------------------------------------------------------------
def tiny_png_b64() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 200)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def seed_input() -> dict:
    """The seed's request `input`, with a real (tiny) image in place of its placeholder."""
    request = json.loads(SEED_REQUEST.read_text())
    request["input"]["payload"]["init_images"] = [tiny_png_b64()]
    return request["input"]


def models_of(job_input: dict) -> tuple[str, ...]:
    """The models a job needs, as a pool lists them: a warm pool's runners hold them (no-op runners say so)."""
    return tuple(sorted(required_models(Img2ImgPayload.model_validate(job_input["payload"]), None)))


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Workload:
    """One way of running a no-op job: an Img2ImgJob through the operator, or a batch/v1 Job."""

    name: str
    kind: str  # the job object's kind (events about it are the controller's)
    controller_resources: frozenset[str]  # writes on these (but the benchmark's own creates) are the controller's
    collection: Callable[[str], str]
    manifest: Callable[[str, str], dict]
    outcome: Callable[[dict], str | None]  # "COMPLETED", "FAILED" or None while it runs
    # When its work starts: seen on the job object (the operator's jobs: assigned to a runner), or else on the pod
    # the job's controller creates for it (batch/v1 Jobs: the job's name from a pod).
    started: Callable[[dict], bool] | None = None
    job_of_pod: Callable[[dict], str | None] | None = None


def operator_workload(job_input: dict, gpu_class: str | None = None) -> Workload:
    def manifest(namespace: str, name: str) -> dict:
        spec: dict[str, Any] = {"input": job_input}
        if gpu_class:
            spec["gpuClass"] = gpu_class
        return {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": "Img2ImgJob",
            "metadata": {"name": name, "namespace": namespace, "annotations": {SUBMITTED_AT: str(now_ms())}},
            "spec": spec,
        }

    def outcome(job: dict) -> str | None:
        state = (job.get("status") or {}).get("status")
        if state == "COMPLETED":
            return "COMPLETED"
        if state in ("FAILED", "CANCELLED", "TIMED_OUT"):
            return "FAILED"
        return None

    return Workload(
        name="operator",
        kind="Img2ImgJob",
        # the jobs, the pools' status (its counts move with the jobs), the runner pods (scaling)
        controller_resources=frozenset({PLURAL, f"{PLURAL}/status", f"{POOL_PLURAL}/status", "pods"}),
        collection=job_path,
        manifest=manifest,
        outcome=outcome,
        started=lambda job: bool((job.get("status") or {}).get("runnerPod")),
    )


def native_workload(input_uri: str, s3_endpoint: str) -> Workload:
    """batch/v1 Jobs running the same no-op container, with what the operator would give it (S3 env, GPU)."""

    def manifest(namespace: str, name: str) -> dict:
        resources = {**NOOP_REQUESTS, "nvidia.com/gpu": 1}
        env = [
            {"name": "IMG2IMG_JOB_INPUT", "value": input_uri},
            {"name": "IMG2IMG_OUTPUT", "value": f"s3://{BUCKET}/native/{namespace}/{name}/"},
            {"name": "IMG2IMG_ATTEMPT", "value": "1"},
            {"name": "AWS_ENDPOINT_URL", "value": s3_endpoint},
            {"name": "AWS_REGION", "value": "us-east-1"},
        ] + [{"name": k, "valueFrom": {"secretKeyRef": {"name": NATIVE_S3_SECRET, "key": k}}}
             for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "backoffLimit": 2,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "serviceAccountName": RUNNER_SERVICE_ACCOUNT,
                        "automountServiceAccountToken": False,
                        "containers": [{
                            "name": "runner",
                            "image": NOOP_IMAGE,
                            "command": ["img2img-runner"],
                            "env": env,
                            "resources": {"requests": resources, "limits": {"nvidia.com/gpu": 1}},
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                        }],
                    }
                },
            },
        }

    def outcome(job: dict) -> str | None:
        for cond in (job.get("status") or {}).get("conditions") or []:
            if cond.get("status") == "True" and cond.get("type") == "Complete":
                return "COMPLETED"
            if cond.get("status") == "True" and cond.get("type") == "Failed":
                return "FAILED"
        return None

    return Workload(
        name="native",
        kind="Job",
        controller_resources=frozenset({"jobs", "jobs/status", "pods"}),
        collection=lambda ns: f"/apis/batch/v1/namespaces/{ns}/jobs",
        manifest=manifest,
        outcome=outcome,
        job_of_pod=lambda pod: ((pod.get("metadata") or {}).get("labels") or {}).get("batch.kubernetes.io/job-name"),
    )


# ---- one phase --------------------------------------------------------------------------------------------------
@dataclass
class Tracker:
    """Times (monotonic s) seen for each job of a phase: submitted, its work started, finished."""

    workload: Workload
    submitted: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    finished: dict[str, tuple[float, str]] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def on_pod(self, kind: str, pod: dict, arrived: float) -> None:
        assert self.workload.job_of_pod is not None
        name = self.workload.job_of_pod(pod)
        if kind == "ADDED" and name in self.submitted and name not in self.started:
            self.started[name] = arrived

    def on_job(self, kind: str, job: dict, arrived: float) -> None:
        name = (job.get("metadata") or {}).get("name")
        if name not in self.submitted or name in self.finished:
            return
        if self.workload.started is not None and name not in self.started and self.workload.started(job):
            self.started[name] = arrived
        outcome = self.workload.outcome(job)
        if outcome:
            with self.cond:
                self.finished[name] = (arrived, outcome)
                self.cond.notify_all()


def create_namespace(kube: Kube, info: StackInfo, name: str, workload: Workload) -> None:
    """A namespace for a phase's jobs: nothing else for the operator's; for batch/v1 Jobs what their pods need there
    (a ServiceAccount and the Secret with the S3 credentials)."""
    try:
        kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": name}})
    except KubeError as e:
        if e.status != 409:  # it exists: a benchmark run again on the same stack
            raise
    if workload.name == "native":
        items = [{"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False,
                  "metadata": {"name": RUNNER_SERVICE_ACCOUNT, "namespace": name}},
                 {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": NATIVE_S3_SECRET, "namespace": name},
                  "stringData": {"AWS_ACCESS_KEY_ID": S3_USER, "AWS_SECRET_ACCESS_KEY": S3_PASSWORD}}]
        info.kubectl("apply", "--server-side", "-f", "-",
                     input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def write_total(counts: Counter) -> int:
    return sum(v for (verb, res), v in counts.items() if verb in kubeapi.WRITE_VERBS and res not in BACKGROUND)


def wait_quiet(kube: Kube, quiet: float = 2.0, timeout: float = 30.0) -> Counter:
    """Wait until no write (heartbeats aside) reaches the API server for `quiet` s; return the counters then."""
    deadline = time.monotonic() + timeout
    counts = kubeapi.counts_now(kube)
    last, since = write_total(counts), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        counts = kubeapi.counts_now(kube)
        total = write_total(counts)
        if total != last:
            last, since = total, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return counts


def run_phase(kube: Kube, stack: Stack, workload: Workload, namespace: str, count: int, *,
              rate: float | None, workers: int, timeout: float, limit: int | None = None) -> dict:
    """Submit `count` jobs (all at once, or `rate` per second), follow them to the end, and measure."""
    mode = "burst" if rate is None else f"paced {rate:g}/s"
    log(f"{workload.name} {mode}: {count} jobs in namespace {namespace}")
    tracker = Tracker(workload)
    jobs_path = workload.collection(namespace)
    pods_path = f"/api/v1/namespaces/{namespace}/pods"
    watches = [kubeapi.Follow(kube, jobs_path, kubeapi.version_now(kube, jobs_path), tracker.on_job)]
    if workload.job_of_pod is not None:
        watches.append(kubeapi.Follow(kube, pods_path, kubeapi.version_now(kube, pods_path), tracker.on_pod))
    prefix = "n" if workload.name == "native" else "j"
    names = [f"{prefix}{'b' if rate is None else 'p'}-{i:05d}" for i in range(count)]
    errors: list[str] = []
    before = wait_quiet(kube)
    cpu_before = cpu_seconds(stack)
    start = time.monotonic()

    def submit(i: int) -> None:
        if rate is not None:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        name = names[i]
        tracker.submitted[name] = time.monotonic()
        try:
            kube.request("POST", jobs_path, body=workload.manifest(namespace, name))
        except KubeError as e:
            tracker.submitted.pop(name, None)
            errors.append(str(e))

    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(submit, range(count)))
        submit_seconds = time.monotonic() - start
        if not tracker.submitted:
            raise RuntimeError(f"no job could be created: {errors[0] if errors else '?'}")
        deadline = start + timeout
        progress, last_change, stalled = -1, time.monotonic(), False
        with tracker.cond:
            while len(tracker.finished) < len(tracker.submitted) and time.monotonic() < deadline:
                tracker.cond.wait(timeout=1.0)
                now_progress = len(tracker.finished) + len(tracker.started)
                if now_progress != progress:
                    progress, last_change = now_progress, time.monotonic()
                elif time.monotonic() - last_change > STALL_SECONDS:
                    stalled = True
                    log(f"{workload.name} {mode}: no progress for {STALL_SECONDS:.0f} s; cutting the phase short")
                    break
        end = time.monotonic()
        after = wait_quiet(kube)
        cpu_after = cpu_seconds(stack)
    finally:
        for w in watches:
            w.stop()
    events, _ = kube.list(f"/api/v1/namespaces/{namespace}/events")

    created = len(tracker.submitted)
    ok = [n for n, (_, outcome) in tracker.finished.items() if outcome == "COMPLETED"]
    last_done = max((t for t, _ in tracker.finished.values()), default=end)
    to_start = [(tracker.started[n] - tracker.submitted[n]) * 1000 for n in tracker.submitted if n in tracker.started]
    to_done = [(tracker.finished[n][0] - tracker.submitted[n]) * 1000 for n in ok]
    start_to_done = [(tracker.finished[n][0] - tracker.started[n]) * 1000 for n in ok if n in tracker.started]
    diff = after - before
    writes = {f"{verb} {res}": v / created for (verb, res), v in sorted(diff.items())
              if verb in kubeapi.WRITE_VERBS and res not in BACKGROUND and v > 0}
    reads = sum(v for (verb, res), v in diff.items() if verb not in kubeapi.WRITE_VERBS)
    events_by = Counter()
    controller_events = 0
    for ev in events:
        n = int(ev.get("count") or 1)
        component = ev.get("reportingComponent") or (ev.get("source") or {}).get("component") or "?"
        events_by[f"{component} on {(ev.get('involvedObject') or {}).get('kind', '?')}"] += n
        if (ev.get("involvedObject") or {}).get("kind") == workload.kind:
            controller_events += n
    controller_writes = (sum(v for (verb, res), v in diff.items()
                             if verb in kubeapi.WRITE_VERBS and res in workload.controller_resources)
                         - created + controller_events)
    result = {
        "workload": workload.name,
        "mode": "burst" if rate is None else "paced",
        "rate": rate,
        "namespace": namespace,
        "jobs": count,
        "created": created,
        "create_errors": len(errors),
        "first_create_error": errors[0] if errors else None,
        "completed": len(ok),
        "failed": sum(1 for _, o in tracker.finished.values() if o != "COMPLETED"),
        "unfinished": created - len(tracker.finished),
        "timed_out": len(tracker.finished) < created,
        "submit_seconds": submit_seconds,
        "makespan_seconds": last_done - start,
        "jobs_per_s": len(ok) / (last_done - start) if ok else 0.0,
        "submit_to_start_ms": summary(to_start),
        "submit_to_done_ms": summary(to_done),
        "start_to_done_ms": summary(start_to_done),
        "max_in_flight": max_in_flight(tracker),
        "limit": limit,
        "writes_per_job_controller": controller_writes / created,
        "writes_per_job_all": write_total(diff) / created,
        "reads_per_job_all": reads / created,
        "writes_by_request": writes,
        "events_by_component": dict(events_by),
        "cpu_seconds": {k: round(cpu_after.get(k, 0) - cpu_before.get(k, 0), 2)
                        for k in sorted(set(cpu_before) | set(cpu_after))},
        "stalled": stalled,
    }
    log(f"{workload.name} {mode}: {len(ok)}/{count} COMPLETED, {result['jobs_per_s']:.1f} jobs/s; "
        f"submit->work starts {fmt(result['submit_to_start_ms'])}; "
        f"controller writes/job {result['writes_per_job_controller']:.2f}")
    return result


def max_in_flight(tracker: Tracker) -> int:
    """The most jobs submitted and not yet finished at any one time."""
    moments = [(t, 1) for t in tracker.submitted.values()]
    moments += [(t, -1) for t, _ in tracker.finished.values()]
    current = peak = 0
    for _, step in sorted(moments):
        current += step
        peak = max(peak, current)
    return peak


# ---- jobs present -----------------------------------------------------------------------------------------------
A1111_INFO_KEYS = ("prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds", "subseed",
                   "all_subseeds", "subseed_strength", "width", "height", "sampler_name", "cfg_scale", "steps",
                   "batch_size", "restore_faces", "face_restoration_model", "sd_model_name", "sd_model_hash",
                   "sd_vae_name", "sd_vae_hash", "seed_resize_from_w", "seed_resize_from_h", "denoising_strength",
                   "extra_generation_params", "index_of_first_image", "infotexts", "styles", "job_timestamp",
                   "clip_skip", "is_using_inpainting_conditioning", "version")


def finished_status(uid: str, name: str, namespace: str, payload: dict, t_ms: int) -> dict:
    """A COMPLETED status as the operator writes it, with a realistic size (two images, A1111's info, parameters)."""
    from img2img.api.status import JobStatus
    from img2img.api.times import format_time_ms

    seed = 1234567890
    infotext = (f"{payload.get('prompt', '')}\nNegative prompt: \nSteps: 30, Sampler: DPM++ SDE, Schedule type: Karras, "
                f"CFG scale: 7, Seed: {seed}, Size: 480x640, Model hash: 31e35c80fc, Model: sd_xl_base_1.0, "
                "VAE hash: 235745af8d, VAE: sdxl_vae.safetensors, Denoising strength: 0.75, ControlNet 0: \"Module: "
                "canny, Model: control_v11p_sd15_canny, Weight: 1.0, Resize Mode: Crop and Resize, Processor Res: "
                "512, Threshold A: 75.0, Threshold B: 75.0, Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: "
                "False, Control Mode: Balanced\", Refiner: sd_xl_refiner_1.0, Refiner switch at: 0.8, Version: v1.10.1")
    info = {key: None for key in A1111_INFO_KEYS}
    info.update(prompt=payload.get("prompt", ""), all_prompts=[payload.get("prompt", "")], seed=seed,
                all_seeds=[seed], width=480, height=640, sampler_name="DPM++ SDE", steps=30, cfg_scale=7,
                infotexts=[infotext], sd_model_name="sd_xl_base_1.0", denoising_strength=0.75)
    prefix = f"s3://{BUCKET}/jobs/{namespace}/{name}/{uid}/"
    params = {**payload, "init_images": None}
    status = JobStatus(
        id=uid, status="COMPLETED", delayTime=1800, executionTime=5200, attempts=1, runnerPod=f"{name}-1",
        submittedAt=format_time_ms(t_ms - 7000), startedAt=format_time_ms(t_ms - 5200),
        completedAt=format_time_ms(t_ms),
        modelLoadTime=1200, result=prefix + "result.json",
        output={"images": [prefix + "images/0.png", prefix + "images/1.png"], "info": json.dumps(info),
                "parameters": params},
        conditions=[{"type": "Ready", "status": "True", "reason": "Completed", "message": "",
                     "lastTransitionTime": format_time_ms(t_ms), "observedGeneration": 1}],
        observedGeneration=1,
    )
    return status.as_dict()


def populate(kube: Kube, namespace: str, count: int, queued_share: float, job_input: dict,
             workers: int) -> dict:
    """Create `count` Img2ImgJobs while the operator is stopped: COMPLETED ones (status written as the operator
    would), and a share queued in the parked GPU class (their status is left to the operator)."""
    started = time.monotonic()
    n_queued = round(count * queued_share)
    done = operator_workload(job_input)
    parked = operator_workload(job_input, gpu_class=PARKED_CLASS)
    path = done.collection(namespace)
    errors: list[str] = []

    def make(i: int) -> None:
        queued = i < n_queued
        name = f"{'q' if queued else 'c'}-{i:05d}"
        try:
            body = kube.request("POST", path, body=(parked if queued else done).manifest(namespace, name))
            if not queued:
                meta = body["metadata"]
                kube.patch(job_path(namespace, name, "status"), {"status": finished_status(
                    meta["uid"], name, namespace, job_input["payload"], now_ms())}, strategic=False)
        except KubeError as e:
            errors.append(str(e))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(make, range(count)))
    seconds = time.monotonic() - started
    if errors:
        log(f"{len(errors)} of {count} jobs could not be created; first: {errors[0]}")
    log(f"created {count - len(errors)} jobs ({n_queued} queued) in {seconds:.0f} s")
    return {"created": count - len(errors), "queued": n_queued, "errors": len(errors),
            "first_error": errors[0] if errors else None, "seconds": seconds}


def count_jobs(kube: Kube) -> int:
    """Img2ImgJobs in every namespace: one item and the server's count of the rest."""
    page = kube.request("GET", job_path(None), query={"limit": 1})
    return len(page.get("items") or []) + int((page.get("metadata") or {}).get("remainingItemCount") or 0)


def start_operator_and_settle(kube: Kube, stack: Stack, info: StackInfo, overrides: dict,
                              timeout: float) -> dict:
    """Start the operator; wait until it is healthy and its start-up writes have stopped."""
    before = wait_quiet(kube)
    started = time.monotonic()
    stack.start_operator(info, overrides)
    healthy = time.monotonic() - started
    after = wait_quiet(kube, quiet=3.0, timeout=timeout)
    settled = time.monotonic() - started
    return {"healthy_seconds": healthy, "settled_seconds": settled,
            "startup_writes": write_total(after - before),
            **memory_mb(pid_of(stack, "operator"))}


# ---- the whole benchmark ------------------------------------------------------------------------------------------
@dataclass
class Bench:
    """One run: the stack, a client, what is submitted, and the figures so far."""

    args: argparse.Namespace
    stack: BenchStack
    info: StackInfo
    kube: Kube
    job_input: dict
    limit: int
    results: dict

    @property
    def phase_timeout(self) -> float:
        return self.args.phase_timeout or 60 + max(self.args.jobs, self.args.paced_jobs) / 2

    def phase(self, key: str, workload: Workload, count: int, rate: float | None) -> dict:
        namespace = "bench-" + key.replace("_", "-")
        create_namespace(self.kube, self.info, namespace, workload)
        self.results[key] = run_phase(self.kube, self.stack, workload, namespace, count, rate=rate,
                                      workers=self.args.workers, timeout=self.phase_timeout, limit=self.limit)
        return self.results[key]

    def start_operator(self, key: str, timeout: float) -> None:
        log("starting the operator")
        self.results[key] = start_operator_and_settle(self.kube, self.stack, self.info,
                                                      operator_overrides(self.limit), timeout)

    def start_pool(self) -> None:
        log(f"pool {NOOP_POOL}: {self.args.runners} no-op runners holding the jobs' models")
        start_pool(self.stack, self.info, NOOP_POOL, "local", self.args.runners, models_of(self.job_input))

    @property
    def paced_rate(self) -> float:
        """--paced-rate, else half the first burst's throughput (a load the system sustains), 1 to 50 per s."""
        if self.args.paced_rate:
            return self.args.paced_rate
        burst = self.results.get("operator_burst") or self.results.get("native_burst") or {}
        return round(min(50.0, max(1.0, burst.get("jobs_per_s", 2.0) / 2)), 1)


def operator_phases(bench: Bench) -> None:
    """N at once, then paced arrivals, through the operator on its pool; the pool is removed and the operator
    stopped at the end."""
    ours = operator_workload(bench.job_input)
    bench.start_operator("operator_start", timeout=60)
    bench.start_pool()
    bench.phase("operator_burst", ours, bench.args.jobs, rate=None)
    bench.phase("operator_paced", ours, bench.args.paced_jobs, rate=bench.paced_rate)
    bench.results["operator_memory"] = memory_mb(pid_of(bench.stack, "operator"))
    remove_pool(bench.kube, bench.stack, bench.info, NOOP_POOL)
    bench.stack.stop("operator")


def native_phases(bench: Bench) -> None:
    """The same no-op work as batch/v1 Jobs, a pod each (kube-controller-manager's job-controller), input staged
    once in S3."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=bench.info.s3_endpoint, aws_access_key_id=S3_USER,
                      aws_secret_access_key=S3_PASSWORD, region_name="us-east-1")
    key = "native/input.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps({"input": bench.job_input}).encode())
    native = native_workload(f"s3://{BUCKET}/{key}", bench.info.s3_endpoint)
    bench.phase("native_burst", native, bench.args.jobs, rate=None)
    bench.phase("native_paced", native, bench.args.paced_jobs, rate=bench.paced_rate)


def present_phases(bench: Bench) -> None:
    """Jobs are added (operator stopped) until --present exist; the operator restarts, its pool is created again,
    and the burst runs again."""
    present = count_jobs(bench.kube)
    add = max(0, bench.args.present - present)
    log(f"{present} jobs present; adding {add} with the operator stopped")
    create_namespace(bench.kube, bench.info, "bench-present", operator_workload(bench.job_input))
    population = populate(bench.kube, "bench-present", add, bench.args.queued_share, bench.job_input,
                          bench.args.workers)
    population["present_before"] = present
    population["present_after"] = count_jobs(bench.kube)
    bench.results["present_population"] = population
    bench.start_operator("present_start", timeout=120 + bench.args.present / 50)
    bench.start_pool()
    bench.phase("present_burst", operator_workload(bench.job_input), bench.args.jobs, rate=None)
    bench.results["present_memory"] = memory_mb(pid_of(bench.stack, "operator"))


def run(args: argparse.Namespace) -> dict:
    """Every phase on one stack, brought up here and always taken down."""
    state_dir = Path(args.state_dir) if args.state_dir else Path(tempfile.mkdtemp(prefix="img2img-bench-"))
    limit = max(args.jobs, args.paced_jobs) * 10  # the GPU class's maxConcurrent and the node's GPUs
    stack = BenchStack(state_dir=state_dir, with_operator=False, with_models=False, with_gateway=False, gpus=limit,
                       kcm_qps=args.kcm_qps)
    results: dict[str, Any] = {"parameters": vars(args).copy(), "machine": machine.describe(), "targets": TARGETS,
                               "limit": limit}
    wall = time.monotonic()
    try:
        log(f"starting the stack in {state_dir}")
        info = stack.up()
        kube = connect(info.kubeconfig, pool_size=args.workers)
        results["machine"]["kube_apiserver"] = kube.request("GET", "/version").get("gitVersion", "?")
        bench = Bench(args, stack, info, kube, seed_input(), limit, results)
        if not args.skip_operator:
            operator_phases(bench)
        if not args.skip_native:
            native_phases(bench)
        if not args.skip_operator and args.present:
            present_phases(bench)
    finally:
        log("stopping the stack")
        try:
            stack.down()
        finally:
            if not args.keep and not args.state_dir:
                shutil.rmtree(state_dir, ignore_errors=True)
    results["wall_seconds"] = time.monotonic() - wall
    return results


# ---- printing -----------------------------------------------------------------------------------------------------
def verdicts(results: dict) -> list[tuple[str, float, float, str, bool]]:
    """(what, measured, target, unit, higher is better) for every target there is a figure for."""
    out = []
    burst = results.get("operator_burst")
    if burst:
        out.append(("jobs/s through the lifecycle (burst)", burst["jobs_per_s"], TARGETS["jobs_per_s"], "jobs/s", True))
        out.append(("API writes per job by the operator", burst["writes_per_job_controller"],
                    TARGETS["writes_per_job"], "writes", False))
    paced = results.get("operator_paced")
    if paced:
        out.append(("p99 submission -> work starts (paced, a runner free)", paced["submit_to_start_ms"]["p99"],
                    TARGETS["p99_submit_to_start_ms"], "ms", False))
    memory = results.get("present_memory")
    if memory:
        n = results.get("present_population", {}).get("present_after", "?")
        out.append((f"operator peak RSS with {n} jobs present", memory["peak_rss_mb"], TARGETS["rss_mb_present"],
                    "MB", False))
    return out


def met(measured: float, target: float, higher_is_better: bool) -> str:
    if measured != measured:  # NaN
        return "no figure"
    if higher_is_better:
        return "met" if measured >= target else f"missed by {target - measured:.3g} ({measured / target:.0%} of target)"
    return "met" if measured <= target else f"missed by {measured - target:.3g} ({measured / target:.0%} of target)"


def print_report(results: dict, out=sys.stdout) -> None:
    def line(text: str = "") -> None:
        print(text, file=out)

    line("== operator at scale (no-op runners, embedded stack) ==")
    for key in ("native_burst", "native_paced", "operator_burst", "operator_paced", "present_burst"):
        r = results.get(key)
        if not r:
            continue
        rate = f" at {r['rate']:g}/s" if r["rate"] else ""
        line(f"{key}: {r['completed']}/{r['jobs']} COMPLETED ({r['failed']} failed, {r['unfinished']} unfinished)"
             f"{rate}; {r['jobs_per_s']:.1f} jobs/s; makespan {r['makespan_seconds']:.1f} s "
             f"(submitting took {r['submit_seconds']:.1f} s)")
        line(f"  submit -> work starts ({START[r['workload']]}): {fmt(r['submit_to_start_ms'])}")
        line(f"  submit -> COMPLETED: {fmt(r['submit_to_done_ms'])}")
        line(f"  work starts -> COMPLETED: {fmt(r['start_to_done_ms'])}")
        line(f"  writes/job: controller {r['writes_per_job_controller']:.2f}, all clients "
             f"{r['writes_per_job_all']:.2f}; reads/job (all clients) {r['reads_per_job_all']:.2f}; "
             f"max in flight {r['max_in_flight']}")
        line("  writes/job by request: " + ", ".join(f"{k} {v:.2f}" for k, v in r["writes_by_request"].items()))
        line("  CPU s: " + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_seconds"].items()))
    for key in ("operator_memory", "present_memory"):
        m = results.get(key)
        if m:
            line(f"{key}: peak RSS {m['peak_rss_mb']:.0f} MB, RSS now {m['rss_mb']:.0f} MB")
    pop = results.get("present_population")
    if pop:
        line(f"present: {pop['present_after']} jobs ({pop['created']} created in {pop['seconds']:.0f} s, "
             f"{pop['queued']} queued in a parked class); operator start-up {results['present_start']}")
    ob, nb = results.get("operator_burst"), results.get("native_burst")
    op, np_ = results.get("operator_paced"), results.get("native_paced")
    if ob and nb and nb["jobs_per_s"]:
        line(f"operator vs native Jobs: jobs/s {ob['jobs_per_s']:.1f} vs {nb['jobs_per_s']:.1f} "
             f"(ratio {ob['jobs_per_s'] / nb['jobs_per_s']:.2f})")
    if op and np_ and np_["submit_to_start_ms"]["n"]:
        line(f"operator vs native Jobs: p99 submit -> work starts (paced) {op['submit_to_start_ms']['p99']:.0f} vs "
             f"{np_['submit_to_start_ms']['p99']:.0f} ms (ratio "
             f"{op['submit_to_start_ms']['p99'] / np_['submit_to_start_ms']['p99']:.2f})")
    for what, measured, target, unit, higher in verdicts(results):
        line(f"target: {what}: {measured:.3g} {unit} vs {'>=' if higher else '<='} {target:g} -> "
             f"{met(measured, target, higher)}")
    line(f"wall time {results.get('wall_seconds', 0):.0f} s")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1000, help="jobs submitted at once per burst (default 1000)")
    p.add_argument("--paced-jobs", type=int, default=200, help="jobs of the paced run (default 200)")
    p.add_argument("--paced-rate", type=float, default=None,
                   help="arrivals per second of the paced runs (default: half the first burst's jobs/s, 1 to 50)")
    p.add_argument("--present", type=int, default=10000,
                   help="Img2ImgJobs present for the last burst (default 10000; 0 skips that phase)")
    p.add_argument("--queued-share", type=float, default=0.1,
                   help="share of the added present jobs left queued (default 0.1); the rest are COMPLETED")
    p.add_argument("--workers", type=int, default=8, help="concurrent create requests (default 8)")
    p.add_argument("--runners", type=int, default=DEFAULT_RUNNERS,
                   help=f"no-op runners in the operator's pool (default {DEFAULT_RUNNERS})")
    p.add_argument("--phase-timeout", type=float, default=None,
                   help="seconds a phase may take before it is cut (default 60 + jobs/2)")
    p.add_argument("--skip-native", action="store_true", help="skip the batch/v1 Job comparison")
    p.add_argument("--skip-operator", action="store_true", help="only the batch/v1 Job phases")
    p.add_argument("--kcm-qps", type=int, default=None,
                   help="raise kube-controller-manager's client rate limit (QPS = burst) for the Job comparison "
                        "(default: its own, 20 QPS / burst 30)")
    return stack_run_arguments(p)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return publish(run(args), print_report, args.json)


if __name__ == "__main__":
    sys.exit(main())
