"""The input budget: how much one job may ask of the cluster, whoever checks it. Pure.

The same numbers and checks run wherever a job is validated: ``img2img validate`` and ``img2img submit`` (offline),
the operator at admission (a job over them ends FAILED ``InvalidSpec``), and the runner before any model work (an
image it fetched: bad input, never retried). docs/security.md lists them for users and admins.

Per image (the header decides, before a pixel is decoded):

- formats: PNG, JPEG, WebP and GIF (an animation's first frame) only. No other decoder is ever tried: TIFF, BMP, ICO,
  PSD and EPS (which Pillow hands to Ghostscript) are refused by name.
- decoded pixels: at most ``MAX_DECODED_PIXELS`` (4096²; a decompression bomb is a few KB of PNG).
- aspect ratio: at most ``MAX_ASPECT_RATIO``. It is what bounds the *resized* pixels: the runner scales an image to
  cover the job's size (A1111's "crop and resize") or the preprocessor's resolution (ControlNet), both at most 2048
  on a side, so an image of ratio r becomes at most 2048² · r pixels: 33.5 million (100 MB in RGB) at 8. A 22 KB
  PNG of 64×262144 (4096:1) would become 512×2097152 pixels (3 GiB) for a 512×512 job.

Per job:

- compute: width × height × steps × images (``batch_size × n_iter``), in megapixel-steps, summed over the sampling
  passes (txt2img's hires fix adds its second pass's size × steps), at most ``MAX_MEGAPIXEL_STEPS``; a namespace's
  policy may allow less (the operator's ``policy``).
- prompts: at most ``PROMPT_MAX_CHARS`` characters and ``MAX_PROMPT_BREAKS`` ``BREAK`` words each: each BREAK starts
  a new 77-token chunk, and every chunk lengthens the context every cross-attention layer reads at every step.
- nesting: lists and objects (``script_args``, ``comments``, options) at most ``MAX_NESTING_DEPTH`` levels deep; a
  deeper value cannot be serialized back (and past ~1000 levels not even parsed by Python's json).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# --- images ---------------------------------------------------------------------------------------------------
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")  # Pillow's format names; JPEG includes its MPO variant
ACCEPTED_FORMATS_TEXT = "PNG, JPEG, WebP or GIF (its first frame)"
MAX_DECODED_PIXELS = 4096 * 4096
MAX_ASPECT_RATIO = 8

# --- jobs -----------------------------------------------------------------------------------------------------
MAX_MEGAPIXEL_STEPS = 10_000  # e.g. 2048² x 150 steps x 15 images, or 1024² x 50 steps x 190 images
PROMPT_MAX_CHARS = 8192
MAX_PROMPT_BREAKS = 32
MAX_NESTING_DEPTH = 16

# --- S3 ---------------------------------------------------------------------------------------------------------
PRESIGN_MAX_SECONDS = 7 * 24 * 3600  # the longest a SigV4 presigned URL may live (S3 refuses longer)

_BREAK = re.compile(r"\bBREAK\b")


def image_size_refusal(width: int, height: int) -> str | None:
    """Why an image of this size is refused, or None."""
    if width * height > MAX_DECODED_PIXELS:
        return (f"an image of {width}x{height} pixels is larger than {MAX_DECODED_PIXELS} pixels "
                f"(4096x4096); scale it down")
    long, short = max(width, height), max(1, min(width, height))
    if long > short * MAX_ASPECT_RATIO:
        return (f"an image of {width}x{height} pixels has an aspect ratio of {long / short:.0f}:1; at most "
                f"{MAX_ASPECT_RATIO}:1 is accepted (the runner scales an image to cover the job's size)")
    return None


def nesting_depth(value: Any, stop_after: int = MAX_NESTING_DEPTH) -> int:
    """How deeply lists and objects nest in ``value``: a scalar 0, ``[]`` 1, ``[[1]]`` 2. Counted without
    recursion (a hostile value may be deeper than Python's stack); the count stops at ``stop_after + 1``."""
    deepest = 0
    pending = [(value, 1)]
    while pending and deepest <= stop_after:
        item, depth = pending.pop()
        if isinstance(item, (list, tuple, dict)):
            deepest = max(deepest, depth)
            pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def nesting_refusal(value: Any) -> str | None:
    if nesting_depth(value) > MAX_NESTING_DEPTH:
        return f"is nested more than {MAX_NESTING_DEPTH} levels deep (lists and objects inside each other)"
    return None


def prompt_refusal(text: str) -> str | None:
    """Why a prompt is too large (beyond its length, which the schema bounds), or None."""
    breaks = len(_BREAK.findall(text))
    if breaks > MAX_PROMPT_BREAKS:
        return (f"has {breaks} BREAKs; at most {MAX_PROMPT_BREAKS} (each starts a new 77-token chunk of the "
                "conditioning)")
    return None


@dataclass(frozen=True)
class Compute:
    """The sampling work a job asks for: pixels x steps of each sampling pass (txt2img's hires fix has two), times
    images (an upper bound: img2img runs ``steps x denoising_strength`` of them)."""

    passes: tuple[tuple[int, int, int], ...]  # (width, height, steps) of each pass
    images: int

    @property
    def megapixel_steps(self) -> float:
        return sum(width * height * steps for width, height, steps in self.passes) * self.images / 1e6

    def refusal(self, cap: float, whose: str) -> str | None:
        """Why the job is over ``cap`` megapixel-steps (``whose`` limit: for the message), or None."""
        if self.megapixel_steps <= cap:
            return None
        work = " + ".join(f"{width}x{height} pixels x {steps} steps" for width, height, steps in self.passes)
        if len(self.passes) > 1:
            work = f"({work})"
        return (f"asks for {self.megapixel_steps:,.0f} megapixel-steps ({work} x {self.images} images), more than "
                f"{cap:,.0f}, {whose}; ask for fewer images, steps or pixels")
