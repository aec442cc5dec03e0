"""The runner's overhead: the seed's request through the product path vs. the same work written against diffusers.

Product path: `img2img_runner.execute.execute` with a process-wide `ModelCache` (what `img2img run` and the runner
pod call), plus writing the images as `img2img run` does. Bare path: `bare_sdxl.py` (the same pipelines, scheduler
and step counts, nothing else). Both run in one process on the same models (the tiny ones unless `--catalog`),
interleaved (A B B A ...), after one warm-up job each, so drift of a shared machine hits both alike.

Figures:
- warm per-job latency of each path, and the overhead ratio product / bare (target <= 1.05), from medians and
  from minimums (the minimum is the least disturbed by other processes);
- cold start, in fresh subprocesses: process start -> models loaded (imports included), and the first job there;
- a check that both paths did the same work (UNet evaluations in the base and the refiner).

The request: the seed's (tests/data/seed_request.json: ControlNet canny, refiner at 0.8, DPM++ SDE Karras, 30 steps
at strength 0.75) at 128x128, or its full 480x640 with `--full`, with a fixed seed and a generated init image.
Prints figures; asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import base64
import copy
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import machine  # noqa: E402
from stats import fmt, publish, summary  # noqa: E402

SEED_REQUEST = BENCH.parent / "tests" / "data" / "seed_request.json"
SEED = 1234567
REDUCED = (128, 128)  # the default size here: the seed's 480x640 with --full
TARGET_RATIO = 1.05


def log(msg: str) -> None:
    print(f"[runner_overhead {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def quiet_libraries() -> None:
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


# ---- the request --------------------------------------------------------------------------------------------------
def init_image(width: int, height: int):
    """A picture with edges for canny to find: a gradient with a few shapes."""
    from PIL import Image, ImageDraw

    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(img)
    draw.ellipse((width * 0.2, height * 0.2, width * 0.7, height * 0.6), fill=(30, 60, 200))
    draw.rectangle((width * 0.5, height * 0.55, width * 0.9, height * 0.9), outline=(250, 200, 20), width=3)
    return img


def job_input(size: tuple[int, int] | None = None) -> dict:
    """The seed request's `input` (at `size`, else its own 480x640), a fixed seed and a real init image."""
    request = json.loads(SEED_REQUEST.read_text())
    payload = request["input"]["payload"]
    if size:
        payload["width"], payload["height"] = size
    payload["seed"] = SEED
    buf = io.BytesIO()
    init_image(payload["width"], payload["height"]).save(buf, format="PNG")
    payload["init_images"] = [base64.b64encode(buf.getvalue()).decode()]
    return request["input"]


def bare_request(inp: dict):
    import bare_sdxl

    return bare_sdxl.Request.from_payload(inp["payload"], seed=SEED)


def decoded_init(inp: dict):
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(inp["payload"]["init_images"][0]))).convert("RGB")


def device_and_dtype():
    """What the runner picks by default: CUDA fp16 when there is a GPU, CPU fp32 otherwise."""
    import torch

    return ("cuda", torch.float16) if torch.cuda.is_available() else ("cpu", torch.float32)


# ---- the two paths ------------------------------------------------------------------------------------------------
class Product:
    """`execute` with a model cache kept across jobs, and the images written as `img2img run` writes them."""

    def __init__(self, catalog_file: Path, out_dir: Path):
        from img2img_runner.catalog import Catalog
        from img2img_runner.pipelines import ModelCache

        self.catalog = Catalog.from_file(catalog_file)
        self.cache = ModelCache(self.catalog)
        self.out_dir = out_dir

    def job(self, inp: dict) -> tuple[float, dict]:
        from img2img_runner.execute import execute

        t = time.perf_counter()
        result = execute(copy.deepcopy(inp), self.catalog, cache=self.cache)
        t_written = time.perf_counter()
        write_images(result, self.out_dir)
        seconds = time.perf_counter() - t
        batch = (result.trace.get("batches") or [{}])[0]
        stages = {f"{k} (execute)": v / 1000 for k, v in result.timings.items() if k != "modelLoad"}
        stages["write images"] = seconds - (t_written - t)
        return seconds, {"base_evals": len(batch.get("base") or []), "refiner_evals": len(batch.get("refiner") or []),
                         "stages": stages}


def write_images(result, out_dir: Path) -> None:
    """PNG files with A1111's infotext in the `parameters` text chunk, as `img2img run -o DIR` leaves them."""
    from PIL import PngImagePlugin

    out_dir.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(result.images):
        meta = PngImagePlugin.PngInfo()
        if "parameters" in image.info:
            meta.add_text("parameters", image.info["parameters"])
        image.save(out_dir / f"{i}.png", pnginfo=meta)


class Bare:
    def __init__(self, catalog_file: Path, inp: dict):
        import bare_sdxl

        self.request = bare_request(inp)
        device, dtype = device_and_dtype()
        self.models = bare_sdxl.load(catalog_file, self.request, device=device, dtype=dtype)
        self.image = decoded_init(inp)

    def job(self, inp: dict) -> tuple[float, dict]:
        import bare_sdxl

        t = time.perf_counter()
        _, timings = bare_sdxl.run(self.models, self.request, self.image)
        seconds = time.perf_counter() - t
        stages = {k: timings[k] for k in ("preprocess", "base", "refiner")}
        return seconds, {"base_evals": timings["base_steps"], "refiner_evals": timings["refiner_steps"],
                         "stages": stages}


# ---- cold start (in a subprocess) ---------------------------------------------------------------------------------
def cold_child(kind: str, catalog_file: Path, full: bool) -> None:
    """Runs in a fresh interpreter: load the models, run one job, print the wall-clock moments as JSON."""
    quiet_libraries()
    inp = job_input(None if full else REDUCED)
    moments: dict[str, float] = {}
    if kind == "product":
        from img2img_runner.catalog import Catalog
        from img2img_runner.execute import execute

        result = execute(inp, Catalog.from_file(catalog_file), on_models_loaded=lambda: moments.setdefault(
            "loaded", time.time()))
        with tempfile.TemporaryDirectory() as tmp:
            write_images(result, Path(tmp))
    else:
        import bare_sdxl

        request = bare_request(inp)
        device, dtype = device_and_dtype()
        models = bare_sdxl.load(catalog_file, request, device=device, dtype=dtype)
        moments["loaded"] = time.time()
        bare_sdxl.run(models, request, decoded_init(inp))
    moments["done"] = time.time()
    print(json.dumps(moments))


def cold_start(kind: str, catalog_file: Path, full: bool, timeout: float) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "--cold-child", kind, "--catalog", str(catalog_file)]
    if full:
        argv.append("--full")
    spawned = time.time()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    ended = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"cold start of the {kind} path failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    moments = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"to_models_loaded_s": moments["loaded"] - spawned, "first_job_s": moments["done"] - moments["loaded"],
            "process_s": ended - spawned}


# ---- the benchmark ------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    quiet_libraries()
    import torch

    if args.catalog:
        catalog_file = Path(args.catalog)
    else:
        from img2img.local.models import build_tiny_models

        log("building the tiny models (once per machine)")
        catalog_file = build_tiny_models()
    inp = job_input(None if args.full else REDUCED)
    size = f"{inp['payload']['width']}x{inp['payload']['height']}"
    results: dict = {"parameters": {**vars(args), "size": size, "catalog": machine.shown_path(catalog_file)},
                     "machine": machine.describe(), "target_ratio": TARGET_RATIO,
                     "torch_threads": torch.get_num_threads(), "device": device_and_dtype()[0]}

    if not args.skip_cold:
        cold: dict[str, list[dict]] = {"product": [], "bare": []}
        for i in range(args.cold_reps):
            for kind in (("product", "bare") if i % 2 == 0 else ("bare", "product")):
                log(f"cold start {i + 1}/{args.cold_reps}: {kind}")
                cold[kind].append(cold_start(kind, catalog_file, args.full, timeout=args.timeout))
        results["cold"] = {kind: {key: summary([r[key] for r in runs]) for key in runs[0]}
                           for kind, runs in cold.items()}

    with tempfile.TemporaryDirectory(prefix="img2img-overhead-") as tmp:
        log(f"loading both paths in this process ({size}, {results['device']})")
        t = time.perf_counter()
        product = Product(catalog_file, Path(tmp))
        bare = Bare(catalog_file, inp)
        results["bare_load_seconds"] = bare.models.load_seconds
        log(f"loaded in {time.perf_counter() - t:.1f} s; warm-up job on each")
        first = {"product": product.job(inp), "bare": bare.job(inp)}  # the product loads its models here
        results["first_job_in_process_s"] = {k: v[0] for k, v in first.items()}
        results["work"] = {k: {"base_evals": v[1]["base_evals"], "refiner_evals": v[1]["refiner_evals"]}
                           for k, v in first.items()}
        times: dict[str, list[float]] = {"product": [], "bare": []}
        stages: dict[str, list[dict]] = {"product": [], "bare": []}
        deadline = time.monotonic() + args.timeout
        for i in range(args.reps):
            order = ("product", "bare") if i % 2 == 0 else ("bare", "product")
            for kind in order:
                seconds, detail = (product if kind == "product" else bare).job(inp)
                times[kind].append(seconds)
                stages[kind].append(detail["stages"])
            log(f"rep {i + 1}/{args.reps}: product {times['product'][-1]:.2f} s, bare {times['bare'][-1]:.2f} s")
            if time.monotonic() > deadline:
                log(f"stopping after {i + 1} reps: --timeout {args.timeout:.0f} s reached")
                break
    results["warm_s"] = {k: summary(v) for k, v in times.items()}
    results["warm_stages_median_s"] = {k: {stage: summary([d[stage] for d in v])["p50"] for stage in v[0]}
                                       for k, v in stages.items() if v}
    results["warm_samples_s"] = times
    wp, wb = results["warm_s"]["product"], results["warm_s"]["bare"]
    results["ratio_median"] = wp["p50"] / wb["p50"]
    results["ratio_min"] = wp["min"] / wb["min"]
    results["same_work"] = results["work"]["product"] == results["work"]["bare"]
    return results


def met(ratio: float) -> str:
    return "met" if ratio <= TARGET_RATIO else f"missed by {ratio - TARGET_RATIO:.3f}"


def print_report(r: dict, out=sys.stdout) -> None:
    def line(text: str = "") -> None:
        print(text, file=out)

    p = r["parameters"]
    line(f"== runner overhead: seed request at {p['size']}, {r['device']}, {r['torch_threads']} torch threads ==")
    for kind in ("product", "bare"):
        line(f"warm per job, {kind:7s}: {fmt(r['warm_s'][kind], 's', 3)}")
    line(f"overhead ratio product/bare: {r['ratio_median']:.3f} from medians ({met(r['ratio_median'])} vs "
         f"<= {TARGET_RATIO}), {r['ratio_min']:.3f} from minimums ({met(r['ratio_min'])})")
    for kind, st in r.get("warm_stages_median_s", {}).items():
        line(f"  {kind} stages (medians): " + ", ".join(f"{k} {v:.3f} s" for k, v in st.items()))
    line(f"same work: {'yes' if r['same_work'] else 'NO'} (UNet evaluations: product {r['work']['product']}, "
         f"bare {r['work']['bare']})")
    line(f"first job in the process (product loads its models here): "
         f"product {r['first_job_in_process_s']['product']:.2f} s, bare {r['first_job_in_process_s']['bare']:.2f} s"
         f" (bare loaded beforehand in {sum(r['bare_load_seconds'].values()):.2f} s)")
    for kind, c in (r.get("cold") or {}).items():
        line(f"cold start, {kind:7s}: process start -> models loaded {fmt(c['to_models_loaded_s'], 's', 2)}; "
             f"first job {fmt(c['first_job_s'], 's', 2)}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the seed's full 480x640 instead of 128x128")
    p.add_argument("--reps", type=int, default=6, help="warm jobs per path (default 6)")
    p.add_argument("--cold-reps", type=int, default=2, help="cold starts per path (default 2)")
    p.add_argument("--skip-cold", action="store_true")
    p.add_argument("--catalog", help="model catalog (default: the tiny models, built once into the cache)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds the warm loop and each cold start may take")
    p.add_argument("--json", help="also write every figure to this file")
    p.add_argument("--cold-child", choices=["product", "bare"], help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cold_child:
        cold_child(args.cold_child, Path(args.catalog), args.full)
        return 0
    return publish(run(args), print_report, args.json)


if __name__ == "__main__":
    sys.exit(main())
