"""Tests on a CUDA GPU (marked ``gpu``): skipped, and reported as skipped, where torch sees none.

They run the runner's GPU path on the tiny models (fp16 by default); the full-size figures are bench/gpu_check.sh's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "models"))  # model_samples: the seed request with a real picture


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="no CUDA GPU (torch.cuda.is_available() is false)")
    cuda = _cuda()
    for item in items:
        if Path(str(item.fspath)).resolve().parent == HERE:
            item.add_marker(pytest.mark.gpu)
            if not cuda:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def catalog(tmp_path_factory):
    from img2img_runner.catalog import Catalog
    from img2img_runner.tiny_models import ensure

    return Catalog.from_file(ensure(tmp_path_factory.mktemp("tiny-models") / "models"))
