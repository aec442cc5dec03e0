"""Image geometry as A1111 and its ControlNet extension do it (numpy/cv2/Pillow; no torch).

- ``flatten`` / ``rgb_array``: what A1111 and CN do with alpha (composite on white) and EXIF orientation.
- ``resize_image``: A1111 ``images.resize_image`` (LANCZOS; no upscaler model, A1111's default
  ``upscaler_for_img2img`` is None), in the image's own mode (inpainting masks are greyscale);
  ``resize_init_image``: the same for an init image, flattened, with img2img ``resize_mode`` 3 stretched.
- ``hires_resize``: the same with the hires fix's plain upscalers ("None", "Lanczos", "Nearest": modules/upscaler.py).
- ``resize_with_pad``: CN ``resize_image_with_pad``: the short side scaled to the preprocessor resolution
  (INTER_CUBIC up, INTER_AREA down), edge-padded to multiples of 64 for the detector, cropped back after.
- ``detectmap_resize``: CN ``detectmap_proc``: the detected map brought to the generation size with the unit's resize
  mode (Just Resize = stretch, Crop and Resize = cover + centre crop, Resize and Fill = fit + pad with the border's
  median colour), with CN's "high quality" interpolation choice (nearest for few-colour maps such as segmentations,
  area down / cubic up otherwise, and Otsu re-binarisation for binary maps such as Canny edges; a map of one-pixel
  edges is thinned back to one-pixel edges: non-maximum suppression, Otsu, then hit-or-miss thinning, and pruning
  of spurs when the map grew: CN's ``nake_nms`` and ``lvmin_thin``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

LANCZOS = Image.Resampling.LANCZOS
# A1111's plain upscalers (modules/upscaler.py UpscalerLanczos, UpscalerNearest): the filter each upscales with
PLAIN_UPSCALE_FILTERS = {"Lanczos": LANCZOS, "Nearest": Image.Resampling.NEAREST}


def flatten(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """EXIF-oriented RGB; transparency composited on ``background`` (A1111 ``images.flatten``, white by default)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


def rgb_array(image: Image.Image) -> np.ndarray:
    """HxWx3 uint8, as CN's HWC3 gives it (alpha composited on white)."""
    return np.asarray(flatten(image), dtype=np.uint8).copy()


def hwc3(x: np.ndarray) -> np.ndarray:
    """Grey -> 3 channels; RGBA -> RGB on white (CN/controlnet-aux HWC3)."""
    if x.ndim == 2:
        x = x[:, :, None]
    if x.shape[2] == 1:
        return np.concatenate([x, x, x], axis=2)
    if x.shape[2] == 4:
        color = x[:, :, :3].astype(np.float32)
        alpha = x[:, :, 3:4].astype(np.float32) / 255.0
        return (color * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).astype(np.uint8)
    return x


def resize_init_image(image: Image.Image, mode: int, width: int, height: int) -> Image.Image:
    """A1111 ``resize_image(resize_mode, im, width, height)`` of a flattened init image; mode 3 (latent upscale)
    stretches, as mode 0."""
    return resize_image(flatten(image), 0 if mode == 3 else mode, width, height)


def resize_image(image: Image.Image, mode: int, width: int, height: int) -> Image.Image:
    """A1111 ``images.resize_image``: mode 0 stretches, 1 scales to cover and crops the overflow, any other scales to
    fit and fills the borders by stretching the edge rows/columns."""
    if mode == 0:
        return image.resize((width, height), resample=LANCZOS)
    ratio = width / height
    src_ratio = image.width / image.height
    if mode == 1:  # scale to cover, centre, crop the overflow
        src_w = width if ratio > src_ratio else image.width * height // image.height
        src_h = height if ratio <= src_ratio else image.height * width // image.width
    else:  # scale to fit, centre, fill the borders by stretching the edge rows/columns
        src_w = width if ratio < src_ratio else image.width * height // image.height
        src_h = height if ratio >= src_ratio else image.height * width // image.width
    resized = image.resize((src_w, src_h), resample=LANCZOS)
    # A1111 pastes onto a black RGB canvas; a greyscale image keeps its mode here (the same values once converted)
    out = Image.new("L" if image.mode == "L" else "RGB", (width, height))
    out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if mode != 1:
        if ratio < src_ratio:
            fill = height // 2 - src_h // 2
            if fill > 0:
                out.paste(resized.resize((width, fill), box=(0, 0, width, 0)), box=(0, 0))
                out.paste(resized.resize((width, fill), box=(0, resized.height, width, resized.height)),
                          box=(0, fill + src_h))
        elif ratio > src_ratio:
            fill = width // 2 - src_w // 2
            if fill > 0:
                out.paste(resized.resize((fill, height), box=(0, 0, 0, height)), box=(0, 0))
                out.paste(resized.resize((fill, height), box=(resized.width, 0, resized.width, height)),
                          box=(fill + src_w, 0))
    return out


def hires_resize(image: Image.Image, upscaler: str, width: int, height: int) -> Image.Image:
    """A1111 ``resize_image(0, image, width, height, upscaler_name)`` with a plain upscaler: "None" is one LANCZOS
    resize; "Lanczos" and "Nearest" first upscale by max(width / w, height / h) with their filter to a multiple of 8
    (``Upscaler.upscale``), then LANCZOS brings the image to width x height."""
    if upscaler == "None":
        return image.resize((width, height), resample=LANCZOS)
    scale = max(width / image.width, height / image.height)
    if scale > 1.0:
        image = _plain_upscale(image, scale, PLAIN_UPSCALE_FILTERS[upscaler])
    if image.size != (width, height):
        image = image.resize((width, height), resample=LANCZOS)
    return image


def _plain_upscale(image: Image.Image, scale: float, resample: Image.Resampling) -> Image.Image:
    """A1111 ``Upscaler.upscale``, its ``do_upscale`` one resize by ``scale`` with ``resample``."""
    dest = (int(image.width * scale // 8 * 8), int(image.height * scale // 8 * 8))
    for i in range(3):
        if image.width >= dest[0] and image.height >= dest[1] and (i > 0 or scale != 1):
            break
        shape = image.size
        image = image.resize((int(image.width * scale), int(image.height * scale)), resample=resample)
        if image.size == shape:
            break
    if image.size != dest:
        image = image.resize(dest, resample=LANCZOS)
    return image


def resize_with_pad(img: np.ndarray, resolution: int) -> tuple[np.ndarray, tuple[int, int]]:
    """CN ``resize_image_with_pad``: (padded image, (height, width) to crop the detector's output back to)."""
    import cv2

    img = hwc3(img)
    h_raw, w_raw = img.shape[:2]
    k = float(resolution) / float(min(h_raw, w_raw))
    interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
    h, w = int(np.round(h_raw * k)), int(np.round(w_raw * k))
    img = cv2.resize(img, (w, h), interpolation=interpolation)
    pad_h, pad_w = _pad64(h), _pad64(w)
    padded = np.pad(img, [[0, pad_h], [0, pad_w], [0, 0]], mode="edge")
    return np.ascontiguousarray(padded), (h, w)


def _pad64(x: int) -> int:
    return int(np.ceil(float(x) / 64.0) * 64 - x)


def _unique_colors(x: np.ndarray) -> int:
    flat = x.reshape(-1, x.shape[2])
    packed = flat[:, 0].astype(np.uint32) << 16 | flat[:, 1].astype(np.uint32) << 8 | flat[:, 2].astype(np.uint32)
    return len(np.unique(packed))


# CN's edge thinning (scripts/lvminthin.py): hit-or-miss patterns (1 = edge, -1 = background, 0 = either), each in
# its four rotations, applied one after the other: the first set thins, the second prunes one-pixel spurs.
_THINNING = (((-1, -1, -1), (0, 1, 0), (1, 1, 1)), ((0, -1, -1), (1, 1, -1), (0, 1, 0)))
_PRUNING = (((-1, -1, -1), (-1, 1, -1), (0, 0, -1)), ((-1, -1, -1), (-1, 1, -1), (-1, 0, 0)))
_THINNING_PASSES = 32


def _rotations(patterns: tuple) -> list[np.ndarray]:
    return [np.ascontiguousarray(np.rot90(np.array(p, dtype=np.int32), k)) for k in range(4) for p in patterns]


def _remove_matches(edges: np.ndarray, patterns: list[np.ndarray]) -> bool:
    """Clear every edge pixel where a pattern matches, pattern after pattern (in place); True if any was cleared."""
    import cv2

    cleared = False
    for pattern in patterns:
        hits = cv2.morphologyEx(edges, cv2.MORPH_HITMISS, pattern) > 127
        if hits.any():
            edges[hits] = 0
            cleared = True
    return cleared


def thin_edges(edges: np.ndarray, prune: bool) -> np.ndarray:
    """One-pixel-wide edges from a binary map (uint8 0/255, HxW), as CN's ``lvmin_thin``."""
    thinning = _rotations(_THINNING)
    for _ in range(_THINNING_PASSES):
        if not _remove_matches(edges, thinning):
            break
    if prune:
        _remove_matches(edges, _rotations(_PRUNING))
    return edges


def edge_maxima(grey: np.ndarray) -> np.ndarray:
    """Keep the pixels that are the maximum of their 3-pixel line in some direction (horizontal, vertical, either
    diagonal), zero the rest: CN's ``nake_nms``."""
    import cv2

    lines = [np.array(k, dtype=np.uint8) for k in (
        ((0, 0, 0), (1, 1, 1), (0, 0, 0)), ((0, 1, 0), (0, 1, 0), (0, 1, 0)),
        ((1, 0, 0), (0, 1, 0), (0, 0, 1)), ((0, 0, 1), (0, 1, 0), (1, 0, 0)))]
    is_max = np.zeros(grey.shape, dtype=bool)
    for line in lines:
        is_max |= cv2.dilate(grey, kernel=line) == grey
    return np.where(is_max, grey, 0).astype(grey.dtype)


def _one_pixel_edges(x: np.ndarray) -> bool:
    """CN's test for a map of one-pixel edges: an opening (erode, dilate) removes more than half of its edge values."""
    import cv2

    square = np.ones((3, 3), dtype=np.uint8)
    opened = cv2.dilate(cv2.erode(x, square, iterations=1), square, iterations=1)
    return int((opened < x).sum()) * 2 > int((x > 127).sum())


def high_quality_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """CN's resize of a detected map to ``size`` = (width, height)."""
    import cv2

    if x.shape[0] == size[1] and x.shape[1] == size[0]:
        return x
    smaller = size[0] * size[1] < x.shape[0] * x.shape[1]
    bigger = size[0] * size[1] > x.shape[0] * x.shape[1]
    colors = _unique_colors(x)
    binary = colors == 2 and x.min() < 16 and x.max() > 240
    one_pixel = binary and _one_pixel_edges(x)
    if 2 < colors < 200:
        interpolation = cv2.INTER_NEAREST
    elif smaller:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_CUBIC
    y = cv2.resize(x, size, interpolation=interpolation)
    if binary:
        grey = np.mean(y.astype(np.float32), axis=2).clip(0, 255).astype(np.uint8)
        if one_pixel:
            grey = edge_maxima(grey)
        _, grey = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        if one_pixel:
            grey = thin_edges(grey, prune=bigger)
        y = np.stack([grey] * 3, axis=2)
    return y


def detectmap_resize(detected: np.ndarray, resize_mode: str, width: int, height: int) -> np.ndarray:
    """CN ``detectmap_proc``: the map at the generation size (HxWx3 uint8), per the unit's resize mode."""
    detected = hwc3(detected)
    if resize_mode == "Just Resize":
        return np.ascontiguousarray(high_quality_resize(detected, (width, height)))
    old_h, old_w = float(detected.shape[0]), float(detected.shape[1])
    k0, k1 = height / old_h, width / old_w
    if resize_mode == "Resize and Fill":
        k = min(k0, k1)
        borders = np.concatenate([detected[0, :, :], detected[-1, :, :], detected[:, 0, :], detected[:, -1, :]], axis=0)
        color = np.median(borders, axis=0).astype(detected.dtype)
        canvas = np.tile(color[None, None], [height, width, 1])
        resized = high_quality_resize(detected, (int(np.round(old_w * k)), int(np.round(old_h * k))))
        new_h, new_w = resized.shape[:2]
        pad_h, pad_w = max(0, (height - new_h) // 2), max(0, (width - new_w) // 2)
        canvas[pad_h:pad_h + new_h, pad_w:pad_w + new_w] = resized[:height, :width]
        return np.ascontiguousarray(canvas)
    k = max(k0, k1)  # Crop and Resize
    resized = high_quality_resize(detected, (int(np.round(old_w * k)), int(np.round(old_h * k))))
    new_h, new_w = resized.shape[:2]
    pad_h, pad_w = max(0, (new_h - height) // 2), max(0, (new_w - width) // 2)
    return np.ascontiguousarray(resized[pad_h:pad_h + height, pad_w:pad_w + width])
