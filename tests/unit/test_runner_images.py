"""Image geometry: A1111's img2img resize modes and sd-webui-controlnet's detect-map resizing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from img2img_runner.images import (
    detectmap_resize,
    flatten,
    high_quality_resize,
    hires_resize,
    resize_init_image,
    resize_with_pad,
)


def halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue."""
    a = np.zeros((height, width, 3), np.uint8)
    a[:, : width // 2] = (255, 0, 0)
    a[:, width // 2:] = (0, 0, 255)
    return Image.fromarray(a)


def test_just_resize_stretches():
    out = resize_init_image(halves(100, 50), 0, 64, 64)
    assert out.size == (64, 64)
    a = np.asarray(out)
    assert a[32, 5].tolist() == [255, 0, 0] and a[32, 58].tolist() == [0, 0, 255]


def test_crop_and_resize_covers_and_centres():
    # 200x50 onto 64x64: scaled to 256x64, the middle 64 columns kept -> the red/blue border is in the middle
    a = np.asarray(resize_init_image(halves(200, 50), 1, 64, 64)).astype(int)
    assert a.shape == (64, 64, 3)
    assert a[32, 2, 0] > 200 and a[32, 61, 2] > 200


def test_resize_and_fill_stretches_the_edges_into_the_borders():
    # a wide image in a square: fitted to 64x16, centred; the bands above/below repeat its first/last rows
    image = Image.new("RGB", (128, 32), (0, 255, 0))
    image.paste((255, 255, 0), (0, 0, 128, 1))  # first row yellow
    a = np.asarray(resize_init_image(image, 2, 64, 64)).astype(int)
    fill = 64 // 2 - 16 // 2  # the image occupies rows 24..39
    assert np.abs(a[:fill] - a[fill]).max() <= 20  # the band repeats (a resample of) the first row
    assert a[fill, :, 0].mean() > 60  # ... which carries the yellow of the original first row
    assert (np.abs(a[32] - [0, 255, 0]).max(axis=1) < 30).all()
    assert np.abs(a[fill + 16:] - a[fill + 15]).max() <= 20  # and the bottom band its last row


def test_transparency_goes_on_white():
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert np.asarray(flatten(image)).min() == 255


def test_resize_with_pad_scales_the_short_side_and_pads_to_64():
    padded, (h, w) = resize_with_pad(np.zeros((640, 480, 3), np.uint8), 512)
    assert (h, w) == (683, 512)
    assert padded.shape[0] % 64 == 0 and padded.shape[1] % 64 == 0
    assert padded.shape[:2] == (704, 512)


@pytest.mark.parametrize("mode", ["Just Resize", "Crop and Resize", "Resize and Fill"])
def test_detectmap_resize_gives_the_generation_size(mode):
    edges = np.zeros((683, 512), np.uint8)
    edges[100:110, :] = 255
    out = detectmap_resize(edges, mode, 480, 640)
    assert out.shape == (640, 480, 3)
    assert set(np.unique(out)) <= {0, 255}  # an edge map stays binary (CN re-binarises with Otsu)


def test_resize_and_fill_pads_with_the_border_colour():
    grey = np.full((100, 200, 3), 90, np.uint8)
    out = detectmap_resize(grey, "Resize and Fill", 64, 64)
    assert out.shape == (64, 64, 3) and (out == 90).all()


def test_crop_and_resize_keeps_the_centre():
    a = np.zeros((100, 300, 3), np.uint8)
    a[:, 140:160] = 255  # a white band in the middle
    out = detectmap_resize(a, "Crop and Resize", 64, 64)
    assert out[:, 32].min() > 200 and out[:, 0].max() < 50


def test_an_upscaled_one_pixel_edge_map_keeps_one_pixel_edges():
    # CN detectmap_proc: a map of one-pixel edges (Canny's) is thinned again after the resize (nake_nms + Otsu +
    # lvmin_thin), so the ControlNet sees edges one pixel wide at the generation size too
    edges = np.zeros((32, 32, 3), dtype=np.uint8)
    edges[10, :] = 255  # a horizontal edge
    edges[:, 20] = 255  # a vertical one
    out = high_quality_resize(edges, (64, 64))[:, :, 0]
    assert set(np.unique(out)) == {0, 255}
    columns, rows = (out > 0).sum(axis=0), (out > 0).sum(axis=1)
    assert (columns[4:36] == 1).all()  # the horizontal edge, away from its ends and the crossing
    assert (rows[30:60] == 1).all()  # the vertical edge below it


def test_an_upscaled_filled_binary_map_is_not_thinned():
    block = np.zeros((32, 32, 3), dtype=np.uint8)
    block[8:24, 8:24] = 255  # thick: the opening keeps it, so it is no one-pixel edge map
    out = high_quality_resize(block, (64, 64))[:, :, 0]
    assert abs(int((out > 0).sum()) - 32 * 32) <= 2 * 32 * 2  # still a filled square, twice the side


# --- the hires fix's plain upscalers (A1111 images.resize_image with upscaler_name, modules/upscaler.py) ----------


def checker(side: int) -> Image.Image:
    a = (np.indices((side, side)).sum(axis=0) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([a] * 3, axis=2))


def test_nearest_upscales_by_repeating_pixels():
    out = np.asarray(hires_resize(checker(4), "Nearest", 8, 8))
    # 2x, a multiple of 8 already: NEAREST alone, each pixel a 2x2 block, nothing resampled after it
    assert out[:, :, 0].tolist() == np.kron(np.asarray(checker(4))[:, :, 0], np.ones((2, 2), np.uint8)).tolist()


def test_none_is_one_lanczos_resize_and_lanczos_matches_it_on_whole_multiples_of_8():
    image = halves(64, 64)
    plain = np.asarray(hires_resize(image, "None", 96, 96))
    assert np.array_equal(plain, np.asarray(image.resize((96, 96), resample=Image.Resampling.LANCZOS)))
    assert np.array_equal(np.asarray(hires_resize(image, "Lanczos", 96, 96)), plain)


def test_an_upscale_to_a_size_off_the_8_grid_goes_through_the_grid_first():
    # 64 -> 100 (x1.5625): the upscaler's own target is int(100 // 8 * 8) = 96, then LANCZOS to 100; "Nearest"
    # first repeats pixels (int(64 * 1.5625) = 100, then LANCZOS down to 96 and up to 100 again)
    nearest = hires_resize(checker(64), "Nearest", 100, 100)
    direct = checker(64).resize((100, 100), resample=Image.Resampling.LANCZOS)
    assert nearest.size == (100, 100) and not np.array_equal(np.asarray(nearest), np.asarray(direct))
    down = checker(64).resize((40, 40), resample=Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(hires_resize(checker(64), "Nearest", 40, 40)), np.asarray(down))  # LANCZOS alone
