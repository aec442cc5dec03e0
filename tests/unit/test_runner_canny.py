"""The canny preprocessor's detect map: edges where cv2.Canny puts them, at the unit's thresholds, and for the seed
request's geometry the map sd-webui-controlnet makes (tests/data/canny/, made with its own code)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runner_samples import plan_for, seed_payload, tiny_catalog

from img2img_runner.pipelines import ModelCache
from img2img_runner.plan import ImageSizes
from img2img_runner.preprocess import detect_maps

CANNY = Path(__file__).resolve().parents[1] / "data" / "canny"


def canny(image: Image.Image, width: int, height: int, *, res: int, threshold: float) -> np.ndarray:
    """The runner's detect map of a canny unit (the unit has no image of its own: the init image goes in)."""
    unit = {"module": "canny", "model": "diffusers_xl_canny_mid", "weight": 1, "processor_res": res,
            "threshold_a": threshold, "threshold_b": threshold, "guidance_start": 0, "guidance_end": 1,
            "control_mode": "Balanced", "pixel_perfect": False}
    payload = seed_payload(width=width, height=height, resize_mode=1,  # Crop and Resize
                           alwayson_scripts={"controlnet": {"args": [unit]}})
    (planned,) = plan_for(payload, sizes=ImageSizes(init=(image.size,))).units
    [out] = detect_maps(planned, image, [(width, height)], cache=ModelCache(tiny_catalog()))
    assert out.shape == (height, width, 3) and (out[:, :, 0] == out[:, :, 2]).all()
    return out[:, :, 0]


def bands() -> Image.Image:
    """96x72, grey 200 with a black band (columns 24..47) and a faint one (64..79, grey 185), full height.

    cv2.Canny's Sobel sees a step of d as a gradient of 4d, on both pixels beside the step; its non-maximum
    suppression keeps the first of two equal pixels in scan order. So the black band's edges are columns 23 (left of
    the step) and 47 (its own last column), gradient 800; the faint band's are columns 63 and 79, gradient 60.
    """
    a = np.full((72, 96, 3), 200, np.uint8)
    a[:, 24:48] = 0
    a[:, 64:80] = 185
    return Image.fromarray(a)


@pytest.mark.parametrize("threshold, columns", [
    (75, [23, 47]),  # the faint band's gradient (60) is below the threshold
    (50, [23, 47, 63, 79]),
])
def test_canny_marks_each_step_on_the_pixel_cv2_keeps_at_the_units_thresholds(threshold, columns):
    # processor_res 72 = the short side: no scaling; padded to 128x128 (edge mode adds no edge) and cropped back
    edges = canny(bands(), 96, 72, res=72, threshold=threshold)
    expected = np.zeros((72, 96), np.uint8)
    expected[:, columns] = 255
    assert (edges == expected).all(), sorted(set(np.nonzero(edges)[1].tolist()))


def test_the_seed_geometry_detect_map_is_sd_webui_controlnets():
    # CN thins a scaled one-pixel-edge map (nake_nms, Otsu, lvmin_thin in high_quality_resize), and so does the runner
    ours = canny(Image.open(CANNY / "seed_480x640.png").convert("RGB"), 480, 640, res=512, threshold=75)
    assert (ours == np.asarray(Image.open(CANNY / "seed_480x640_canny_512_75_75.png"))).all()
