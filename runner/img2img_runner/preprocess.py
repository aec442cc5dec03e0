"""ControlNet preprocessors: the unit's input image -> the detected map at the generation size.

The order is sd-webui-controlnet's (``get_control``): the input image (the unit's own, else the img2img init image),
RGB on white; the preprocessor at ``processor_res`` (pixel perfect already applied by the plan) on the image scaled
so its short side is that resolution and edge-padded to multiples of 64, cropped back; then ``detectmap_proc``
resizes the map to the generation size with the unit's resize mode. That resized map is both the control image the
ControlNet sees and the detect map appended to the answer.

Detectors come from controlnet-aux. Those that need no weights run anywhere (canny, lineart_standard, shuffle, plus
the few CN computes with plain cv2: none, invert, threshold, blur_gaussian, scribble_xdog, tile_resample). Those that
need annotator weights (depth, openpose, hed, …) load them from the catalog's ``annotator`` entry (lllyasviel/
Annotators file names) and otherwise fail naming the module and the missing file.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from img2img.api.errors import FieldError
from img2img_runner.catalog import Catalog, ModelError
from img2img_runner.images import detectmap_resize, hwc3, resize_with_pad, rgb_array
from img2img_runner.plan import UnitPlan


@dataclass(frozen=True)
class WeightedDetector:
    """A controlnet-aux detector that needs annotator weights."""

    class_name: str  # in controlnet_aux
    files: tuple[str, ...]  # files from_pretrained reads from the annotator folder (lllyasviel/Annotators names)
    call: Callable[[UnitPlan], dict[str, Any]]  # keyword arguments of __call__ for a unit
    load: dict[str, Any] | None = None  # extra from_pretrained arguments


_WEIGHTED: dict[str, WeightedDetector] = {
    "depth": WeightedDetector("MidasDetector", ("dpt_hybrid-midas-501f0c75.pt",), lambda u: {}),
    "normal_map": WeightedDetector("MidasDetector", ("dpt_hybrid-midas-501f0c75.pt",),
                                   lambda u: {"depth_and_normal": True, "bg_th": u.threshold_a}),
    "depth_leres": WeightedDetector("LeresDetector", ("res101.pth", "latest_net_G.pth"),
                                    lambda u: {"thr_a": u.threshold_a, "thr_b": u.threshold_b}),
    "depth_leres++": WeightedDetector("LeresDetector", ("res101.pth", "latest_net_G.pth"),
                                      lambda u: {"thr_a": u.threshold_a, "thr_b": u.threshold_b, "boost": True}),
    "depth_zoe": WeightedDetector("ZoeDetector", ("ZoeD_M12_N.pt",), lambda u: {}),
    "openpose": WeightedDetector("OpenposeDetector", ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
                                 lambda u: {"include_body": True, "include_hand": False, "include_face": False}),
    "openpose_face": WeightedDetector("OpenposeDetector", ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
                                      lambda u: {"include_body": True, "include_hand": False, "include_face": True}),
    "openpose_faceonly": WeightedDetector("OpenposeDetector",
                                          ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
                                          lambda u: {"include_body": False, "include_hand": False,
                                                     "include_face": True}),
    "openpose_hand": WeightedDetector("OpenposeDetector", ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
                                      lambda u: {"include_body": True, "include_hand": True, "include_face": False}),
    "openpose_full": WeightedDetector("OpenposeDetector", ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
                                      lambda u: {"include_body": True, "include_hand": True, "include_face": True}),
    "lineart": WeightedDetector("LineartDetector", ("sk_model.pth", "sk_model2.pth"), lambda u: {"coarse": False}),
    "lineart_coarse": WeightedDetector("LineartDetector", ("sk_model.pth", "sk_model2.pth"), lambda u: {"coarse": True}),
    "lineart_anime": WeightedDetector("LineartAnimeDetector", ("netG.pth",), lambda u: {}),
    "hed": WeightedDetector("HEDdetector", ("ControlNetHED.pth",), lambda u: {"safe": False}),
    "hed_safe": WeightedDetector("HEDdetector", ("ControlNetHED.pth",), lambda u: {"safe": True}),
    "scribble_hed": WeightedDetector("HEDdetector", ("ControlNetHED.pth",), lambda u: {"scribble": True}),
    "pidinet": WeightedDetector("PidiNetDetector", ("table5_pidinet.pth",), lambda u: {"safe": False}),
    "pidinet_safe": WeightedDetector("PidiNetDetector", ("table5_pidinet.pth",), lambda u: {"safe": True}),
    "pidinet_scribble": WeightedDetector("PidiNetDetector", ("table5_pidinet.pth",),
                                         lambda u: {"scribble": True, "safe": True}),
    "mlsd": WeightedDetector("MLSDdetector", ("mlsd_large_512_fp32.pth",),
                             lambda u: {"thr_v": u.threshold_a, "thr_d": u.threshold_b}),
    "normal_bae": WeightedDetector("NormalBaeDetector", ("scannet.pt",), lambda u: {}),
}

NO_WEIGHTS = ("none", "invert", "canny", "threshold", "tile_resample", "shuffle", "blur_gaussian", "scribble_xdog",
              "lineart_standard")

_loaded: dict[tuple[str, str], Any] = {}


def check_supported(unit: UnitPlan, catalog: Catalog) -> None:
    """Fail before any model loads when a unit's module cannot run here."""
    field = f"alwayson_scripts.controlnet.args[{unit.request_index}].module"
    if unit.module in _WEIGHTED:
        _annotator_folder(unit, catalog)
    elif unit.module not in NO_WEIGHTS:
        raise FieldError(field, f"preprocessor {unit.module!r} is not supported")


def detect_maps(unit: UnitPlan, image: Image.Image, sizes: list[tuple[int, int]], *, catalog: Catalog,
                seed: int = 0, device: str = "cpu") -> list[np.ndarray]:
    """The unit's detected map at each (width, height) of ``sizes`` (HxWx3 uint8), from one preprocessor run: the
    control image and the detect map of each pass (txt2img's hires fix has two)."""
    img = rgb_array(image)
    detected = run_preprocessor(unit, img, catalog=catalog, seed=seed, device=device)
    return [detectmap_resize(detected, unit.resize_mode, width, height) for width, height in sizes]


def run_preprocessor(unit: UnitPlan, img: np.ndarray, *, catalog: Catalog, seed: int = 0,
                     device: str = "cpu") -> np.ndarray:
    """The preprocessor's own output (before the resize to the generation size)."""
    check_supported(unit, catalog)
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
        out = _weighted(unit, padded, catalog=catalog, device=device, side=side)
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


def _annotator_folder(unit: UnitPlan, catalog: Catalog) -> Path:
    spec = _WEIGHTED[unit.module]
    field = f"alwayson_scripts.controlnet.args[{unit.request_index}].module"
    entry = catalog.annotator(unit.module)
    needs = ", ".join(spec.files)
    if entry is None:
        raise ModelError(field, f"preprocessor {unit.module!r} needs annotator weights ({needs}, from "
                                "lllyasviel/Annotators) and the model catalog has no entry with architecture "
                                "'annotator'")
    assert entry.source is not None
    folder = catalog.local_path(entry.source)
    if entry.source.kind in ("path", "file"):
        missing = [f for f in spec.files[:1] if not (folder / f).exists()]
        if missing:
            raise ModelError(field, f"preprocessor {unit.module!r} needs annotator weights {', '.join(missing)} in "
                                    f"the catalog's annotator entry {entry.name!r} ({folder}); not found")
    return folder


def _weighted(unit: UnitPlan, padded: np.ndarray, *, catalog: Catalog, device: str, side: int) -> np.ndarray:
    spec = _WEIGHTED[unit.module]
    entry = catalog.annotator(unit.module)
    folder = _annotator_folder(unit, catalog)
    if entry is not None and entry.source is not None and entry.source.kind == "s3":
        from img2img_runner.storage import sync_prefix

        sync_prefix(entry.source.location, folder)
    key = (spec.class_name, str(folder))
    detector = _loaded.get(key)
    if detector is None:
        import controlnet_aux

        try:
            detector = getattr(controlnet_aux, spec.class_name).from_pretrained(str(folder), **(spec.load or {}))
        except (OSError, FileNotFoundError) as exc:
            raise ModelError(f"alwayson_scripts.controlnet.args[{unit.request_index}].module",
                             f"preprocessor {unit.module!r}: cannot load annotator weights from {folder}: {exc}")
        if hasattr(detector, "to"):
            detector = detector.to(device) or detector
        _loaded[key] = detector
    return detector(padded, detect_resolution=side, image_resolution=side, output_type="np", **spec.call(unit))
