"""Inpainting on pixels (img2img_runner.inpaint): A1111 1.10's mask arithmetic, the expected values worked by hand
from processing.py, masking.py and sd-webui-controlnet's prepare_mask."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from img2img_runner import inpaint
from img2img_runner.inpaint import MaskSettings


def settings(**changes) -> MaskSettings:
    values = dict(blur_x=0, blur_y=0, round=True, fill=inpaint.FILL, full_res=False, padding=0, invert=False)
    values.update(changes)
    return MaskSettings(**values)


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int], value: int = 255) -> Image.Image:
    """Black, with ``value`` in ``box`` (x1, y1, x2, y2; x2/y2 excluded)."""
    mask = Image.new("L", size, 0)
    mask.paste(value, box)
    return mask


def halves(width: int = 64, height: int = 64) -> Image.Image:
    """Left half red, right half blue."""
    a = np.zeros((height, width, 3), np.uint8)
    a[:, : width // 2] = (255, 0, 0)
    a[:, width // 2:] = (0, 0, 255)
    return Image.fromarray(a)


# --- the mask ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("blur, kernel", [(1, 7), (2, 11), (3, 17), (4, 21), (8, 41)])
def test_the_blur_kernel_is_a1111s(blur, kernel):
    # 2 * int(2.5 * blur + 0.5) + 1: blur 4 -> 2 * int(10.5) + 1 = 21
    assert inpaint.blur_kernel(blur) == kernel


def test_each_axis_is_blurred_on_its_own_within_its_kernel():
    dot = box_mask((64, 64), (32, 32, 33, 33))
    rows, columns = np.nonzero(np.asarray(inpaint.blur_mask(dot, 4, 0)))
    assert set(rows) == {32} and (columns.min(), columns.max()) == (22, 42)  # the 21-pixel kernel: 32 ± 10
    rows, columns = np.nonzero(np.asarray(inpaint.blur_mask(dot, 0, 4)))
    assert set(columns) == {32} and (rows.min(), rows.max()) == (22, 42)
    assert inpaint.blur_mask(dot, 0, 0).tobytes() == dot.tobytes()


def test_a_transparent_rgba_mask_is_its_alpha_thresholded_at_128():
    alpha = np.array([[0, 128, 129, 255]], np.uint8)
    rgba = np.zeros((1, 4, 4), np.uint8)
    rgba[..., 3] = alpha
    image = Image.fromarray(rgba, "RGBA")
    assert np.asarray(inpaint.binary_mask(image)).tolist() == [[0, 0, 255, 255]]
    assert np.asarray(inpaint.binary_mask(image, round_=False)).tolist() == [[0, 128, 129, 255]]
    opaque = Image.new("RGBA", (2, 2), (100, 100, 100, 255))  # all opaque: the grey levels
    assert np.asarray(inpaint.binary_mask(opaque)).tolist() == [[100, 100], [100, 100]]


def test_the_crop_region_is_the_masked_box_widened_by_the_padding_inside_the_image():
    mask = box_mask((64, 64), (10, 20, 20, 30))
    assert inpaint.crop_region(mask) == (10, 20, 20, 30)
    assert inpaint.crop_region(mask, 4) == (6, 16, 24, 34)
    assert inpaint.crop_region(mask, 15) == (0, 5, 35, 45)  # 10 - 15 and 20 - 15 clamp at the border
    assert inpaint.crop_region(Image.new("L", (64, 64)), 4) is None


@pytest.mark.parametrize("region, processing, expected", [
    # 10x10 for a 2:1 generation: 10 columns more, 5 each side
    ((10, 20, 20, 30), (64, 32), (5, 20, 25, 30)),
    # at the left border: the box moves right by what it lost
    ((0, 0, 10, 40), (64, 64), (0, 0, 40, 40)),
    # at the right border: 52..68 moved back to 48..64
    ((56, 0, 64, 16), (64, 64), (48, 0, 64, 16)),
    # 40x10 for a 1:2 generation: 80 rows wanted, -35..45 moved to 0..80, cut at the image's 64
    ((0, 0, 40, 10), (32, 64), (0, 0, 40, 64)),
])
def test_the_crop_region_grows_to_the_generations_aspect_ratio(region, processing, expected):
    assert inpaint.expand_crop_region(region, *processing, 64, 64) == expected


def test_the_latent_mask_is_the_mask_at_latent_size_rounded():
    half = box_mask((64, 64), (0, 0, 32, 64))
    assert inpaint.latent_mask(half, 8, 8, True).tolist() == [[1, 1, 1, 1, 0, 0, 0, 0]] * 8
    soft = inpaint.latent_mask(half, 8, 8, False)[0]
    assert soft[:3].tolist() == [1, 1, 1] and 0.5 < soft[3] < 1 and 0 < soft[4] < 0.5 and soft[5:].tolist() == [0] * 3
    assert inpaint.latent_mask(Image.new("L", (64, 64), 128), 8, 8, True)[0, 0] == 1  # 128 / 255 = 0.502
    assert inpaint.latent_mask(Image.new("L", (64, 64), 127), 8, 8, True)[0, 0] == 0  # 0.498
    assert inpaint.latent_mask(Image.new("L", (64, 64), 128), 8, 8, False)[0, 0] == pytest.approx(128 / 255)


# --- A1111's decisions -----------------------------------------------------------------------------------------


def test_whole_picture_keeps_the_mask_and_doubles_it_for_the_overlay():
    raw = Image.new("L", (64, 64), 100)
    raw.paste(200, (0, 0, 8, 8))
    decided, masks = inpaint.process_mask(raw, settings(), 64, 64, 0)
    assert decided.crop is None and decided.paste_to is None and decided.active
    assert masks.mask.tobytes() == raw.tobytes()
    overlay = np.asarray(masks.overlay)
    assert overlay[0, 0] == 255 and overlay[40, 40] == 200  # 200 * 2 clipped; 100 * 2
    assert decided.extra_generation_params() == {"Masked content": "fill"}


def test_only_masked_generates_the_padded_box_at_the_generation_ratio():
    raw = box_mask((100, 100), (40, 30, 60, 50))
    decided, masks = inpaint.process_mask(raw, settings(full_res=True, padding=5), 64, 32, 0)
    # padded: (35, 25, 65, 55), 30x30; a 2:1 generation wants 60 columns: 15 more each side
    assert decided.crop == (20, 25, 80, 55) and decided.paste_to == (20, 25, 60, 30)
    assert masks.mask.size == (64, 32) and masks.overlay.tobytes() == raw.tobytes()
    # the white square is at 20..40 x 5..25 of the 60x30 crop, so around the middle of the 64x32 mask
    assert masks.mask.getpixel((32, 16)) == 255 and masks.mask.getpixel((2, 2)) == 0
    assert decided.extra_generation_params() == {"Inpaint area": "Only masked", "Masked area padding": 5,
                                                 "Masked content": "fill"}


def test_only_masked_with_nothing_masked_falls_back_to_img2img():
    decided, masks = inpaint.process_mask(Image.new("L", (64, 64)), settings(full_res=True, blur_x=4, blur_y=4),
                                          64, 64, 0)
    assert masks is None and decided.blank and not decided.active
    assert decided.extra_generation_params() == {"Mask blur": 4}  # written before A1111 finds the mask blank


def test_an_inverted_mask_inpaints_the_rest_and_says_so():
    decided, masks = inpaint.process_mask(box_mask((64, 64), (0, 0, 32, 64)), settings(invert=True, fill=3), 64, 64,
                                          0)
    assert masks.mask.getpixel((10, 10)) == 0 and masks.mask.getpixel((50, 10)) == 255
    assert decided.extra_generation_params() == {"Mask mode": "Inpaint not masked", "Masked content": "latent nothing"}


@pytest.mark.parametrize("blur_x, blur_y, written", [(4, 4, 4), (2, 6, None)])
def test_the_mask_blur_is_written_when_both_axes_have_it(blur_x, blur_y, written):
    decided, _ = inpaint.process_mask(box_mask((64, 64), (16, 16, 48, 48)),
                                      settings(blur_x=blur_x, blur_y=blur_y, fill=1), 64, 64, 0)
    assert decided.extra_generation_params() == {"Mask blur": written}  # "original" writes no Masked content


# --- the init image and the answer -----------------------------------------------------------------------------


def test_fill_recolours_the_masked_pixels_from_their_surroundings():
    image = halves()
    decided, masks = inpaint.process_mask(box_mask((64, 64), (28, 0, 36, 64)), settings(), 64, 64, 0)
    (ready,) = inpaint.init_images([image], decided, masks, 64, 64, 0)
    before, after = np.asarray(image).astype(int), np.asarray(ready.image).astype(int)
    outside = np.ones(64, bool)
    outside[28:36] = False
    assert (after[:, outside] == before[:, outside]).all()
    assert after[32, 29, 0] > after[32, 29, 2] and after[32, 34, 2] > after[32, 34, 0]  # red side, blue side
    assert (after[:, 31] != before[:, 31]).any()
    alpha = np.asarray(ready.overlay)[:, :, 3]
    assert (alpha[:, outside] == 255).all() and (alpha[:, 28:36] == 0).all()
    (original,) = inpaint.init_images([image], inpaint.Inpainting(settings(fill=1), crop=None), masks, 64, 64, 0)
    assert original.image.tobytes() == image.tobytes()  # "original": the masked pixels stay


def test_the_overlay_puts_the_result_in_the_box_and_the_init_image_everywhere_else():
    init = Image.new("RGB", (100, 100), (128, 128, 128))
    decided, masks = inpaint.process_mask(box_mask((100, 100), (40, 30, 60, 50)), settings(full_res=True, padding=5),
                                          64, 32, 0)
    (ready,) = inpaint.init_images([init], decided, masks, 64, 32, 0)
    assert ready.image.size == (64, 32) and ready.overlay.size == (100, 100)
    result = Image.new("RGB", (64, 32), (255, 0, 0))
    out = np.asarray(inpaint.apply_overlay(result, decided.paste_to, ready.overlay))
    assert out.shape == (100, 100, 3)
    assert (out[30:50, 40:60] == [255, 0, 0]).all()  # the masked square: the result
    unmasked = np.ones((100, 100), bool)
    unmasked[30:50, 40:60] = False
    assert (out[unmasked] == [128, 128, 128]).all()  # in the crop box and outside it: the init image


# --- ControlNet ------------------------------------------------------------------------------------------------


def test_controlnet_reads_the_mask_blurred_once_more_than_a1111():
    raw = box_mask((64, 64), (24, 24, 40, 40))
    both = settings(full_res=True, blur_x=2, blur_y=2)
    a1111 = inpaint.blur_mask(raw, 2, 2).getbbox()
    controlnet = inpaint.controlnet_mask(raw, both).getbbox()
    assert controlnet[0] < a1111[0] and controlnet[2] > a1111[2]
    assert inpaint.controlnet_crops(both, True) and not inpaint.controlnet_crops(both, False)
    assert not inpaint.controlnet_crops(settings(full_res=False), True)


def test_controlnet_cannot_crop_to_a_blank_mask_unless_the_padding_makes_a_box():
    blank = Image.new("L", (64, 64))
    assert inpaint.controlnet_crop_region(blank, settings(full_res=True), 64, 64) is None
    # get_crop_region of a blank mask: (64 - 40, 64 - 40, 0 + 40, 0 + 40)
    assert inpaint.controlnet_crop_region(blank, settings(full_res=True, padding=40), 64, 64) == (24, 24, 40, 40)


def test_the_control_input_is_cut_and_brought_to_the_generation_size():
    image = halves(100, 100)
    cut = inpaint.control_input(image, (20, 25, 80, 55), (100, 100), 0, 64, 32)
    a = np.asarray(cut).astype(int)
    assert cut.size == (64, 32)
    assert a[16, 2, 0] > 200 and a[16, 61, 2] > 200  # columns 20..80 of a red | blue image: red left, blue right
