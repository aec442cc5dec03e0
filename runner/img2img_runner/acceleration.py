"""Speed on the GPU path: switches from the environment, applied to each model as it reaches the device.

| switch        | environment             | default           | what it does                                           |
|---------------|-------------------------|-------------------|--------------------------------------------------------|
| dtype         | ``IMG2IMG_DTYPE``       | fp16 (CUDA)       | fp16, bf16 or fp32 weights and activations (CPU: fp32); |
|               |                         |                   | read by ``pipelines.runtime``                          |
| SDPA          | ``IMG2IMG_SDPA``        | 1                 | PyTorch ``scaled_dot_product_attention`` (diffusers'   |
|               |                         |                   | ``AttnProcessor2_0``); 0 = the classic attention, only |
|               |                         |                   | to measure what SDPA gives                             |
| channels_last | ``IMG2IMG_CHANNELS_LAST`` | 1 on CUDA, 0 on CPU | NHWC memory format for UNets, ControlNets and VAEs   |
| compile       | ``IMG2IMG_COMPILE``     | off               | ``regional``: torch.compile each repeated transformer  |
|               |                         |                   | block (diffusers' ``compile_repeated_blocks``: most of |
|               |                         |                   | full compile's speed for a fraction of its compile     |
|               |                         |                   | time); ``full``: the whole UNets and ControlNets       |
| compile mode  | ``IMG2IMG_COMPILE_MODE`` | default          | torch.compile ``mode`` (``max-autotune-no-cudagraphs`` |
|               |                         |                   | tunes kernels: minutes more of compile)                |

Always on, so not switches: classifier-free guidance as one batch of two (diffusers' pipelines), the fp16-fix VAE
decoding in fp16 where the catalog marks it (``pipelines.ModelCache._load_vae``; any other VAE is upcast to fp32 for
fp16 runs, as diffusers does), schedulers that keep their sigmas on the CPU (diffusers) so that the step loop does not
wait for the GPU, and encoding a job's images in parallel (``storage.image_files``).

None of these trades quality: a job computes the same steps; only floating-point rounding differs (fp16/bf16, other
kernels). A compiled model recompiles for a new image size (the first job at that size pays the compile).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

COMPILE_CHOICES = ("off", "regional", "full")
# what regional compilation compiles in a model that names no _repeated_blocks (ControlNetModel): the blocks the UNet
# names (UNet2DConditionModel._repeated_blocks)
REPEATED_BLOCKS = ("BasicTransformerBlock",)
_DENOISERS = ("UNet2DConditionModel", "ControlNetModel")
_VAES = ("AutoencoderKL",)


@dataclass(frozen=True)
class Switches:
    sdpa: bool = True
    channels_last: bool = False
    compile: str = "off"  # one of COMPILE_CHOICES
    compile_mode: str = "default"
    compile_backend: str = "inductor"  # "eager" traces with dynamo without generating kernels (the CPU dry run)

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_CHOICES:
            raise ValueError(f"compile {self.compile!r}: expected one of {', '.join(COMPILE_CHOICES)}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, device: str = "cpu") -> Switches:
        """The switches ``IMG2IMG_SDPA``, ``IMG2IMG_CHANNELS_LAST``, ``IMG2IMG_COMPILE``, ``IMG2IMG_COMPILE_MODE``,
        ``IMG2IMG_COMPILE_BACKEND``; ValueError naming the variable for a value it cannot take."""
        compile_ = (env.get("IMG2IMG_COMPILE") or "off").strip().lower()
        if compile_ not in COMPILE_CHOICES:
            raise ValueError(f"IMG2IMG_COMPILE={compile_!r}: expected one of {', '.join(COMPILE_CHOICES)}")
        return cls(sdpa=_flag(env, "IMG2IMG_SDPA", True),
                   channels_last=_flag(env, "IMG2IMG_CHANNELS_LAST", device == "cuda"),
                   compile=compile_,
                   compile_mode=(env.get("IMG2IMG_COMPILE_MODE") or "default").strip(),
                   compile_backend=(env.get("IMG2IMG_COMPILE_BACKEND") or "inductor").strip())

    def describe(self) -> str:
        compiled = "off" if self.compile == "off" else f"{self.compile} ({self.compile_mode}, {self.compile_backend})"
        return (f"attention {'SDPA' if self.sdpa else 'classic'}, channels_last {'on' if self.channels_last else 'off'}, "
                f"compile {compiled}")


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={raw!r}: expected 1 or 0")


def prepare(value: Any, switches: Switches) -> Any:
    """Apply ``switches`` to a loaded model on its device and return it: a checkpoint's components (``.modules``:
    its UNet and VAE) or a single module. Applying other switches later (``ModelCache.set_switches``) undoes these."""
    modules = value.modules.values() if hasattr(value, "modules") and isinstance(value.modules, dict) else [value]
    for module in modules:
        kind = type(module).__name__
        if kind in _DENOISERS:
            _attention(module, switches.sdpa)
            _memory_format(module, switches.channels_last)
            _compile(module, switches)
        elif kind in _VAES:
            _attention(module, switches.sdpa)
            _memory_format(module, switches.channels_last)
    return value


def _attention(module: Any, sdpa: bool) -> None:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    wanted = AttnProcessor2_0 if sdpa else AttnProcessor
    if any(type(p) is not wanted for p in module.attn_processors.values()):
        module.set_attn_processor(wanted())


def _memory_format(module: Any, channels_last: bool) -> None:
    import torch

    module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def compiled_regions(module: Any) -> list[Any]:
    """The submodules (the module itself for a full compile) that torch.compile wraps now."""
    return [m for m in module.modules() if getattr(m, "_compiled_call_impl", None) is not None]


def _compile(module: Any, switches: Switches) -> None:
    for region in compiled_regions(module):  # start from the eager model: switches replace each other
        region._compiled_call_impl = None
    if switches.compile == "off":
        return
    if switches.compile_backend == "inductor":
        import torch._inductor.config as inductor

        inductor.conv_1x1_as_mm = True  # diffusers' fp16 recipe: 1x1 convolutions as matmuls
    options = dict(mode=None if switches.compile_mode == "default" else switches.compile_mode,
                   backend=switches.compile_backend)
    if switches.compile == "full":
        module.compile(**options)
        return
    names = tuple(getattr(module, "_repeated_blocks", None) or REPEATED_BLOCKS)
    blocks = [m for m in module.modules() if type(m).__name__ in names]
    for block in blocks:
        block.compile(fullgraph=True, **options)
