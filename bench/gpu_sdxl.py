"""The seed's request on a GPU node with real SDXL weights: model load time, UNet it/s and executionTime.

The recipe (diffusers, `bare_sdxl.py`, the same pipelines, scheduler and steps as the runner):
- fp16 weights and activations (`--dtype bf16` to compare), PyTorch SDPA attention (diffusers' default processor
  with torch 2, `AttnProcessor2_0`; printed);
- the fp16-fix VAE (madebyollin/sdxl-vae-fp16-fix): when the catalog marks the seed's VAE `fp16_fix: true` (or
  `--vae-fp16-fix`), the VAE decodes in fp16 instead of being upcast to fp32;
- optional `--compile`: torch.compile of the base UNet, the ControlNet, the refiner UNet and the VAE decoder,
  channels_last (the first run pays the compilation; it is reported apart);
- the request: 480x640, 30 steps at strength 0.75 (23 DPM++ SDE Karras steps, 2 UNet evaluations each but the
  last), ControlNet canny, refiner from 0.8.

Model paths come from the model catalog the runner uses (`--catalog` or `$IMG2IMG_CATALOG`, names as in the seed
request: sd_xl_base_1.0, sd_xl_refiner_1.0, sdxl_vae.safetensors, control_v11p_sd15_canny -> its SDXL substitute).
`--product` also runs the same request through the runner (`img2img_runner.execute`) for its own timings.

Without a CUDA GPU it prints one line and exits 2. `--allow-cpu` runs the same code on the CPU in fp32 (with the tiny
models, to check the script itself; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

EXIT_UNAVAILABLE = 2


def fail(message: str, code: int = EXIT_UNAVAILABLE) -> int:
    print(f"gpu_sdxl: {message}", file=sys.stderr)
    return code


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalog", default=os.environ.get("IMG2IMG_CATALOG"),
                   help="model catalog with the real weights (default: $IMG2IMG_CATALOG)")
    p.add_argument("--runs", type=int, default=4, help="jobs to run; the first is the warm-up (default 4)")
    p.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNets, the ControlNet and the VAE decoder")
    p.add_argument("--compile-mode", default="max-autotune",
                   help="torch.compile mode (default max-autotune; reduce-overhead and default compile faster)")
    p.add_argument("--fullgraph", action="store_true", help="torch.compile(fullgraph=True)")
    p.add_argument("--vae-fp16-fix", action="store_true",
                   help="decode in fp16 even if the catalog does not mark the VAE fp16_fix (only for the fixed VAE)")
    p.add_argument("--image", help="init image (default: a generated picture)")
    p.add_argument("--size", type=size, help="WxH instead of the seed's 480x640")
    p.add_argument("--product", action="store_true", help="also run the request through img2img_runner.execute")
    p.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write every figure to this file")
    return p


def size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, got {text!r}") from None
    return w, h


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        import torch
    except ImportError:
        return fail("torch is not installed (pip install -e '.[runner]'); nothing to measure")
    if not torch.cuda.is_available() and not args.allow_cpu:
        return fail("no CUDA GPU here (torch.cuda.is_available() is false); run it on a GPU node")
    if not args.catalog:
        return fail("no model catalog: pass --catalog or set IMG2IMG_CATALOG (the real SDXL weights)")
    if not Path(args.catalog).is_file():
        return fail(f"model catalog {args.catalog} not found")
    try:
        results = run(args, torch)
    except SystemExit as e:  # a catalog entry missing or unreadable: the message says which
        if isinstance(e.code, str):
            return fail(e.code, 1)
        raise
    print_report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


def run(args: argparse.Namespace, torch) -> dict:
    import bare_sdxl
    import machine
    import runner_overhead
    from stats import summary

    runner_overhead.quiet_libraries()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = ({"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]) if cuda else torch.float32
    inp = runner_overhead.job_input(args.size)
    request = bare_sdxl.Request.from_payload(inp["payload"], seed=runner_overhead.SEED)
    if args.image:
        from PIL import Image

        image = Image.open(args.image).convert("RGB")
    else:
        image = runner_overhead.decoded_init(inp)

    results: dict = {
        "machine": machine.describe(),
        "gpu": torch.cuda.get_device_name(0) if cuda else "none (--allow-cpu)",
        "cuda": torch.version.cuda,
        "device": device, "dtype": str(dtype).removeprefix("torch."),
        "compile": args.compile and args.compile_mode, "catalog": args.catalog,
        "request": {"size": f"{request.width}x{request.height}", "steps": request.steps,
                    "strength": request.strength, "refiner_switch_at": request.refiner_switch_at,
                    "executed_steps": request.executed_steps},
    }
    t = time.perf_counter()
    models = bare_sdxl.load(args.catalog, request, device=device, dtype=dtype,
                            vae_fp16_fix=True if args.vae_fp16_fix else None)
    results["model_load_s"] = {**models.load_seconds, "total": time.perf_counter() - t}
    results["attention"] = bare_sdxl.attention_processors(models)
    results["vae_upcast"] = bool(models.base.vae.config.force_upcast)
    if args.compile:
        compile_models(models, torch, args.compile_mode, args.fullgraph)

    runs = []
    for i in range(max(1, args.runs)):
        marks: list[tuple[str, float]] = []

        def on_step(stage: str, _i: int) -> None:
            if cuda:
                torch.cuda.synchronize()
            marks.append((stage, time.perf_counter()))

        t0 = time.perf_counter()
        out, timings = bare_sdxl.run(models, request, image, on_step=on_step)
        out.save(os.devnull, format="PNG")  # the runner encodes the image before uploading it
        execution = time.perf_counter() - t0
        runs.append({"execution_s": execution, **timings, **loop_rates(marks)})
        print(f"[gpu_sdxl] run {i + 1}/{args.runs}: executionTime {execution * 1000:.0f} ms "
              f"(base {timings['base_steps']} evals, refiner {timings['refiner_steps']} evals)", file=sys.stderr)
    results["runs"] = runs
    warm = runs[1:] or runs
    results["warm"] = {key: summary([r[key] for r in warm if r.get(key) is not None])
                       for key in ("execution_s", "base_it_s", "refiner_it_s", "preprocess", "base", "refiner")}
    if cuda:
        results["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
    if args.product:
        results["product"] = product_path(args, inp)
    return results


def loop_rates(marks: list[tuple[str, float]]) -> dict:
    """UNet evaluations per second inside each denoising loop (diffusers' it/s), from step-end marks."""
    out = {}
    for stage in ("base", "refiner"):
        times = [t for s, t in marks if s == stage]
        out[f"{stage}_it_s"] = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None
    return out


def compile_models(models, torch, mode: str, fullgraph: bool) -> None:
    """torch.compile as diffusers' "accelerate inference" guide does: channels_last, UNets + ControlNet + decoder."""
    import torch._inductor.config  # noqa: F401 (the attribute below needs the submodule)

    torch._inductor.config.conv_1x1_as_mm = True
    torch._inductor.config.coordinate_descent_tuning = True
    torch._inductor.config.epilogue_fusion = False
    torch._inductor.config.coordinate_descent_check_all_directions = True
    base = models.base
    base.unet.to(memory_format=torch.channels_last)
    base.controlnet.to(memory_format=torch.channels_last)
    base.vae.to(memory_format=torch.channels_last)
    base.unet = torch.compile(base.unet, mode=mode, fullgraph=fullgraph)
    base.controlnet = torch.compile(base.controlnet, mode=mode, fullgraph=fullgraph)
    base.vae.decode = torch.compile(base.vae.decode, mode=mode, fullgraph=fullgraph)
    if models.refiner is not None:
        models.refiner.unet.to(memory_format=torch.channels_last)
        models.refiner.unet = torch.compile(models.refiner.unet, mode=mode, fullgraph=fullgraph)


def product_path(args: argparse.Namespace, inp: dict) -> dict:
    """The same request through the runner (its own fp16/SDPA defaults): model load, then warm jobs."""
    import tempfile

    import runner_overhead

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        product = runner_overhead.Product(Path(args.catalog), Path(tmp))
        first, _ = product.job(inp)  # loads the models
        first_total = time.perf_counter() - t
        warm = [product.job(inp)[0] for _ in range(max(1, args.runs - 1))]
    return {"first_job_with_load_s": first_total, "first_job_s": first, "warm_job_s": warm}


def print_report(r: dict, out=sys.stdout) -> None:
    def line(text: str = "") -> None:
        print(text, file=out)

    req = r["request"]
    line(f"== SDXL on {r['gpu']} (CUDA {r['cuda']}), {r['dtype']}, compile: {r['compile'] or 'off'} ==")
    line(f"request: {req['size']}, {req['steps']} steps at strength {req['strength']} ({req['executed_steps']} "
         f"executed), ControlNet canny, refiner from {req['refiner_switch_at']}")
    line(f"attention processors: {', '.join(r['attention'])}; VAE upcast to fp32: {r['vae_upcast']}")
    line("model load: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["model_load_s"].items()))
    first = r["runs"][0]
    line(f"first run (warm-up{', compilation' if r['compile'] else ''}): executionTime {first['execution_s']:.2f} s")
    w = r["warm"]
    line(f"warm executionTime: p50 {w['execution_s']['p50']:.3f} s (min {w['execution_s']['min']:.3f}, "
         f"n={w['execution_s']['n']}); preprocess {w['preprocess']['p50'] * 1000:.0f} ms, base "
         f"{w['base']['p50']:.2f} s, refiner {w['refiner']['p50']:.2f} s")
    line(f"UNet evaluations/s (diffusers it/s): base {w['base_it_s']['p50']:.2f}, refiner "
         f"{w['refiner_it_s']['p50']:.2f} (DPM++ SDE runs 2 evaluations per sampler step)")
    if "peak_gpu_memory_gb" in r:
        line(f"peak GPU memory allocated: {r['peak_gpu_memory_gb']:.1f} GB")
    if "product" in r:
        p = r["product"]
        warm = sorted(p["warm_job_s"])
        line(f"runner (execute): first job with model load {p['first_job_with_load_s']:.2f} s; warm job "
             f"{warm[len(warm) // 2]:.3f} s (median of {len(warm)})")


if __name__ == "__main__":
    sys.exit(main())
