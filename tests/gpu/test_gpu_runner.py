"""The runner on a CUDA GPU: fp16 gives finite pictures, the VAE upcast rule, compiled models give the picture the
eager ones give, warm jobs do not grow GPU memory, and running out of GPU memory exits with ExitCode.CUDA_OOM."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from img2img.api.exitcodes import ExitCode
from img2img_runner.acceleration import Switches
from img2img_runner.execute import execute
from img2img_runner.pipelines import ModelCache, Runtime
from model_samples import seed_input

FP16 = Runtime("cuda", torch.float16, Switches(channels_last=True))


def _job(size=(128, 128), **changes):
    return seed_input(width=size[0], height=size[1], seed=1234, **changes)


def _decoder_outputs():
    """Record what every VAE decoder returns, and in which dtype it ran."""
    seen: list[tuple[torch.dtype, bool]] = []

    def hook(module, args, output):
        if type(module).__name__ == "Decoder":
            seen.append((args[0].dtype, bool(torch.isfinite(output).all())))

    return seen, torch.nn.modules.module.register_module_forward_hook(hook)


def _pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.float32)


def test_fp16_jobs_give_finite_pictures(catalog):
    seen, hook = _decoder_outputs()
    try:
        result = execute(_job(), catalog, cache=ModelCache(catalog, FP16))
    finally:
        hook.remove()
    assert seen and all(finite for _, finite in seen)
    assert _pixels(result).std() > 1  # not a flat (NaN-turned-black) picture


@pytest.mark.parametrize("vae, decodes_in", [("sdxl_vae.safetensors", torch.float32),
                                             ("sdxl-vae-fp16-fix.safetensors", torch.float16)])
def test_the_vae_decodes_in_fp32_unless_the_catalog_marks_it_fp16_fix(catalog, vae, decodes_in):
    cache = ModelCache(catalog, FP16)
    seen, hook = _decoder_outputs()
    try:
        execute(_job(override_settings={"sd_model_checkpoint": "sd_xl_base_1.0", "sd_vae": vae}), catalog, cache=cache)
    finally:
        hook.remove()
    assert seen and {dtype for dtype, _ in seen} == {decodes_in}
    assert cache.vae(catalog.find(vae)).dtype == torch.float16  # an upcast is undone after the job


@pytest.mark.parametrize("compile_", ["regional", "full"])
def test_a_compiled_runner_gives_the_eager_picture(catalog, compile_):
    eager = _pixels(execute(_job(), catalog, cache=ModelCache(catalog, FP16)))
    compiled_cache = ModelCache(catalog, Runtime("cuda", torch.float16, Switches(channels_last=True, compile=compile_)))
    compiled = _pixels(execute(_job(), catalog, cache=compiled_cache))
    assert np.abs(compiled - eager).mean() < 2.0  # of 255: fp16 rounding in other kernels, nothing more


def test_twenty_warm_jobs_do_not_grow_gpu_memory(catalog):
    cache = ModelCache(catalog, FP16)
    inp = _job()
    execute(copy.deepcopy(inp), catalog, cache=cache)
    execute(copy.deepcopy(inp), catalog, cache=cache)
    torch.cuda.synchronize()
    settled = torch.cuda.memory_allocated()
    for _ in range(20):
        execute(copy.deepcopy(inp), catalog, cache=cache)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - settled < 1 << 20


def test_running_out_of_gpu_memory_exits_with_cuda_oom(catalog, tmp_path, monkeypatch):
    from img2img_runner import main

    job = tmp_path / "input.json"
    job.write_text(json.dumps({"input": _job(size=(2048, 2048))}))
    monkeypatch.setenv("IMG2IMG_OUTPUT", str(tmp_path / "out"))
    torch.cuda.empty_cache()
    # 96 MiB whatever the card (a fraction of an H200's 150 GB would be enough for this job): the tiny models load,
    # the 2048x2048 job cannot run
    torch.cuda.set_per_process_memory_fraction((96 << 20) / torch.cuda.get_device_properties(0).total_memory)
    try:
        code, message = main.run(str(job), str(catalog.base_dir / "catalog.yaml"))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert code == ExitCode.CUDA_OOM
    assert message.error.code == ExitCode.CUDA_OOM and "out of memory" in message.error.message
