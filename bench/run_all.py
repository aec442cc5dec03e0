"""`make bench`: the operator at scale, warm runner pools, the runner's overhead and the gateway, then BENCHMARKS.md
with every figure and target.

Each benchmark runs in its own process (`operator_scale.py`, `warm_pool.py`, `runner_overhead.py`, `gateway.py`, with
`--json`), one after the other, so none disturbs the others' figures; their reports stream to the terminal as they
run. The GPU figures need a GPU machine (`bench/gpu_check.sh`): the GPU section is rendered from its last run
(bench/gpu-check.json, `gpu_report.py`) when there is one, else it says how to make one.

Run it on a quiet machine: the figures are wall-clock times on whatever else the machine is doing (the load average
at the start is recorded next to them).

Each benchmark's figures are also kept in `bench/last/<name>.json` (committed, with when they were taken), so that
`--skip-…` reruns only some: a skipped benchmark's section is rendered from its last run and says when that was.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import gpu_report  # noqa: E402
import machine  # noqa: E402
import operator_scale  # noqa: E402
import runner_overhead  # noqa: E402
import warm_pool  # noqa: E402


def log(msg: str) -> None:
    print(f"[run_all {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


LAST = BENCH / "last"  # each benchmark's figures of its last run


def keep_last(name: str, figures: dict, info: dict) -> None:
    """Keep a run's figures, with when they were taken and on what load, for later partial reruns."""
    LAST.mkdir(exist_ok=True)
    parameters = {k: v for k, v in (figures.get("parameters") or {}).items() if k not in ("json", "state_dir")}
    figures = {**figures, "parameters": parameters}  # without this machine's paths
    taken = {"taken_at": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "load_average_at_start":
             info["load_average_at_start"]}
    (LAST / f"{name}.json").write_text(json.dumps({**figures, "_taken": taken}, indent=1, sort_keys=True) + "\n")


def last_run(name: str) -> dict | None:
    """The figures of the benchmark's last run, if any were kept."""
    try:
        return json.loads((LAST / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def taken_note(figures: dict | None) -> list[str]:
    """Under a section rendered from an earlier run: when that was."""
    taken = (figures or {}).get("_taken")
    if not taken:
        return []
    load = taken["load_average_at_start"]
    return [f"_Figures of the run of {taken['taken_at']} (load average at its start {load[0]:.2f}); this section "
            f"was not rerun._", ""]


def run_child(script: str, argv: list[str], timeout: float) -> tuple[dict | None, float, str | None]:
    """Run one benchmark script with --json; (its figures or None, seconds, why it failed)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, str(BENCH / script), *argv, "--json", str(out)], timeout=timeout)
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            return None, seconds, f"{script} exited with {proc.returncode}"
        return json.loads(out.read_text()), seconds, None
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - started, f"{script} did not finish within {timeout:.0f} s"
    finally:
        out.unlink(missing_ok=True)


def kube_apiserver_version() -> str:
    """`kube-apiserver --version` of the stack's binaries (when the scale benchmark did not ask the server)."""
    try:
        from img2img.local import binaries

        proc = subprocess.run([str(binaries.ensure_all().kube_apiserver), "--version"], capture_output=True,
                              text=True, timeout=120)
        return proc.stdout.split()[-1] if proc.returncode == 0 and proc.stdout.strip() else "?"
    except Exception:  # the version line is a nicety: never fail the report for it
        return "?"


# ---- BENCHMARKS.md --------------------------------------------------------------------------------------------------
def n(x: float | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}"


def pct(s: dict, digits: int = 0) -> str:
    """p50 / p95 / p99 of a summary."""
    if not s or not s.get("n"):
        return "–"
    return f"{n(s['p50'], digits)} / {n(s['p95'], digits)} / {n(s['p99'], digits)}"


def verdict_rows(scale: dict | None, overhead: dict | None, pools: dict | None = None) -> list[list[str]]:
    rows = []
    verdicts = (operator_scale.verdicts(scale) if scale else []) + (warm_pool.verdicts(pools) if pools else [])
    for what, measured, target, unit, higher in verdicts:
        rows.append([what, f"{'≥' if higher else '≤'} {target:g} {unit}", f"{n(measured, 2)} {unit}",
                     operator_scale.met(measured, target, higher)])
    if overhead:
        ratio = overhead["ratio_median"]
        rows.append([f"runner overhead, warm (product / bare diffusers, medians, {overhead['parameters']['size']})",
                     f"≤ {runner_overhead.TARGET_RATIO}", n(ratio, 3), runner_overhead.met(ratio)])
    return rows


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def scale_section(r: dict) -> list[str]:
    p = r["parameters"]
    lines = ["## Operator at scale (`bench/operator_scale.py`)", ""]
    lines.append(
        f"Embedded stack (etcd, kube-apiserver, kube-controller-manager, MinIO, the local executor); the operator "
        f"unchanged with `runner.image: img2img/noop:bench`, whose pods run `bench/noop-image/bin/img2img-runner "
        f"serve` (the runner protocol: take, one heartbeat, input.json read and a result.json with no images "
        f"written through the presigned URLs, done). The jobs run on a RunnerPool of {p['runners']} such runners "
        f"holding the jobs' models, created before the jobs. GPU class `maxConcurrent` and node GPUs = "
        f"{r['limit']}, so admission never waits. Burst: {p['jobs']} jobs created at once ({p['workers']} "
        f"concurrent creates). Paced: {p['paced_jobs']} jobs at a steady rate (half the burst's jobs/s unless "
        f"`--paced-rate`). Times are measured by the benchmark's watches (submission = just before the create "
        f"request). Work starts when the job is assigned to a runner (its status IN_PROGRESS naming the runner); "
        f"for batch/v1 Jobs when their pod is created. Before pools this table measured submission → pod created "
        f"of the operator's pod per job.")
    lines.append("")
    header = ["phase", "jobs OK", "jobs/s", "submit → work starts p50/p95/p99 ms",
              "submit → COMPLETED p50/p95/p99 ms", "work starts → COMPLETED p50 ms", "controller writes/job",
              "all writes/job", "max in flight"]
    rows = []
    for key, label in (("operator_burst", "operator, burst"), ("operator_paced", "operator, paced"),
                       ("native_burst", "batch/v1 Job, burst"), ("native_paced", "batch/v1 Job, paced"),
                       ("present_burst", "operator, burst, jobs present")):
        ph = r.get(key)
        if not ph:
            continue
        rate = f" at {ph['rate']:g}/s" if ph.get("rate") else ""
        rows.append([label + rate, f"{ph['completed']}/{ph['jobs']}" + (" (stalled)" if ph.get("stalled") else ""),
                     n(ph["jobs_per_s"], 1), pct(ph["submit_to_start_ms"]), pct(ph["submit_to_done_ms"]),
                     n(ph["start_to_done_ms"]["p50"]), n(ph["writes_per_job_controller"], 2),
                     n(ph["writes_per_job_all"], 2), str(ph["max_in_flight"])])
    lines += table(header, rows)
    lines.append("")
    ob, nb, op, np_ = (r.get(k) for k in ("operator_burst", "native_burst", "operator_paced", "native_paced"))
    if ob and nb and nb["jobs_per_s"]:
        lines.append(f"- Operator on its warm pool vs batch/v1 Jobs, a pod each (same API server, executor and "
                     f"no-op work): jobs/s "
                     f"{n(ob['jobs_per_s'], 1)} vs {n(nb['jobs_per_s'], 1)} (ratio "
                     f"{ob['jobs_per_s'] / nb['jobs_per_s']:.2f}).")
    if op and np_ and np_["submit_to_start_ms"]["n"] and np_["submit_to_start_ms"]["p99"]:
        lines.append(f"- p99 submission → work starts, paced: {n(op['submit_to_start_ms']['p99'])} vs "
                     f"{n(np_['submit_to_start_ms']['p99'])} ms (ratio "
                     f"{op['submit_to_start_ms']['p99'] / np_['submit_to_start_ms']['p99']:.2f}).")
    qps = p.get("kcm_qps")
    lines.append(f"- kube-controller-manager client rate limit: "
                 f"{f'raised to {qps} QPS' if qps else 'its default (20 QPS, burst 30)'}; the job-controller "
                 f"makes about {n(nb['writes_per_job_controller'], 1) if nb else '?'} writes per Job.")
    for key, label in (("operator_memory", f"after the burst and paced runs"),
                       ("present_memory", "with the jobs present, after their burst")):
        m = r.get(key)
        if m:
            lines.append(f"- Operator RSS {label}: peak (VmHWM) {n(m['peak_rss_mb'])} MB, now {n(m['rss_mb'])} MB.")
    pop = r.get("present_population")
    if pop:
        st = r.get("present_start") or {}
        lines.append(
            f"- Jobs present: {pop['present_after']:,} Img2ImgJobs ({pop['created']:,} added in "
            f"{pop['seconds']:.0f} s with the operator stopped: {pop['queued']:,} queued in a GPU class with "
            f"`maxConcurrent: 0`, the rest COMPLETED with a full status; the others are the earlier phases' jobs). "
            f"Operator start-up with them: healthy in {n(st.get('healthy_seconds'), 1)} s, its writes settled "
            f"after {n(st.get('settled_seconds'), 1)} s ({st.get('startup_writes', '?')} writes), RSS then "
            f"{n(st.get('rss_mb'))} MB.")
    lines.append("")
    lines.append("API writes per job, by request (all clients; the benchmark's own create is `POST` on the job):")
    lines.append("")
    for key in ("operator_burst", "native_burst", "present_burst"):
        ph = r.get(key)
        if ph:
            lines.append(f"- {key}: " + ", ".join(f"`{k}` {v:.2f}" for k, v in ph["writes_by_request"].items()))
    lines.append("")
    lines.append("CPU seconds per phase, by component (\"executor children\" = the container processes that "
                 "ended in the phase: a pool's runners, still running, are not in it):")
    lines.append("")
    for key in ("operator_burst", "operator_paced", "native_burst", "present_burst"):
        ph = r.get(key)
        if ph:
            lines.append(f"- {key}: " + ", ".join(f"{k} {v:.1f}" for k, v in ph["cpu_seconds"].items() if v))
    lines.append("")
    lines.append(f"Runtime of this benchmark: {n(r.get('wall_seconds'))} s.")
    lines.append("")
    return lines


def pools_section(r: dict) -> list[str]:
    p = r["parameters"]
    lines = ["## Warm runner pools (`bench/warm_pool.py`)", ""]
    seq = r.get("sequential")
    if seq:
        lines.append(
            "The real runner (`img2img-runner serve`) on the tiny models, one job at a time (64×64, 2 steps, SDXL "
            "base), each submitted once the previous one is COMPLETED. *Warm*: the pool `tiny-sdxl` with one runner "
            "that has loaded its models (what `img2img local up` starts). *From zero*: a pool of the same models with "
            "`minReady: 0`, `idleSeconds: 0` (its own GPU class), each job submitted once the previous job's runner "
            "is gone, so that every job waits for a runner pod to start and load the models. Interleaved: one job "
            "from zero, then warm ones. The times are the jobs' status (`delayTime` = submission → the runner starts "
            "the job; a pool's runner loads its models before it asks for work, so a start from zero is in "
            "`delayTime` and `modelLoadTime` is 0).")
        lines.append("")
        rows = []
        for key, label in (("warm", "warm runner"), ("cold", "pool scaled from zero")):
            s = seq[key]
            rows.append([label, f"{s['completed']}/{s['jobs']}", pct(s["delay_ms"]), n(s["model_load_ms"]["p50"]),
                         n(s["execution_ms"]["p50"]), pct(s["submit_to_done_ms"]), str(s["runners"])])
        lines += table(["sequential jobs", "jobs OK", "delayTime p50/p95/p99 ms", "modelLoadTime p50 ms",
                        "executionTime p50 ms", "submit → COMPLETED p50/p95/p99 ms", "runners"], rows)
        lines.append("")
        warm, cold = seq["warm"]["delay_ms"]["p50"], seq["cold"]["delay_ms"]["p50"]
        if seq["warm"]["completed"] and seq["cold"]["completed"] and warm:
            lines.append(f"- `delayTime` p50 from zero / warm: {cold / warm:,.0f}× ({n(cold)} vs {n(warm)} ms).")
            lines.append("")
    tp = r.get("throughput")
    if tp:
        lines.append(
            f"Bursts of {p['jobs']} jobs created at once ({p['workers']} concurrent creates) on no-op runners "
            f"(`bench/noop-image/bin/img2img-runner serve`: take, one heartbeat, input.json read and result.json "
            f"written through the presigned URLs, done; no model work), the operator restarted before each burst "
            f"with `runner.image: img2img/noop:bench`. *Warm*: a RunnerPool of {p['runners']} runners holding the "
            f"jobs' models (minReady = maxRunners), ready before the burst. *Cold path*: the implicit pool of a GPU "
            f"class without a RunnerPool, scaled from zero with `idleSeconds: 0` and no ceiling below the burst, its "
            f"runners serving one job each (`IMG2IMG_NOOP_JOBS=1`: a runner exits once its job is reported): the "
            f"operator creates a runner pod for each waiting job, and the pod goes when its job is done. It stands "
            f"for the pod-per-job path, which is gone (every job now runs on a runner of a pool): a process started "
            f"per job, its pod created, bound, started and deleted through the API server, as a job's pod was. "
            f"Without the one-job limit the runners up first would take several jobs of the burst while the others "
            f"start; the runner columns say how close to a pod per job the run was.")
        lines.append("")
        rows = []
        for key, label in (("warm", f"{p['runners']} warm runners"), ("cold", "cold path (a runner pod per job)")):
            ph, f = tp["phases"][key], tp[key]
            rows.append([label, f"{ph['completed']}/{ph['jobs']}", n(f["jobs_per_s"], 1),
                         pct(ph["submit_to_start_ms"]), n(f["operator_cpu_ms_per_job"], 1),
                         n(f["pods_created_per_job"], 2), f"{f['runners']} ({f['max_jobs_per_runner']})",
                         n(ph["writes_per_job_controller"], 2)])
        lines += table(["burst", "jobs OK", "jobs/s", "submit → work starts p50/p95/p99 ms", "operator CPU ms/job",
                        "runner pods created/job", "runners used (most jobs on one)", "controller writes/job"], rows)
        lines.append("")
        if tp["cold"]["jobs_per_s"]:
            lines.append(f"- jobs/s warm / cold path: **{tp['warm']['jobs_per_s'] / tp['cold']['jobs_per_s']:.2f}**; "
                         f"operator CPU per job warm / cold: "
                         f"{tp['warm']['operator_cpu_ms_per_job'] / tp['cold']['operator_cpu_ms_per_job']:.2f}.")
        for key in ("warm", "cold"):
            cpu = tp["phases"][key]["cpu_seconds"]
            lines.append(f"- CPU seconds, {key} burst: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items() if v))
        lines.append("")
    m = r["machine"]
    start, end = m["load_average_at_start"], m.get("load_average_at_end") or ["?"]
    lines.append(f"Load average (1 min) at this benchmark's start {start[0]}, at its end {end[0]}; runtime "
                 f"{n(r.get('wall_seconds'))} s.")
    lines.append("")
    return lines


def overhead_section(r: dict) -> list[str]:
    p = r["parameters"]
    lines = ["## Runner overhead (`bench/runner_overhead.py`)", ""]
    lines.append(
        f"The seed's request at {p['size']} (ControlNet canny, refiner from 0.8, DPM++ SDE Karras, 30 steps at "
        f"strength 0.75, fixed seed) on the models of `{p['catalog']}`, {r['device']}, {r['torch_threads']} torch "
        f"threads. Product: `img2img_runner.execute` with a model cache kept across jobs, images written as "
        f"`img2img run` writes them. Bare: `bench/bare_sdxl.py`, the same pipelines, scheduler and steps written "
        f"against diffusers. Interleaved in one process after a warm-up job each.")
    lines.append("")
    rows = []
    for kind in ("product", "bare"):
        s = r["warm_s"][kind]
        rows.append([kind, n(s["p50"], 3), n(s["min"], 3), n(s["max"], 3), str(s["n"])])
    lines += table(["warm per job (s)", "median", "min", "max", "n"], rows)
    lines.append("")
    lines.append(f"- Overhead ratio product / bare: **{r['ratio_median']:.3f}** from medians, "
                 f"{r['ratio_min']:.3f} from minimums (target ≤ {runner_overhead.TARGET_RATIO}).")
    lines.append(f"- Same work in both: {'yes' if r['same_work'] else '**no**'} (UNet evaluations "
                 f"{r['work']['product']} vs {r['work']['bare']}).")
    for kind, st in (r.get("warm_stages_median_s") or {}).items():
        lines.append(f"- {kind} stages, medians: " + ", ".join(f"{k} {v:.3f} s" for k, v in st.items()))
    cold = r.get("cold")
    if cold:
        lines.append("")
        rows = [[kind, pct(c["to_models_loaded_s"], 2), pct(c["first_job_s"], 2), str(c["first_job_s"]["n"])]
                for kind, c in cold.items()]
        lines += table(["cold start (fresh process)", "process start → models loaded, p50/p95/p99 s",
                        "then the first job, p50/p95/p99 s", "n"], rows)
    lines.append("")
    return lines


def gateway_section(r: dict) -> list[str]:
    p = r["parameters"]
    lines = ["## RunPod-compatible gateway (`bench/gateway.py`)", ""]
    lines.append(
        f"The gateway as `img2img local up` starts it, one endpoint. `status`: GET of a queued job's status "
        f"({p['status_requests']} requests); `run`: POST of a 64x64 request, each validated and created as an "
        f"Img2ImgJob ({p['run_requests']} requests, the operator stopped); {p['concurrency']} clients at once over "
        f"kept-alive connections. `runsync`: {p['runsync_jobs']} jobs one after the other on no-op runners; the time "
        f"it adds is the request's wall time minus the job's own `delayTime + executionTime`.")
    lines.append("")
    rows = [[key, n(r[key]["requests_per_s"]), pct(r[key]["latency_ms"], 1), str(r[key]["failures"])]
            for key in ("status", "run")]
    lines += table(["operation", "requests/s", "latency p50/p95/p99 ms", "not 200"], rows)
    lines.append("")
    s = r["runsync"]
    lines.append(f"- runsync adds p50/p95/p99 {pct(s['overhead_ms'])} ms to `delayTime + executionTime` "
                 f"(p50 {n(s['delay_plus_execution_ms']['p50'])} ms) over {s['jobs']} jobs.")
    lines.append("")
    return lines


def write_markdown(path: Path, info: dict, scale: dict | None, overhead: dict | None, failures: list[str],
                   argv: list[str], pools: dict | None = None, gateway: dict | None = None) -> None:
    load = info["load_average_at_start"]
    busy = load[0] > 0.5 * info["cores"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`bench/run_all.py{(' ' + ' '.join(argv)) if argv else ''}`) on "
        f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}. Figures are printed, never asserted; rerun to update.",
        "",
        "## Machine and versions",
        "",
        f"- {info['cores']} cores, {info['memory_gib']} GiB, {info['cpu']}, {info['os']}; load average at the "
        f"start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
        + (" — **the machine was busy: the figures are noisy**" if busy else ""),
        f"- Python {info['python']}, torch {info['torch']}, diffusers {info['diffusers']}, transformers "
        f"{info['transformers']}, kopf {info['kopf']}, kube-apiserver {info.get('kube_apiserver', '?')}",
        "",
        "## Targets",
        "",
    ]
    lines += table(["target", "goal", "measured", "status"], verdict_rows(scale, overhead, pools))
    lines.append("")
    for failure in failures:
        lines.append(f"- **Not measured:** {failure}")
    if failures:
        lines.append("")
    if scale:
        lines += scale_section(scale) + taken_note(scale)
    if pools:
        lines += pools_section(pools) + taken_note(pools)
    if overhead:
        lines += overhead_section(overhead) + taken_note(overhead)
    if gateway:
        lines += gateway_section(gateway) + taken_note(gateway)
    lines += gpu_report.section(gpu_report.load())
    lines += [
        "",
        "## How the figures are taken",
        "",
        "- API writes: `apiserver_request_total` from the API server's `/metrics` (admin client certificate), "
        "by verb and resource, before and after a phase once writes have been quiet for 2 s; POST, PUT, PATCH, "
        "DELETE, APPLY count as writes. Heartbeats (leases, node status), the API server's own endpoints and "
        "service-account tokens are left out. *Controller writes* are the writes on the job resource (minus the "
        "benchmark's create), on the RunnerPools' status (the operator's), on pods (create, delete, patch; not "
        "pods/status or pods/binding, which are the kubelet's and the scheduler's: the executor's) and the events "
        "about the job objects.",
        "- Operator RSS: `VmHWM` (peak) and `VmRSS` of the operator process from `/proc/<pid>/status`, pid from "
        "the stack's `state.json`.",
        "- jobs/s: jobs COMPLETED / (last completion − first submission).",
        "",
    ]
    path.write_text("\n".join(lines))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1000, help="operator_scale: jobs per burst (default 1000)")
    p.add_argument("--paced-jobs", type=int, default=200, help="operator_scale: jobs of the paced runs (default 200)")
    p.add_argument("--present", type=int, default=10000, help="operator_scale: jobs present (default 10000)")
    p.add_argument("--kcm-qps", type=int, default=None, help="operator_scale: kube-controller-manager QPS")
    p.add_argument("--warm-jobs", type=int, default=40, help="warm_pool: sequential jobs on a warm runner (default 40)")
    p.add_argument("--cold-jobs", type=int, default=4, help="warm_pool: sequential jobs from zero (default 4)")
    p.add_argument("--pool-jobs", type=int, default=300,
                   help="warm_pool: jobs per burst on no-op runners (default 300)")
    p.add_argument("--runners", type=int, default=operator_scale.DEFAULT_RUNNERS,
                   help=f"no-op runners of the warm pools (default {operator_scale.DEFAULT_RUNNERS})")
    p.add_argument("--reps", type=int, default=6, help="runner_overhead: warm jobs per path (default 6)")
    p.add_argument("--full", action="store_true", help="runner_overhead at the seed's full 480x640")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--skip-pools", action="store_true")
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--skip-gateway", action="store_true")
    p.add_argument("--timeout", type=float, default=3 * 3600, help="seconds each benchmark may take (default 3 h)")
    p.add_argument("--output", default=str(REPO / "BENCHMARKS.md"))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    info = machine.describe()
    failures: list[str] = []
    scale = overhead = pools = gateway = None
    if not args.skip_scale:
        scale_argv = ["--jobs", str(args.jobs), "--paced-jobs", str(args.paced_jobs), "--present", str(args.present),
                      "--runners", str(args.runners)]
        if args.kcm_qps:
            scale_argv += ["--kcm-qps", str(args.kcm_qps)]
        log("operator_scale " + " ".join(scale_argv))
        scale, seconds, why = run_child("operator_scale.py", scale_argv, args.timeout)
        if why:
            failures.append(f"operator at scale: {why}")
        if scale:
            info["kube_apiserver"] = scale["machine"].get("kube_apiserver", "?")
    if not args.skip_pools:
        pools_argv = ["--warm-jobs", str(args.warm_jobs), "--cold-jobs", str(args.cold_jobs), "--jobs",
                      str(args.pool_jobs), "--runners", str(args.runners)]
        log("warm_pool " + " ".join(pools_argv))
        pools, seconds, why = run_child("warm_pool.py", pools_argv, args.timeout)
        if why:
            failures.append(f"warm runner pools: {why}")
    if not args.skip_overhead:
        overhead_argv = ["--reps", str(args.reps)] + (["--full"] if args.full else [])
        log("runner_overhead " + " ".join(overhead_argv))
        overhead, seconds, why = run_child("runner_overhead.py", overhead_argv, args.timeout)
        if why:
            failures.append(f"runner overhead: {why}")
    if not args.skip_gateway:
        log("gateway")
        gateway, seconds, why = run_child("gateway.py", [], args.timeout)
        if why:
            failures.append(f"gateway: {why}")
    fresh = {"operator_scale": scale, "warm_pool": pools, "runner_overhead": overhead, "gateway": gateway}
    for name, figures in fresh.items():
        if figures:
            keep_last(name, figures, info)
    skipped = {"operator_scale": args.skip_scale, "warm_pool": args.skip_pools, "runner_overhead": args.skip_overhead,
               "gateway": args.skip_gateway}
    earlier = {name: last_run(name) if skipped[name] else figures for name, figures in fresh.items()}
    scale, pools, overhead, gateway = (earlier[k] for k in ("operator_scale", "warm_pool", "runner_overhead",
                                                            "gateway"))
    if scale:
        info["kube_apiserver"] = scale["machine"].get("kube_apiserver", "?")
    info.setdefault("kube_apiserver", kube_apiserver_version())
    output = Path(args.output)
    write_markdown(output, info, scale, overhead, failures, argv, pools, gateway)
    log(f"wrote {output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
