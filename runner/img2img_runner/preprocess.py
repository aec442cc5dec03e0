"""ControlNet preprocessors: the unit's input image -> the detected map at the generation size.

The order is sd-webui-controlnet's (``get_control``): the input image (the unit's own, else the img2img init image),
RGB on white; the preprocessor at ``processor_res`` (pixel perfect already applied by the plan) on the image scaled
so its short side is that resolution and edge-padded to multiples of 64, cropped back; then ``detectmap_proc``
resizes the map to the generation size with the unit's resize mode. That resized map is both the control image the
ControlNet sees and the detect map appended to the answer.

Detectors come from controlnet-aux. Those that need no weights run anywhere (canny, lineart_standard, shuffle, plus
the few CN computes with plain cv2: none, invert, threshold, blur_gaussian, scribble_xdog, tile_resample). Those that
need annotator weights (depth, openpose, lineart, hed, …) load them from the catalog's ``annotator`` entry that
``Catalog.resolve_payload`` chose (a folder of lllyasviel/Annotators files), once per runner (``ModelCache``); a
catalog without one refuses the job at validation, naming the entry it lacks.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from PIL import Image

from img2img.api.controlnet import find_preprocessor
from img2img.api.errors import FieldError
from img2img_runner.images import detectmap_resize, hwc3, resize_with_pad, rgb_array
from img2img_runner.plan import UnitPlan

if TYPE_CHECKING:
    from img2img_runner.pipelines import ModelCache


@dataclass(frozen=True)
class WeightedDetector:
    """A controlnet-aux detector that needs annotator weights."""

    class_name: str  # in controlnet_aux; from_pretrained(folder) reads the preprocessor's annotator_files
    call: Callable[[UnitPlan], dict[str, Any]]  # keyword arguments of __call__ for a unit


def _openpose(body: bool, hand: bool, face: bool) -> WeightedDetector:
    return WeightedDetector("OpenposeDetector", lambda u: {"include_body": body, "include_hand": hand,
                                                          "include_face": face})


_WEIGHTED: dict[str, WeightedDetector] = {
    "depth": WeightedDetector("MidasDetector", lambda u: {}),
    "normal_map": WeightedDetector("MidasDetector", lambda u: {"depth_and_normal": True, "bg_th": u.threshold_a}),
    "depth_leres": WeightedDetector("LeresDetector", lambda u: {"thr_a": u.threshold_a, "thr_b": u.threshold_b}),
    "depth_leres++": WeightedDetector("LeresDetector",
                                      lambda u: {"thr_a": u.threshold_a, "thr_b": u.threshold_b, "boost": True}),
    "depth_zoe": WeightedDetector("ZoeDetector", lambda u: {}),
    "openpose": _openpose(body=True, hand=False, face=False),
    "openpose_face": _openpose(body=True, hand=False, face=True),
    "openpose_faceonly": _openpose(body=False, hand=False, face=True),
    "openpose_hand": _openpose(body=True, hand=True, face=False),
    "openpose_full": _openpose(body=True, hand=True, face=True),
    "lineart": WeightedDetector("LineartDetector", lambda u: {"coarse": False}),
    "lineart_coarse": WeightedDetector("LineartDetector", lambda u: {"coarse": True}),
    "lineart_anime": WeightedDetector("LineartAnimeDetector", lambda u: {}),
    "hed": WeightedDetector("HEDdetector", lambda u: {"safe": False}),
    "hed_safe": WeightedDetector("HEDdetector", lambda u: {"safe": True}),
    "scribble_hed": WeightedDetector("HEDdetector", lambda u: {"scribble": True}),
    "pidinet": WeightedDetector("PidiNetDetector", lambda u: {"safe": False}),
    "pidinet_safe": WeightedDetector("PidiNetDetector", lambda u: {"safe": True}),
    "pidinet_scribble": WeightedDetector("PidiNetDetector", lambda u: {"scribble": True, "safe": True}),
    "mlsd": WeightedDetector("MLSDdetector", lambda u: {"thr_v": u.threshold_a, "thr_d": u.threshold_b}),
    "normal_bae": WeightedDetector("NormalBaeDetector", lambda u: {}),
}

NO_WEIGHTS = ("none", "invert", "canny", "threshold", "tile_resample", "shuffle", "blur_gaussian", "scribble_xdog",
              "lineart_standard")


def check_supported(unit: UnitPlan) -> None:
    """Fail before any model loads when a unit's module cannot run here."""
    if unit.module not in _WEIGHTED and unit.module not in NO_WEIGHTS:
        raise FieldError(unit_field(unit), f"preprocessor {unit.module!r} is not supported")


def detector(unit: UnitPlan, cache: ModelCache) -> Any | None:
    """The unit's controlnet-aux detector with the annotator weights the catalog resolved for it
    (``unit.annotator``), from ``cache``; None when its preprocessor needs no weights."""
    if unit.module not in _WEIGHTED:
        return None
    assert unit.annotator is not None, "Catalog.resolve_payload gives a weighted preprocessor its annotator"
    return cache.annotator(unit.annotator, detector_class(unit.module), annotator_files(unit), field=unit_field(unit))


def detector_class(module: str) -> str:
    """The controlnet-aux class of a preprocessor that needs annotator weights."""
    return _WEIGHTED[module].class_name


def annotator_files(unit: UnitPlan) -> tuple[str, ...]:
    preprocessor = find_preprocessor(unit.module)
    return preprocessor.annotator_files if preprocessor is not None else ()


def unit_field(unit: UnitPlan) -> str:
    return f"alwayson_scripts.controlnet.args[{unit.request_index}].module"


def detect_maps(unit: UnitPlan, image: Image.Image, sizes: list[tuple[int, int]], *, cache: ModelCache,
                seed: int = 0) -> list[np.ndarray]:
    """The unit's detected map at each (width, height) of ``sizes`` (HxWx3 uint8), from one preprocessor run: the
    control image and the detect map of each pass (txt2img's hires fix has two). A detector with annotator weights
    comes from ``cache`` (loaded once per runner)."""
    img = rgb_array(image)
    detected = run_preprocessor(unit, img, cache=cache, seed=seed)
    return [detectmap_resize(detected, unit.resize_mode, width, height) for width, height in sizes]


def run_preprocessor(unit: UnitPlan, img: np.ndarray, *, cache: ModelCache, seed: int = 0) -> np.ndarray:
    """The preprocessor's own output (before the resize to the generation size)."""
    check_supported(unit)
    module, res = unit.module, unit.processor_res
    if module == "none":
        return img
    if module == "invert":
        return 255 - hwc3(img)
    if module == "tile_resample":
        rate = float(unit.threshold_a or 1.0)
        if rate < 1.1:
            return img
        import cv2

        h, w = img.shape[:2]
        return cv2.resize(img, (int(w / rate), int(h / rate)), interpolation=cv2.INTER_AREA)

    padded, (h, w) = resize_with_pad(img, res)
    side = min(padded.shape[:2])
    if module == "canny":
        out = _aux("CannyDetector")(padded, low_threshold=unit.threshold_a, high_threshold=unit.threshold_b,
                                    detect_resolution=side, image_resolution=side, output_type="np")
    elif module == "threshold":
        out = np.zeros(padded.shape[:2], dtype=np.uint8)
        out[np.min(padded, axis=2) > unit.threshold_a] = 255
    elif module == "blur_gaussian":
        import cv2

        out = cv2.GaussianBlur(padded[:h, :w], (0, 0), float(unit.threshold_a))
        return out
    elif module == "scribble_xdog":
        import cv2

        g1 = cv2.GaussianBlur(padded.astype(np.float32), (0, 0), 0.5)
        g2 = cv2.GaussianBlur(padded.astype(np.float32), (0, 0), 5.0)
        dog = (255 - np.min(g2 - g1, axis=2)).clip(0, 255).astype(np.uint8)
        out = np.zeros_like(dog)
        out[2 * (255 - dog) > unit.threshold_a] = 255
    elif module == "lineart_standard":
        out = _aux("LineartStandardDetector")(padded, detect_resolution=side, output_type="np")
    elif module == "shuffle":
        return shuffle(padded[:h, :w], seed)
    else:
        out = detector(unit, cache)(padded, detect_resolution=side, image_resolution=side, output_type="np",
                                    **_WEIGHTED[module].call(unit))
    out = hwc3(np.asarray(out))
    if out.shape[:2] != padded.shape[:2]:
        import cv2

        out = cv2.resize(out, (padded.shape[1], padded.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out[:h, :w])


def shuffle(img: np.ndarray, seed: int) -> np.ndarray:
    """CN's content shuffle of the resized (unpadded) image: a smooth random flow field (``make_noise_disk``, the
    x field drawn first, period 256) remaps the pixels; numpy's global generator seeded with ``seed`` as CN seeds
    it (``set_numpy_seed``), so a request reproduces its map."""
    import cv2
    from controlnet_aux.util import make_noise_disk

    h, w = img.shape[:2]
    with _numpy_seed(seed):
        x = make_noise_disk(h, w, 1, 256) * float(w - 1)
        y = make_noise_disk(h, w, 1, 256) * float(h - 1)
    flow = np.concatenate([x, y], axis=2).astype(np.float32)
    return cv2.remap(img, flow, None, cv2.INTER_LINEAR)


def _aux(class_name: str, *args: Any, **kwargs: Any) -> Any:
    import controlnet_aux

    return getattr(controlnet_aux, class_name)(*args, **kwargs)


@contextlib.contextmanager
def _numpy_seed(seed: int):
    state = np.random.get_state()
    np.random.seed(seed & 0xFFFFFFFF)
    try:
        yield
    finally:
        np.random.set_state(state)
