"""bench/gpu_check.sh --dry-run: the GPU benchmark's code end to end on the CPU with the tiny models, and the
BENCHMARKS.md section rendered from its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import gpu_check  # noqa: E402
import gpu_report  # noqa: E402


def test_the_dry_run_measures_every_phase_through_the_runner(tmp_path):
    out = tmp_path / "gpu-check.json"
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run", "--json", str(out),
                           "--models", str(tmp_path / "models")],
                          cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "IMG2IMG_TORCH_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["mode"] == "dry-run" and results["models"]["size"] == "tiny"
    assert [p["name"] for p in results["phases"]] == [p.name for p in gpu_check.PHASES]
    for phase in results["phases"]:
        assert "failed" not in phase and phase["execution_ms"]["n"] == 1 and phase["execution_ms"]["p50"] > 0
    compiled = [p for p in results["phases"] if "compile" in p["name"]]
    assert compiled and all("compile_s" in p and "eager" in p["switches"] for p in compiled)
    assert any("attention classic" in p["switches"] for p in results["phases"])
    assert set(results["unet_it_s"]) == {"base", "refiner", "controlnet"} and min(results["unet_it_s"].values()) > 0
    assert results["checks"]["decoded_finite"] is True
    assert results["checks"]["png_ms"]["images"] == 2  # the generated image and the canny detect map
    pool = results["pool_runner"]  # the same job through img2img-runner serve, warm
    assert "failed" not in pool, pool
    assert pool["runner_cold_start_s"] > 0 and pool["execution_ms"]["n"] == 1
    assert pool["queued_to_outcome_ms"]["p50"] >= pool["execution_ms"]["p50"] > 0

    # a dry run's figures never reach BENCHMARKS.md; a GPU run's do, phase by phase against the target
    assert gpu_report.load(out) is None
    assert "Not run yet" in "\n".join(gpu_report.section(None))
    results.update(mode="gpu", gpu={"name": "NVIDIA H200", "memory_gb": 143.8, "driver": "570.1", "cuda": "12.8"})
    results["phases"][0]["execution_ms"]["p50"] = 1200.0
    gpu_json = tmp_path / "gpu.json"
    gpu_json.write_text(json.dumps(results))
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text("# Benchmarks\n\nkept\n")
    gpu_report.update(markdown, gpu_report.load(gpu_json))
    gpu_report.update(markdown, gpu_report.load(gpu_json))  # replaced, not added twice
    text = markdown.read_text()
    assert text.count(gpu_report.BEGIN) == 1 and "kept" in text and "NVIDIA H200" in text
    assert "warm pool runner" in text
    rows = [line for line in text.splitlines() if line.startswith("| fp16")]
    assert len(rows) == 6 and rows[0].endswith("| met |")
