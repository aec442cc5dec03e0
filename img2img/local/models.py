"""The tiny random models the local stack's runners load, built once per machine into the cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from img2img.local.paths import cache_dir


def build_tiny_models() -> Path:
    """Tiny random models in diffusers format and their catalog, built once per recipe version into the cache."""
    proc = subprocess.run(
        [sys.executable, "-m", "img2img_runner.tiny_models", "--versioned", str(cache_dir() / "models")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    lines = proc.stdout.strip().splitlines()
    catalog = Path(lines[-1]) if lines else None
    if proc.returncode != 0 or catalog is None or not catalog.exists():
        raise RuntimeError(f"building the tiny models failed:\n{proc.stderr[-3000:]}")
    return catalog
