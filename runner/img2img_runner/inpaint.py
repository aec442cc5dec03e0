"""Inpainting on pixels, as A1111 1.10 does it (pure: PIL, numpy, cv2; no torch).

A1111 sources (v1.10.1): modules/processing.py (``create_binary_mask``, ``StableDiffusionProcessingImg2Img.init``,
``apply_overlay``, ``uncrop``), modules/masking.py (``get_crop_region_v2``, ``get_crop_region``,
``expand_crop_region``, ``fill``), modules/images.py (``fix_image``); sd-webui-controlnet scripts/controlnet.py
(``prepare_mask``, ``Script.try_crop_image_with_a1111_mask``).

The order is A1111's ``init``:

1. the mask as a binary (or alpha) greyscale image, inverted with ``inpainting_mask_invert``, blurred with
   ``mask_blur_x`` / ``mask_blur_y`` (a Gaussian of kernel ``2 * int(2.5 * blur + 0.5) + 1`` along each axis);
2. ``inpaint_full_res`` ("Only masked"): the box around the masked pixels, widened by ``inpaint_full_res_padding`` and
   grown to the generation's aspect ratio, is cut out of the init image and of the mask and generated at
   width x height; a blank mask falls back to plain img2img. Otherwise ("Whole picture") mask and image are resized
   to width x height with ``resize_mode``, and the overlay mask is the resized mask doubled;
3. the overlay: the init image with the overlay mask's complement as alpha (unmasked pixels opaque);
4. ``inpainting_fill`` 0 (fill) replaces the masked pixels by blurred colours of the rest before encoding;
   1 (original) keeps them; 2 (latent noise) and 3 (latent nothing) act on the latents (``inpaint_sampling``);
5. the latent mask: the processed mask at the latent size (bicubic), rounded with ``mask_round``;
6. after sampling and decoding, the result is pasted back (resized into the crop box) under the overlay: every
   pixel the mask leaves out is the init image's own.

A ControlNet unit's input image is cut out as sd-webui-controlnet cuts it (``control_input``): with its own
reading of the mask (grey levels, blurred once more), which can give a slightly larger box than A1111's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from img2img_runner.images import flatten, resize_image

if TYPE_CHECKING:
    from img2img.api.payload import Img2ImgPayload

# inpainting_fill -> A1111's "Masked content" (the UI's names; "original" is never written to the infotext)
FILL_NAMES = ("fill", "original", "latent noise", "latent nothing")
FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING = range(4)
# A1111 resize_image mode 2 ("resize and fill"): how a crop is brought to the generation size and back
RESIZE_AND_FILL = 2
CROP_AND_RESIZE = 1

Box = tuple[int, int, int, int]  # (x1, y1, x2, y2), PIL's crop box


@dataclass(frozen=True)
class MaskSettings:
    """The request's mask parameters, as A1111's processing object holds them."""

    blur_x: int
    blur_y: int
    round: bool  # mask_round
    fill: int  # inpainting_fill
    full_res: bool  # inpaint_full_res: "Only masked"
    padding: int  # inpaint_full_res_padding
    invert: bool  # inpainting_mask_invert

    @classmethod
    def of(cls, payload: "Img2ImgPayload") -> "MaskSettings":
        blur_x, blur_y = payload.mask_blur_xy
        return cls(blur_x=blur_x, blur_y=blur_y, round=payload.mask_round, fill=payload.inpainting_fill,
                   full_res=payload.inpaint_full_res, padding=payload.inpaint_full_res_padding,
                   invert=bool(payload.inpainting_mask_invert))

    @property
    def blur(self) -> int | None:
        """A1111's ``mask_blur`` property: the blur when both axes have it, else None."""
        return self.blur_x if self.blur_x == self.blur_y else None


@dataclass(frozen=True)
class Inpainting:
    """What A1111 decided about a job's mask: the settings, and the region generated at full resolution."""

    settings: MaskSettings
    crop: Box | None  # "Only masked": the region of the init image that is generated; None for "Whole picture"
    blank: bool = False  # "Only masked" with nothing masked: A1111 runs plain img2img (no blend, no overlay)

    @property
    def active(self) -> bool:
        return not self.blank

    @property
    def paste_to(self) -> tuple[int, int, int, int] | None:
        """A1111's ``paste_to``: (x, y, width, height) of the crop."""
        if self.crop is None:
            return None
        x1, y1, x2, y2 = self.crop
        return x1, y1, x2 - x1, y2 - y1

    def extra_generation_params(self) -> dict[str, object]:
        """A1111's infotext entries for the mask, in the order ``init`` writes them."""
        s = self.settings
        extra: dict[str, object] = {}
        if s.invert:
            extra["Mask mode"] = "Inpaint not masked"
        if s.blur_x > 0 or s.blur_y > 0:
            extra["Mask blur"] = s.blur  # None (left out of the infotext) when the two axes differ
        if self.crop is not None:
            extra["Inpaint area"] = "Only masked"
            extra["Masked area padding"] = s.padding
        if self.active and s.fill != ORIGINAL:
            extra["Masked content"] = FILL_NAMES[s.fill]
        return extra


@dataclass(frozen=True)
class Masks:
    """The processed mask images of an active inpainting job."""

    mask: Image.Image  # "L", width x height: A1111's ``image_mask`` (latent mask, inpainting conditioning, fill)
    overlay: Image.Image  # "L": A1111's ``mask_for_overlay``: at the mask's size ("Only masked"), else width x height


@dataclass(frozen=True)
class InitImage:
    """One init image made ready for an inpainting job."""

    image: Image.Image  # RGB, width x height: what is encoded (cropped, resized, filled)
    overlay: Image.Image  # RGBA: the init image with the unmasked pixels opaque, pasted over the result


# --- the mask ------------------------------------------------------------------------------------------------


def read_mask(image: Image.Image) -> Image.Image:
    """A1111 ``images.fix_image`` on a decoded mask (upright already: ``img2img.api.images.decode_image``): an RGB/P
    image with a transparency byte string becomes RGBA (so that its alpha is the mask)."""
    if image.mode in ("RGB", "P") and isinstance(image.info.get("transparency"), bytes):
        image = image.convert("RGBA")
    return image


def binary_mask(image: Image.Image, round_: bool = True) -> Image.Image:
    """A1111 ``create_binary_mask``: an RGBA mask that is not fully opaque is its alpha (thresholded at 128 when
    ``round_``); any other mask is its grey levels."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        alpha = image.split()[-1].convert("L")
        return alpha.point(lambda x: 255 if x > 128 else 0) if round_ else alpha
    return image.convert("L")


def blur_kernel(blur: int) -> int:
    """The Gaussian kernel A1111 blurs the mask with along one axis: 2 * int(2.5 * blur + 0.5) + 1 pixels."""
    return 2 * int(2.5 * blur + 0.5) + 1


def blur_mask(mask: Image.Image, blur_x: int, blur_y: int) -> Image.Image:
    """A1111's mask blur: a horizontal then a vertical Gaussian of sigma ``blur_x`` / ``blur_y`` (cv2)."""
    import cv2

    array = np.array(mask)
    if blur_x > 0:
        array = cv2.GaussianBlur(array, (blur_kernel(blur_x), 1), blur_x)
    if blur_y > 0:
        array = cv2.GaussianBlur(array, (1, blur_kernel(blur_y)), blur_y)
    return Image.fromarray(array)


def crop_region(mask: Image.Image, pad: int = 0) -> Box | None:
    """masking ``get_crop_region_v2``: the box around the non-zero pixels, widened by ``pad`` within the image; None
    for a blank mask."""
    box = mask.getbbox()
    if box is None:
        return None
    if not pad:
        return box
    x1, y1, x2, y2 = box
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.width), min(y2 + pad, mask.height)


def _grow(low: int, high: int, diff: int, limit: int) -> tuple[int, int]:
    """One axis of A1111's ``expand_crop_region``: grow [low, high) by ``diff`` around its centre, shifted back
    inside [0, limit] where it runs over an edge."""
    low -= diff // 2
    high += diff - diff // 2
    if high >= limit:
        low -= high - limit
        high = limit
    if low < 0:
        high -= low
        low = 0
    if high >= limit:
        high = limit
    return low, high


def expand_crop_region(region: Box, width: int, height: int, image_width: int, image_height: int) -> Box:
    """masking ``expand_crop_region``: ``region`` grown on its short side (centred, kept inside the image) to the
    aspect ratio of ``width`` x ``height``."""
    x1, y1, x2, y2 = region
    ratio_region = (x2 - x1) / (y2 - y1)
    ratio_processing = width / height
    if ratio_region > ratio_processing:
        y1, y2 = _grow(y1, y2, int((x2 - x1) / ratio_processing - (y2 - y1)), image_height)
    else:
        x1, x2 = _grow(x1, x2, int((y2 - y1) * ratio_processing - (x2 - x1)), image_width)
    return x1, y1, x2, y2


def process_mask(raw: Image.Image, settings: MaskSettings, width: int, height: int,
                 resize_mode: int) -> tuple[Inpainting, Masks | None]:
    """A1111's mask handling in img2img ``init``: the decisions, and the processed masks (None when the mask is blank
    under "Only masked")."""
    mask = binary_mask(read_mask(raw), settings.round)
    if settings.invert:
        mask = ImageOps.invert(mask)
    mask = blur_mask(mask, settings.blur_x, settings.blur_y)
    if settings.full_res:
        region = crop_region(mask, settings.padding)
        if region is None:
            return Inpainting(settings, crop=None, blank=True), None
        region = expand_crop_region(region, width, height, mask.width, mask.height)
        processed = resize_image(mask.crop(region), RESIZE_AND_FILL, width, height)
        return Inpainting(settings, crop=region), Masks(mask=processed, overlay=mask)
    processed = resize_image(mask, resize_mode, width, height)
    doubled = np.clip(np.asarray(processed).astype(np.float32) * 2, 0, 255).astype(np.uint8)
    return Inpainting(settings, crop=None), Masks(mask=processed, overlay=Image.fromarray(doubled))


def latent_mask(mask: Image.Image, width: int, height: int, round_: bool) -> np.ndarray:
    """A1111's latent mask (``nmask``: 1 where the sampler's result is kept, ``1 - nmask`` where the init latent is):
    the processed mask resized to the latent size with Pillow's default (bicubic) filter, in 0..1, rounded half to
    even with ``mask_round``. (height, width) float32."""
    small = np.asarray(mask.convert("RGB").resize((width, height), resample=Image.Resampling.BICUBIC),
                       dtype=np.float32)[:, :, 0] / 255
    return np.around(small) if round_ else small


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """masking ``fill``: the masked pixels replaced by ever less blurred colours of the unmasked ones."""
    image_mod = Image.new("RGBA", (image.width, image.height))
    image_masked = Image.new("RGBa", (image.width, image.height))
    image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    image_masked = image_masked.convert("RGBa")
    for radius, repeats in [(256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)]:
        blurred = image_masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            image_mod.alpha_composite(blurred)
    return image_mod.convert("RGB")


# --- the init images and the answer --------------------------------------------------------------------------


def init_images(images: list[Image.Image], inpainting: Inpainting, masks: Masks, width: int, height: int,
                resize_mode: int) -> list[InitImage]:
    """A1111's loop over the init images in ``init``: each flattened, resized ("Whole picture") or cut out and
    resized ("Only masked"), its overlay made, its masked pixels filled (``inpainting_fill`` 0)."""
    overlay_mask = masks.overlay
    ready = []
    for raw in images:
        image = flatten(raw)
        if inpainting.crop is None and resize_mode != 3:
            image = resize_image(image, resize_mode, width, height)
        if overlay_mask.size != image.size:  # A1111 keeps the resized overlay mask for the next image
            overlay_mask = resize_image(overlay_mask, resize_mode, image.width, image.height)
        masked = Image.new("RGBa", image.size)
        masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(overlay_mask.convert("L")))
        overlay = masked.convert("RGBA")
        if inpainting.crop is not None:
            image = resize_image(image.crop(inpainting.crop), RESIZE_AND_FILL, width, height)
        if inpainting.settings.fill != ORIGINAL:
            image = fill(image, masks.mask)
        ready.append(InitImage(image=image, overlay=overlay))
    return ready


def apply_overlay(image: Image.Image, paste_to: tuple[int, int, int, int] | None, overlay: Image.Image) -> Image.Image:
    """A1111 ``apply_overlay``: the generated image (resized into the crop box on a transparent canvas, "Only
    masked") under the overlay."""
    if paste_to is not None:
        x, y, w, h = paste_to
        canvas = Image.new("RGBA", overlay.size)
        canvas.paste(resize_image(image, CROP_AND_RESIZE, w, h), (x, y))
        image = canvas
    image = image.convert("RGBA")
    image.alpha_composite(overlay)
    return image.convert("RGB")


# --- ControlNet ----------------------------------------------------------------------------------------------


def controlnet_crops(settings: MaskSettings, crop_input_image: bool) -> bool:
    """Does sd-webui-controlnet cut the unit's input image to the mask (``try_crop_image_with_a1111_mask``): with
    "Only masked" and the unit's ``inpaint_crop_input_image`` (on by default)."""
    return settings.full_res and crop_input_image


def controlnet_mask(raw: Image.Image, settings: MaskSettings) -> Image.Image:
    """sd-webui-controlnet ``prepare_mask``: grey levels (not alpha), inverted, blurred as A1111 blurs, then blurred
    again with Pillow's Gaussian of radius ``mask_blur`` when both axes have the same blur."""
    mask = read_mask(raw).convert("L")
    if settings.invert:
        mask = ImageOps.invert(mask)
    mask = blur_mask(mask, settings.blur_x, settings.blur_y)
    # CN compares A1111's mask_blur (None when the axes differ) with 0, a TypeError: the payload refuses that
    assert settings.blur is not None, "a cropping ControlNet unit with mask_blur_x != mask_blur_y"
    if settings.blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(settings.blur))
    return mask


def controlnet_crop_region(mask: Image.Image, settings: MaskSettings, width: int, height: int) -> Box | None:
    """The box sd-webui-controlnet cuts from the unit's input: masking ``get_crop_region`` (which, for a blank mask,
    returns an inverted box that A1111 then fails to crop with: None here) grown to the generation's ratio."""
    region = crop_region(mask, settings.padding)
    if region is None:
        pad = settings.padding
        region = (max(mask.width - pad, 0), max(mask.height - pad, 0), min(pad, mask.width), min(pad, mask.height))
    if region[2] <= region[0] or region[3] <= region[1]:
        return None
    return expand_crop_region(region, width, height, mask.width, mask.height)


def control_input(image: Image.Image, region: Box, mask_size: tuple[int, int], resize_mode: int, width: int,
                  height: int) -> Image.Image:
    """The unit's input image as sd-webui-controlnet cuts it: resized to the mask's size with the unit's resize mode
    (A1111's numbering), cut to ``region``, resized and filled to width x height."""
    resized = resize_image(flatten(image), resize_mode, *mask_size)
    return resize_image(resized.crop(region), RESIZE_AND_FILL, width, height)
