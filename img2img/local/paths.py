"""Where the local stack keeps things: a build cache shared by every run, and a state folder per stack."""

from __future__ import annotations

import os
from pathlib import Path

from img2img import PROJECT

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """Built binaries, downloads and tiny models, keyed by version: only the first run on a machine pays."""
    base = os.environ.get("IMG2IMG_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), PROJECT
    )
    return Path(base)


def default_state_dir() -> Path:
    """Where `img2img local up` keeps its processes' data, logs and env.sh."""
    base = os.environ.get("IMG2IMG_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), PROJECT, "local"
    )
    return Path(base)
