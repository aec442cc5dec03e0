"""A1111's hires fix as data (pure): the upscalers, the size the second pass renders, and its step count.

Sources (A1111 1.10): modules/processing.py ``StableDiffusionProcessingTxt2Img`` (``calculate_target_resolution``,
``sample_hr_pass``), modules/shared.py (``latent_upscale_modes``), modules/upscaler.py (the plain upscalers),
modules/sd_samplers_common.py (``setup_img2img_steps``).

- Size: the first pass renders ``width`` x ``height``; the second pass aims at ``hr_upscale_to`` =
  ``int(width * hr_scale)`` x ``int(height * hr_scale)``, or at ``hr_resize_x`` x ``hr_resize_y`` (one of them 0:
  the other side keeps the aspect ratio; both set with another aspect ratio: the side that overflows is cut, in whole
  latent cells, half on each side). The image that comes back is what the latents cover: ``hr_upscale_to // 8``
  cells less the cut, times 8.
- Upscalers: the latent modes interpolate the first pass's latents; the plain ones ("None", "Lanczos", "Nearest")
  resize the decoded first-pass image, which is then encoded again. A1111's model upscalers (ESRGAN, R-ESRGAN,
  SwinIR, LDSR, ScuNET, DAT, user-installed ones) need weights the runner does not have: refused by name.
- Steps: the second pass is an img2img pass given a step count (``hr_second_pass_steps``, 0 = ``steps``), so
  A1111 runs that many steps (``t_enc = n - 1``) over a schedule of ``int(n / min(denoising_strength, 0.999))``.
"""

from __future__ import annotations

from dataclasses import dataclass

LATENT_FACTOR = 8  # pixels per latent cell (A1111's opt_f)

# torch.nn.functional.interpolate (mode, antialias) of each latent upscaler
LATENT_UPSCALE_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
DEFAULT_UPSCALER = "Latent"  # hr_upscaler absent: A1111's latent_upscale_default_mode
PLAIN_UPSCALERS = ("None", "Lanczos", "Nearest")  # image resizes without weights (modules/upscaler.py)


def upscaler_refusal(name: str | None) -> str | None:
    """Why ``hr_upscaler`` cannot run here; None when it can."""
    if name is None or name in LATENT_UPSCALE_MODES or name in PLAIN_UPSCALERS:
        return None
    valid = ", ".join(repr(n) for n in (*LATENT_UPSCALE_MODES, *PLAIN_UPSCALERS))
    return (f"upscaler {name!r} is not available: model upscalers (ESRGAN, R-ESRGAN, SwinIR, LDSR, ScuNET, DAT, "
            f"user-installed ones) need weights the runner does not have; valid: {valid}")


def latent_mode(name: str | None) -> tuple[str, bool] | None:
    """(interpolation mode, antialias) of a latent upscaler (absent: "Latent"); None for an image upscaler."""
    return LATENT_UPSCALE_MODES.get(DEFAULT_UPSCALER if name is None else name)


@dataclass(frozen=True)
class HiresSize:
    """Where the second pass goes: the upscale target and what is cut off it (A1111's truncate_x/y)."""

    target_width: int  # hr_upscale_to_x: the upscale's width (and SDXL's size conditioning)
    target_height: int
    cut_x: int  # latent cells cut from the upscaled latents' width (half on each side, the odd one on the right)
    cut_y: int

    @property
    def width(self) -> int:
        """The width of the answer's images."""
        return (self.target_width // LATENT_FACTOR - self.cut_x) * LATENT_FACTOR

    @property
    def height(self) -> int:
        return (self.target_height // LATENT_FACTOR - self.cut_y) * LATENT_FACTOR


def hires_size(width: int, height: int, hr_scale: float, hr_resize_x: int, hr_resize_y: int) -> HiresSize:
    """A1111 ``calculate_target_resolution`` for a first pass of ``width`` x ``height`` (as requested)."""
    if hr_resize_x == 0 and hr_resize_y == 0:
        return HiresSize(int(width * hr_scale), int(height * hr_scale), 0, 0)
    if hr_resize_y == 0:
        return HiresSize(hr_resize_x, hr_resize_x * height // width, 0, 0)
    if hr_resize_x == 0:
        return HiresSize(hr_resize_y * width // height, hr_resize_y, 0, 0)
    if width / height < hr_resize_x / hr_resize_y:  # the target is wider: full width, the height overflows
        to_x, to_y = hr_resize_x, hr_resize_x * height // width
    else:
        to_x, to_y = hr_resize_y * width // height, hr_resize_y
    return HiresSize(to_x, to_y, (to_x - hr_resize_x) // LATENT_FACTOR, (to_y - hr_resize_y) // LATENT_FACTOR)


def second_pass_steps(hr_second_pass_steps: int, steps: int) -> int:
    """The step count A1111 hands the second pass: ``hr_second_pass_steps``, 0 meaning ``steps``."""
    return hr_second_pass_steps or steps
