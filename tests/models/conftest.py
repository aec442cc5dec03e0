"""Tiny diffusers models, built once per test session into a temporary folder, and a model cache shared by the tests.

Every test in this folder is marked ``models`` (it needs torch and the tiny models; no hub access, no GPU).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# one torch thread: on a shared CPU, OpenMP threads spinning against other processes make tiny models ~10x slower
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("IMG2IMG_TORCH_THREADS", "1")

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).resolve().parent == HERE:
            item.add_marker(pytest.mark.models)


@pytest.fixture(scope="session")
def tiny_catalog_path(tmp_path_factory) -> Path:
    from img2img_runner.tiny_models import ensure

    return ensure(tmp_path_factory.mktemp("tiny-models") / "models")


@pytest.fixture(scope="session")
def catalog(tiny_catalog_path):
    from img2img_runner.catalog import Catalog

    return Catalog.from_file(tiny_catalog_path)


@pytest.fixture(scope="session")
def model_cache(catalog):
    from img2img_runner.pipelines import ModelCache

    return ModelCache(catalog)


@pytest.fixture(scope="session")
def run(catalog, model_cache):
    """execute() with the session's catalog and loaded models."""
    from img2img_runner.execute import execute

    def _run(job_input, **kwargs):
        kwargs.setdefault("cache", model_cache)
        return execute(job_input, catalog, **kwargs)

    return _run
