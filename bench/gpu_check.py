"""The seed's job at full size on a GPU, measured without one downloaded weight (`bench/gpu_check.sh` runs it).

1. Builds random models of the published SDXL/SD 1.5 architectures (`img2img_runner.tiny_models --size full`, on the
   GPU, fp16) and their catalog; the pictures are noise, the timing is the real architecture's.
2. Loads them through the runner's model cache (`pipelines.ModelCache`, from local disk).
3. UNet evaluations per second of the base UNet, the refiner UNet and the ControlNet at the seed's latent size
   (batch 2: classifier-free guidance runs as one batch).
4. The seed's request (480x640, 30 steps at strength 0.75, DPM++ SDE Karras, ControlNet canny, refiner from 0.8,
   tests/data/seed_request.json with a fixed seed) through `img2img_runner.execute`, the runner's real path, with
   the models kept loaded (a warm runner), once per set of speed switches (`img2img_runner.acceleration`): fp16
   with the defaults, SDPA off, channels_last off, the fp16-fix VAE, bf16, regional compile, full compile. Its
   `executionTime` is what the operator reports: from models loaded to the images encoded as PNG (the upload
   aside). A compiled set's first job pays the compilation: reported apart.
5. Checks on the way: the decoded images are finite in fp16, CPU<->GPU synchronisations inside the step loop,
   PNG encoding sequential vs parallel, peak GPU memory per phase.
6. The same request through a warm pool runner: `img2img-runner serve` in its own process, loading the pool's
   models at start (its cold start: process, CUDA, models), then taking the job from a loopback stand-in for the
   operator's runner endpoint (tests/fake_operator.py: no Kubernetes on a bare GPU machine) and uploading through
   its presigned-style URLs: the runner's executionTime as the operator computes it (assignment received -> result
   uploaded) and the wall time from the job queued to its outcome received.

Phases run while time is left (`--budget`); the ones after are reported as skipped. `--dry-run`: the same code on
the CPU with the tiny models (fp32, the request at 128x128, torch.compile with the eager backend, one warm run per
phase): a check of this script, its figures mean nothing. Writes every figure to `--json`.
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import machine  # noqa: E402
from stats import summary  # noqa: E402

TARGET_MS = 1500  # the issue's goal for the seed's executionTime on an H100-class GPU, warm
FP16_FIX_VAE = "sdxl-vae-fp16-fix.safetensors"
EXIT_NO_GPU = 2
DRY_RUN_SIZE = (128, 128)  # the dry run's request size: the seed's 480x640 takes minutes per job on a small CPU


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Phase:
    name: str
    dtype: str = "fp16"
    switches: dict = field(default_factory=dict)  # changes to the default Switches
    vae: str | None = None  # another sd_vae for the request
    min_left_s: float = 45  # skipped with less time left than this

    @property
    def compiles(self) -> bool:
        return self.switches.get("compile", "off") != "off"


PHASES = (
    Phase("fp16"),
    Phase("fp16, SDPA off", switches={"sdpa": False}),
    Phase("fp16, channels_last off", switches={"channels_last": False}),
    Phase("fp16, fp16-fix VAE", vae=FP16_FIX_VAE),
    Phase("bf16", dtype="bf16"),
    Phase("fp16, regional compile", switches={"compile": "regional"}, min_left_s=90),
    Phase("fp16, full compile", switches={"compile": "full"}, min_left_s=150),
)


# ---- the request ---------------------------------------------------------------------------------------------------
def seed_input(size: tuple[int, int] | None, vae: str | None = None) -> dict:
    """The seed request's `input` (at its own 480x640 unless `size`), a fixed seed, a generated init image."""
    import runner_overhead

    inp = runner_overhead.job_input(size)
    if vae:
        inp["payload"]["override_settings"]["sd_vae"] = vae
    return inp


# ---- measuring -----------------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, catalog_path: Path, dry_run: bool, runs: int, size: tuple[int, int] | None):
        import torch

        from img2img_runner.acceleration import Switches
        from img2img_runner.catalog import Catalog

        self.torch = torch
        self.cuda = torch.cuda.is_available() and not dry_run
        self.device = "cuda" if self.cuda else "cpu"
        self.catalog = Catalog.from_file(catalog_path)
        self.runs = runs
        self.size = size
        # channels_last on in the dry run too, so that it runs the same calls; eager backend: no kernels generated
        self.defaults = Switches.from_env({**os.environ, "IMG2IMG_CHANNELS_LAST": "1",
                                           **({"IMG2IMG_COMPILE_BACKEND": "eager"} if dry_run else {})}, self.device)
        self.caches: dict[str, object] = {}

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def dtype(self, name: str):
        t = self.torch
        return {"fp16": t.float16, "bf16": t.bfloat16, "fp32": t.float32}[name] if self.cuda else t.float32

    def cache(self, dtype_name: str):
        """One model cache per dtype, kept for the phases after (a warm runner)."""
        from img2img_runner.pipelines import ModelCache, Runtime

        if dtype_name not in self.caches:
            self.caches[dtype_name] = ModelCache(self.catalog, Runtime(self.device, self.dtype(dtype_name),
                                                                       self.defaults))
        return self.caches[dtype_name]

    def job(self, cache, inp: dict, on_step=None) -> tuple[float, list]:
        """One job through execute; (executionTime in s: models loaded -> PNGs encoded, the images)."""
        from img2img_runner.execute import execute
        from img2img_runner.storage import image_files

        marks: dict[str, float] = {}
        result = execute(copy.deepcopy(inp), self.catalog, cache=cache,
                         on_models_loaded=lambda: marks.setdefault("loaded", time.perf_counter()), on_step=on_step)
        image_files(result.images)
        return time.perf_counter() - marks["loaded"], result.images

    def phase(self, phase: Phase) -> dict:
        from dataclasses import replace

        cache = self.cache(phase.dtype)
        switches = replace(self.defaults, **phase.switches)
        cache.set_switches(switches)
        inp = seed_input(self.size, phase.vae)
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        first, _ = self.job(cache, inp)
        first_wall = time.perf_counter() - t
        warm = [self.job(cache, inp)[0] for _ in range(self.runs)]
        out = {"name": phase.name, "dtype": str(self.dtype(phase.dtype)).removeprefix("torch."),
               "switches": switches.describe(), "vae": phase.vae or "as the request (sdxl_vae.safetensors)",
               "first_job_s": first_wall, "execution_ms": summary(x * 1000 for x in warm)}
        if phase.compiles:
            out["compile_s"] = max(0.0, first - out["execution_ms"]["p50"] / 1000)
        if self.cuda:
            out["peak_gpu_gb"] = self.torch.cuda.max_memory_allocated() / 1e9
        log(f"{phase.name}: executionTime p50 {out['execution_ms']['p50']:.0f} ms "
            f"(first job {first_wall:.1f} s, {switches.describe()})")
        cache.set_switches(self.defaults)
        return out

    def unet_rates(self, steps: int) -> dict:
        """UNet (and ControlNet) evaluations per second at the seed's latent size, batch 2, in the fp16 cache."""
        torch = self.torch
        cache = self.cache("fp16")
        base = cache.checkpoint(self.catalog.find("sd_xl_base_1.0"))
        vae_entry = self.catalog.find("sdxl_vae.safetensors")  # the seed's: its refiner is the one loaded already
        refiner = cache.refiner(self.catalog.find("sd_xl_refiner_1.0"), base, cache.vae(vae_entry), vae_entry)
        controlnet = cache.controlnet(self.catalog.find("diffusers_xl_canny_mid"))
        pooled = base["text_encoder_2"].config.projection_dim
        width, height = self.size or (480, 640)
        h, w = height // 8, width // 8
        rates = {}
        for name, model, is_cn in (("base", base["unet"], False), ("refiner", refiner["unet"], False),
                                   ("controlnet", controlnet, True)):
            cfg = model.config
            dtype = next(model.parameters()).dtype
            n_time = (cfg.projection_class_embeddings_input_dim - pooled) // cfg.addition_time_embed_dim
            kwargs = dict(
                sample=torch.randn(2, 4, h, w, device=self.device, dtype=dtype),
                timestep=torch.tensor(500, device=self.device),
                encoder_hidden_states=torch.randn(2, 77, cfg.cross_attention_dim, device=self.device, dtype=dtype),
                added_cond_kwargs={"text_embeds": torch.randn(2, pooled, device=self.device, dtype=dtype),
                                   "time_ids": torch.randn(2, n_time, device=self.device, dtype=dtype)},
                return_dict=False)
            if is_cn:
                kwargs["controlnet_cond"] = torch.rand(2, 3, h * 8, w * 8, device=self.device, dtype=dtype)
            with torch.inference_mode():
                for _ in range(2):
                    model(**kwargs)
                self.sync()
                t = time.perf_counter()
                for _ in range(steps):
                    model(**kwargs)
                self.sync()
            rates[name] = steps / (time.perf_counter() - t)
        log("UNet evaluations/s (batch 2): " + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()))
        return rates

    def checks(self) -> dict:
        """Finite decoded images, synchronisations in the step loop, PNG sequential vs parallel (one fp16 job)."""
        import torch

        from img2img_runner.storage import image_bytes, image_files

        cache = self.cache("fp16")
        finite: list[bool] = []

        def decoded(module, args, output):
            if type(module).__name__ == "Decoder":
                finite.append(bool(torch.isfinite(output).all()))

        syncs = {"count": None}

        def on_step(k: int, n: int) -> None:  # the sampling loop runs between the first and the last step's end
            if self.cuda and k == 1:
                torch.cuda.set_sync_debug_mode("warn")
            elif self.cuda and k == n:
                torch.cuda.set_sync_debug_mode("default")

        hook = torch.nn.modules.module.register_module_forward_hook(decoded)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                _, images = self.job(cache, seed_input(self.size), on_step=on_step)
        finally:
            hook.remove()
            if self.cuda:
                torch.cuda.set_sync_debug_mode("default")
        if self.cuda:
            syncs["count"] = sum(1 for w in caught if "synchroniz" in str(w.message).lower())
        t = time.perf_counter()
        for image in images:
            image_bytes(image)
        sequential = time.perf_counter() - t
        t = time.perf_counter()
        image_files(images)
        parallel = time.perf_counter() - t
        out = {"decoded_finite": bool(finite) and all(finite), "syncs_in_step_loop": syncs["count"],
               "png_ms": {"images": len(images), "sequential": sequential * 1000, "parallel": parallel * 1000}}
        log(f"checks: {out}")
        return out


def pool_runner(catalog_path: Path, inp: dict, runs: int, dry_run: bool) -> dict:
    """The seed's job through ``img2img-runner serve`` (a warm pool runner), against a loopback stand-in operator."""
    sys.path.insert(0, str(BENCH.parent / "tests"))
    from fake_operator import FakeOperator, token

    names = [inp["payload"]["override_settings"]["sd_model_checkpoint"], inp["payload"]["refiner_checkpoint"],
             inp["payload"]["alwayson_scripts"]["controlnet"]["args"][0]["model"],
             inp["payload"]["override_settings"]["sd_vae"]]
    fake = FakeOperator(heartbeat_seconds=1.0)
    env = {**os.environ, "IMG2IMG_OPERATOR_URL": fake.url, "IMG2IMG_RUNNER_TOKEN": token("gpu-check-0"),
           "IMG2IMG_RUNNER_NAME": "gpu-check-0", "IMG2IMG_POOL": "gpu-check", "IMG2IMG_POOL_MODELS": json.dumps(names),
           "IMG2IMG_CATALOG": str(catalog_path),
           # on a small CPU, two processes' OpenMP threads spinning against each other cost 10x: one thread each
           **({"IMG2IMG_TORCH_THREADS": "1"} if dry_run else {})}
    started = time.monotonic()
    log_file = tempfile.TemporaryFile()  # its log (a line per step): a pipe nobody reads would block it when full
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from img2img_runner.main import main; "
                             "sys.exit(main(['serve']))"], env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        while not fake.takes:  # its first take comes once the pool's models are loaded
            if proc.poll() is not None:
                log_file.seek(0)
                raise RuntimeError(f"the runner exited {proc.returncode}: {log_file.read()[-800:].decode(errors='replace')}")
            if time.monotonic() - started > 300:
                raise RuntimeError("the runner did not ask for work within 300 s")
            time.sleep(0.05)
        cold_start = time.monotonic() - started
        executions, walls = [], []
        for _ in range(runs + 1):  # the first job warms the kernels' caches, as gpu_check's phases do
            t = time.perf_counter()
            outcome = fake.outcome(fake.submit(copy.deepcopy(inp), outputs=2), timeout=300)
            if outcome.get("error"):
                raise RuntimeError(f"the job failed on the runner: {outcome['error']}")
            walls.append(time.perf_counter() - t)
            executions.append(outcome["finishedAt"] - outcome["startedAt"])
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        fake.close()
        log_file.close()
    out = {"runner_cold_start_s": cold_start, "execution_ms": summary(executions[1:]), "queued_to_outcome_ms": summary(x * 1000 for x in walls[1:])}
    log(f"warm pool runner: cold start {cold_start:.1f} s, executionTime p50 {out['execution_ms']['p50']:.0f} ms, "
        f"queued -> outcome p50 {out['queued_to_outcome_ms']['p50']:.0f} ms")
    return out


def gpu_facts(torch, dry_run: bool) -> dict:
    if dry_run or not torch.cuda.is_available():
        return {"name": "none (dry run on the CPU)", "driver": None, "memory_gb": None, "cuda": torch.version.cuda}
    props = torch.cuda.get_device_properties(0)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        driver = "?"
    return {"name": props.name, "driver": driver, "memory_gb": round(props.total_memory / 1e9, 1),
            "cuda": torch.version.cuda, "capability": f"{props.major}.{props.minor}"}


def save(results: dict, path: str) -> None:
    """The figures so far: written after each step, so that a run cut short (a lease's end) keeps what it measured."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2, default=str) + "\n")


def run(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    deadline = started + args.budget
    import torch

    import runner_overhead
    from img2img_runner import tiny_models

    runner_overhead.quiet_libraries()
    size = "tiny" if args.dry_run else "full"
    device = "cuda" if size == "full" else "cpu"
    results: dict = {"mode": "dry-run" if args.dry_run else "gpu", "when": dt.datetime.now().isoformat(timespec="seconds"),
                     "machine": machine.describe(), "gpu": gpu_facts(torch, args.dry_run),
                     "versions": {"torch": torch.__version__, "diffusers": machine.package_version("diffusers"),
                                  "transformers": machine.package_version("transformers")},
                     "target_ms": TARGET_MS}
    models_dir = Path(args.models) / size
    t = time.perf_counter()
    catalog = tiny_models.ensure(models_dir, size, device)
    results["models"] = {"size": size, "catalog": machine.shown_path(catalog), "build_s": time.perf_counter() - t,
                         "tokenizer": json.loads((models_dir / tiny_models.MARKER).read_text()).get("tokenizer")}
    log(f"models ({size}) ready in {results['models']['build_s']:.0f} s: {catalog}")
    save(results, args.json)
    request_size = DRY_RUN_SIZE if args.dry_run else None
    inp = seed_input(request_size)
    p = inp["payload"]
    results["request"] = {"size": f"{p['width']}x{p['height']}", "steps": p["steps"],
                          "denoising_strength": p["denoising_strength"], "sampler": f"{p['sampler_name']} {p['scheduler']}",
                          "refiner_switch_at": p["refiner_switch_at"], "controlnet": "canny",
                          "init_image_bytes": len(base64.b64decode(p["init_images"][0]))}

    bench = Bench(catalog, args.dry_run, runs=args.runs, size=request_size)
    t = time.perf_counter()
    first, _ = bench.job(bench.cache("fp16"), inp)
    results["model_load_s"] = bench.cache("fp16").load_seconds
    results["first_job_s"] = time.perf_counter() - t
    log(f"models loaded in {results['model_load_s']:.1f} s (first job {results['first_job_s']:.1f} s)")
    save(results, args.json)
    results["unet_it_s"] = bench.unet_rates(steps=2 if args.dry_run else 10)
    results["checks"] = bench.checks()
    results["phases"] = phases = []
    save(results, args.json)
    try:
        results["pool_runner"] = pool_runner(catalog, inp, args.runs, args.dry_run)
    except Exception as exc:  # noqa: BLE001 - a finding to report; the phases still run
        results["pool_runner"] = {"failed": f"{type(exc).__name__}: {str(exc)[:500]}"}
        log(f"warm pool runner: failed: {exc}")
    save(results, args.json)
    for phase in PHASES:
        left = deadline - time.monotonic()
        if left < phase.min_left_s and not args.dry_run:
            phases.append({"name": phase.name, "skipped": f"{left:.0f} s of the budget left, needs {phase.min_left_s:.0f}"})
            log(f"{phase.name}: skipped ({phases[-1]['skipped']})")
            continue
        try:
            phases.append(bench.phase(phase))
        except Exception as exc:  # noqa: BLE001 - a failing switch is a finding: report it, measure the rest
            phases.append({"name": phase.name, "failed": f"{type(exc).__name__}: {str(exc)[:500]}"})
            log(f"{phase.name}: failed: {exc}")
        save(results, args.json)
    if bench.cuda:
        results["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1e9
    results["total_s"] = time.monotonic() - started
    return results


def best(results: dict) -> dict | None:
    measured = [p for p in results.get("phases", []) if "execution_ms" in p]
    return min(measured, key=lambda p: p["execution_ms"]["p50"]) if measured else None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="the tiny models on the CPU: checks the script only")
    p.add_argument("--models", default=str(Path.home() / ".cache" / "img2img-operator" / "models"),
                   help="where the random models are built (a 'full' or 'tiny' folder under it)")
    p.add_argument("--runs", type=int, default=None, help="warm jobs per phase (default 3; dry run 1)")
    p.add_argument("--budget", type=float, default=430,
                   help="seconds from the start (models built, loaded, measured) after which no phase starts "
                        "(default 430: with the offline install, about 8 minutes on an H100/H200)")
    p.add_argument("--json", required=True, help="write the figures to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.runs = args.runs or (1 if args.dry_run else 3)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is false); --dry-run checks the script on the "
              "CPU", file=sys.stderr)
        return EXIT_NO_GPU
    results = run(args)
    save(results, args.json)
    b = best(results)
    if b:
        log(f"best: {b['name']}: executionTime p50 {b['execution_ms']['p50']:.0f} ms (target {TARGET_MS} ms)")
    log(f"wrote {args.json} in {results['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
