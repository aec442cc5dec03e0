"""Detect maps as sd-webui-controlnet makes them, through the runner: Canny edges stay one pixel wide when the map is
upscaled to the generation size, and the shuffle's random flow is seeded as CN seeds numpy (seed + subseed, a
subseed of -1 counting as the seed)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from model_samples import canny_unit, sd15_input

FAST = dict(steps=2, denoising_strength=0.5)


def detect_map(run, unit: dict, **changes) -> np.ndarray:
    result = run(sd15_input(alwayson_scripts={"controlnet": {"args": [unit]}}, **{**FAST, **changes}))
    return np.asarray(result.images[-1])[:, :, 0]


def test_an_upscaled_canny_map_has_one_pixel_edges(run):
    # a black | white picture: Canny at 64 px finds one vertical edge, one pixel wide; the picture is 128 px, so the
    # map is upscaled twice and then thinned as CN thins it: still one pixel per row (plain resizing gives 2-3)
    halves = np.zeros((64, 64, 3), dtype=np.uint8)
    halves[:, 30:] = 255
    edges = detect_map(run, canny_unit(processor_res=64), image=Image.fromarray(halves), width=128, height=128)
    assert edges.shape == (128, 128)
    per_row = (edges > 0).sum(axis=1)
    assert (per_row[4:124] == 1).all()  # away from the ends, which CN prunes


def test_the_shuffle_is_seeded_by_seed_and_subseed(run):
    unit = canny_unit(module="shuffle", processor_res=64)
    first = detect_map(run, unit, seed=5, subseed=-1)
    assert np.array_equal(detect_map(run, unit, seed=5, subseed=5), first)  # -1 counts as the seed
    assert not np.array_equal(detect_map(run, unit, seed=5, subseed=7), first)
