"""Where the seed's job spends its GPU time: a diagnosis to run after `bench/gpu_check.sh`, on the same machine.

1. The base UNet at the seed's latent size (batch 2, fp16), eager, timed; then the same forward replayed from a CUDA
   graph (captured once, inputs in static buffers). A large gap means the eager loop is bound by the CPU launching
   kernels, not by the GPU computing them.
2. torch.profiler over a few eager evaluations: kernels launched per evaluation, CPU time vs GPU time per
   evaluation, the top operators by GPU time.
3. The seed's request once through the runner with CUDA's sync debug mode on between the first and the last step,
   counting the synchronisations by the Python line that caused them.

`python bench/gpu_profile.py --json FILE` (the models `gpu_check.sh` built; PYTHONPATH as it sets it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402


def unet_inputs(torch, model, pooled: int, size: tuple[int, int], device: str) -> dict:
    cfg = model.config
    dtype = next(model.parameters()).dtype
    width, height = size
    n_time = (cfg.projection_class_embeddings_input_dim - pooled) // cfg.addition_time_embed_dim
    return dict(sample=torch.randn(2, 4, height // 8, width // 8, device=device, dtype=dtype),
                timestep=torch.tensor(500, device=device),
                encoder_hidden_states=torch.randn(2, 77, cfg.cross_attention_dim, device=device, dtype=dtype),
                added_cond_kwargs={"text_embeds": torch.randn(2, pooled, device=device, dtype=dtype),
                                   "time_ids": torch.randn(2, n_time, device=device, dtype=dtype)},
                return_dict=False)


def sync(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def rate(torch, fn, n: int) -> float:
    for _ in range(3):
        fn()
    sync(torch)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync(torch)
    return n / (time.perf_counter() - t)


def graph_rate(torch, model, kwargs: dict, n: int) -> float:
    """The forward replayed from one captured CUDA graph (no per-kernel launch cost on the CPU)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):
            model(**kwargs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        model(**kwargs)
    return rate(torch, graph.replay, n)


def profile(torch, model, kwargs: dict, evaluations: int = 3) -> dict:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch.inference_mode():
        model(**kwargs)
        sync(torch)
        with torch_profile(activities=activities) as prof:
            t = time.perf_counter()
            for _ in range(evaluations):
                model(**kwargs)
            cpu_done = time.perf_counter() - t
            sync(torch)
            wall = time.perf_counter() - t
    events = prof.key_averages()
    device_time = lambda e: getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)  # noqa: E731
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    gpu_us = sum(device_time(e) for e in events if e.device_type.name == "CUDA")  # the kernels themselves
    top = sorted(events, key=device_time, reverse=True)[:15]
    return {"evaluations": evaluations, "kernel_launches_per_eval": launches / evaluations,
            "cpu_issue_ms_per_eval": cpu_done * 1000 / evaluations, "wall_ms_per_eval": wall * 1000 / evaluations,
            "gpu_busy_ms_per_eval": gpu_us / 1000 / evaluations,
            "top_by_gpu_time": [{"op": e.key[:90], "calls": e.count, "gpu_ms": device_time(e) / 1000}
                                for e in top]}


def sync_sites(bench) -> dict:
    """The seed's job once, the synchronisations between the first and the last step counted by their Python line."""
    import torch

    def on_step(k: int, n: int) -> None:
        if k == 1:
            torch.cuda.set_sync_debug_mode("warn")
        elif k == n:
            torch.cuda.set_sync_debug_mode("default")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            bench.job(bench.cache("fp16"), gpu_check.seed_input(None), on_step=on_step)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sites = Counter(f"{gpu_check.machine.shown_path(w.filename)}:{w.lineno}" for w in caught
                    if "synchroniz" in str(w.message).lower())
    return {"total": sum(sites.values()), "by_line": dict(sites.most_common(15))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=str(Path.home() / ".cache" / "img2img-operator" / "models"))
    p.add_argument("--json", required=True)
    p.add_argument("--dry-run", action="store_true", help="the tiny models on the CPU (no graph, no sync count)")
    args = p.parse_args(argv)
    import torch

    from img2img_runner import tiny_models

    size, device = ("tiny", "cpu") if args.dry_run else ("full", "cuda")
    catalog = tiny_models.ensure(Path(args.models) / size, size, device)
    bench = gpu_check.Bench(catalog, dry_run=args.dry_run, runs=1, size=None)
    base = bench.cache("fp16").checkpoint(bench.catalog.find("sd_xl_base_1.0"))
    unet = base["unet"]
    kwargs = unet_inputs(torch, unet, base["text_encoder_2"].config.projection_dim, (480, 640), device)
    out: dict = {"gpu": torch.cuda.get_device_name(0) if device == "cuda" else "none (dry run)", "torch": torch.__version__}

    def save() -> None:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")

    with torch.inference_mode():
        out["unet_eager_it_s"] = rate(torch, lambda: unet(**kwargs), 20)
    gpu_check.log(f"base UNet eager: {out['unet_eager_it_s']:.1f} it/s")
    save()
    out["profile"] = profile(torch, unet, kwargs)
    gpu_check.log(f"profile: {json.dumps({k: v for k, v in out['profile'].items() if k != 'top_by_gpu_time'})}")
    save()
    if args.dry_run:
        return 0
    try:
        out["unet_cuda_graph_it_s"] = graph_rate(torch, unet, kwargs, 20)
        gpu_check.log(f"base UNet from a CUDA graph: {out['unet_cuda_graph_it_s']:.1f} it/s")
    except Exception as exc:  # noqa: BLE001 - a finding to report
        out["unet_cuda_graph_it_s"] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
    save()
    out["sync_sites"] = sync_sites(bench)
    gpu_check.log(f"syncs in the step loop: {out['sync_sites']}")
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
