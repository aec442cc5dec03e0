"""Tiny randomly initialised models in diffusers format, and a catalog naming them as A1111 names the real ones.

``python -m img2img_runner.tiny_models OUT_DIR`` writes (in a few seconds, offline):

| catalog name                     | what                                   | source kind              |
|----------------------------------|----------------------------------------|--------------------------|
| sd_xl_base_1.0                   | SDXL base (2 text encoders, x8 VAE)    | diffusers folder         |
| sd_xl_refiner_1.0                | SDXL refiner (text_encoder_2 only)     | diffusers folder         |
| sdxl_vae.safetensors             | SDXL VAE                               | one .safetensors + config|
| diffusers_xl_canny_mid           | SDXL ControlNet                        | diffusers folder         |
| control_v11p_sd15_canny          | SD 1.5 ControlNet; under an SDXL       | diffusers folder         |
|                                  | checkpoint -> diffusers_xl_canny_mid   |                          |
| v1-5-pruned-emaonly, deliberate_v2 | SD 1.5 checkpoints (different weights) | diffusers folder       |

The recipe follows diffusers' own ``get_dummy_components`` (tests/pipelines/controlnet/test_controlnet_sdxl_img2img.py)
with three changes: an x8 VAE (four levels, as the real ones: 64x64 pixels -> 8x8 latents, so large images stay cheap),
ControlNets whose zero-initialised output convolutions get small random weights (so a control image changes the
picture, which the tests need), and an offline CLIP tokenizer built in memory (no hub access).

Everything is seeded: the same recipe version gives the same weights on every machine. The folder holds
``tiny-models.json`` with the recipe version; a second run with the same version does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

RECIPE_VERSION = 3
MARKER = "tiny-models.json"
CATALOG = "catalog.yaml"

_HIDDEN = 32  # CLIP hidden size of both text encoders (SDXL concatenates them: cross-attention dim 64)
_TIME_EMBED = 8  # SDXL addition_time_embed_dim


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _tokenizer(pad_token: str | None = None):
    """A CLIP tokenizer that encodes every byte string: byte tokens, their end-of-word forms, a few merges."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    merges = [("a", "n</w>"), ("t", "h"), ("th", "e</w>"), ("o", "n</w>")]
    vocab: dict[str, int] = {}
    for token in chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]:
        vocab.setdefault(token, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    kwargs = {"pad_token": pad_token} if pad_token else {}
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, **kwargs)
    return tok


def _text_encoder(tokenizer, *, with_projection: bool, seed: int):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    # The pooled output is taken at the first eos_token_id: the ids must be the tokenizer's.
    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=_HIDDEN,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=1000,
        hidden_act="gelu",
        projection_dim=_HIDDEN,
        max_position_embeddings=77,
    )
    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _vae(*, scaling_factor: float, seed: int):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=[32, 32, 64, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        sample_size=128,
        scaling_factor=scaling_factor,
        force_upcast=True,
    )


def _unet_kwargs(*, xl: bool, cross_attention_dim: int, time_ids: int) -> dict:
    kwargs = dict(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=32,
    )
    if xl:
        kwargs.update(
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=_TIME_EMBED,
            transformer_layers_per_block=(1, 2),
            # time ids (original size, crop, target size | aesthetic score) + pooled text embedding
            projection_class_embeddings_input_dim=time_ids * _TIME_EMBED + _HIDDEN,
        )
    else:
        kwargs.update(attention_head_dim=(2, 4))
    return kwargs


def _unet(*, seed: int, **kwargs):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**_unet_kwargs(**kwargs))


def _controlnet(*, seed: int, **kwargs):
    import torch
    from diffusers import ControlNetModel

    unet_kwargs = _unet_kwargs(**kwargs)
    unet_kwargs.pop("out_channels")
    unet_kwargs.pop("up_block_types")
    unet_kwargs.pop("sample_size")
    torch.manual_seed(seed)
    # four levels in the conditioning embedding: the control image is downsampled x8, like the VAE
    model = ControlNetModel(conditioning_embedding_out_channels=(16, 32, 48, 64), **unet_kwargs)
    # A new ControlNet's output convolutions are zero (it starts as a no-op); give them small weights so the control
    # image has a visible effect on the tiny models.
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in [*model.controlnet_down_blocks, model.controlnet_mid_block, model.controlnet_cond_embedding.conv_out]:
            for param in module.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return model


def _sdxl_scheduler():
    from diffusers import EulerDiscreteScheduler

    # SDXL's shipped scheduler config (stabilityai/stable-diffusion-xl-base-1.0/scheduler/scheduler_config.json)
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        interpolation_type="linear",
        prediction_type="epsilon",
        num_train_timesteps=1000,
    )


def _sd15_scheduler():
    from diffusers import PNDMScheduler

    # SD 1.5's shipped scheduler config (runwayml/stable-diffusion-v1-5/scheduler/scheduler_config.json)
    return PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
        num_train_timesteps=1000,
    )


def _folder_hash(folder: Path) -> str:
    """A1111 shows sha256(file)[:10] as "Model hash"; a folder gets the sha256 of its weight files, in name order."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.safetensors")):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def build(out: Path) -> None:
    """Write every model and the catalog into ``out`` (which must not exist yet)."""
    import torch
    from diffusers import (
        StableDiffusionPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
    )

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    out.mkdir(parents=True)
    hashes: dict[str, str] = {}

    # SDXL base: CLIP-L-like + CLIP-G-like encoders, pad "!" for the second as SDXL ships it
    tok = _tokenizer()
    tok2 = _tokenizer(pad_token="!")
    te = _text_encoder(tok, with_projection=False, seed=10)
    te2 = _text_encoder(tok2, with_projection=True, seed=11)
    xl_vae = _vae(scaling_factor=0.13025, seed=12)
    base_unet = _unet(seed=13, xl=True, cross_attention_dim=2 * _HIDDEN, time_ids=6)
    base = StableDiffusionXLPipeline(
        vae=xl_vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2, unet=base_unet,
        scheduler=_sdxl_scheduler(), force_zeros_for_empty_prompt=True, add_watermarker=False,
    )
    base.save_pretrained(out / "sdxl-base")
    hashes["sd_xl_base_1.0"] = _folder_hash(out / "sdxl-base")

    # SDXL refiner: only the second text encoder, aesthetic-score time ids (5 instead of 6)
    refiner_unet = _unet(seed=20, xl=True, cross_attention_dim=_HIDDEN, time_ids=5)
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=xl_vae, text_encoder=None, text_encoder_2=te2, tokenizer=None, tokenizer_2=tok2, unet=refiner_unet,
        scheduler=_sdxl_scheduler(), requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )
    refiner.save_pretrained(out / "sdxl-refiner")
    hashes["sd_xl_refiner_1.0"] = _folder_hash(out / "sdxl-refiner")

    # An external SDXL VAE as A1111 keeps it: one .safetensors file (+ a diffusers config folder for offline loading)
    vae_dir = out / "sdxl-vae"
    _vae(scaling_factor=0.13025, seed=30).save_pretrained(vae_dir / "config")
    (vae_dir / "config" / "diffusion_pytorch_model.safetensors").rename(vae_dir / "sdxl_vae.safetensors")
    hashes["sdxl_vae.safetensors"] = _file_hash(vae_dir / "sdxl_vae.safetensors")

    _controlnet(seed=40, xl=True, cross_attention_dim=2 * _HIDDEN, time_ids=6).save_pretrained(out / "controlnet-sdxl-canny")
    hashes["diffusers_xl_canny_mid"] = _folder_hash(out / "controlnet-sdxl-canny")

    # SD 1.5: one text encoder (cross-attention dim 32), two checkpoints with different weights
    for name, folder, seed in (("v1-5-pruned-emaonly", "sd15", 50), ("deliberate_v2", "sd15-deliberate", 60)):
        sd_tok = _tokenizer()
        sd = StableDiffusionPipeline(
            vae=_vae(scaling_factor=0.18215, seed=seed), text_encoder=_text_encoder(sd_tok, with_projection=False, seed=seed + 1),
            tokenizer=sd_tok, unet=_unet(seed=seed + 2, xl=False, cross_attention_dim=_HIDDEN, time_ids=0),
            scheduler=_sd15_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        sd.save_pretrained(out / folder)
        hashes[name] = _folder_hash(out / folder)

    _controlnet(seed=70, xl=False, cross_attention_dim=_HIDDEN, time_ids=0).save_pretrained(out / "controlnet-sd15-canny")
    hashes["control_v11p_sd15_canny"] = _folder_hash(out / "controlnet-sd15-canny")

    (out / CATALOG).write_text(catalog_yaml(hashes))
    (out / MARKER).write_text(json.dumps({"recipe": RECIPE_VERSION}) + "\n")


def catalog_yaml(hashes: dict[str, str]) -> str:
    """The tiny models' catalog: paths relative to the catalog file."""
    return f"""\
# Tiny random models (img2img_runner.tiny_models, recipe {RECIPE_VERSION}) under the names A1111 users send.
# Paths are relative to this file.
version: 1
default_checkpoint: sd_xl_base_1.0
models:
  sd_xl_base_1.0:
    architecture: sdxl
    source: {{path: sdxl-base}}
    hash: "{hashes['sd_xl_base_1.0']}"
  sd_xl_refiner_1.0:
    architecture: sdxl-refiner
    source: {{path: sdxl-refiner}}
    hash: "{hashes['sd_xl_refiner_1.0']}"
  sdxl_vae.safetensors:
    architecture: vae
    source: {{file: sdxl-vae/sdxl_vae.safetensors, config: sdxl-vae/config}}
    hash: "{hashes['sdxl_vae.safetensors']}"
    fp16_fix: false
  diffusers_xl_canny_mid:
    architecture: controlnet-sdxl
    source: {{path: controlnet-sdxl-canny}}
    hash: "{hashes['diffusers_xl_canny_mid']}"
  control_v11p_sd15_canny:
    architecture: controlnet-sd15
    source: {{path: controlnet-sd15-canny}}
    hash: "{hashes['control_v11p_sd15_canny']}"
    # On purpose: RunPod's A1111 example sends this SD 1.5 ControlNet with sd_xl_base_1.0. Under an SDXL checkpoint
    # the SDXL canny ControlNet runs instead, and the answer's info says so.
    substitutes:
      sdxl: diffusers_xl_canny_mid
  v1-5-pruned-emaonly:
    architecture: sd15
    source: {{path: sd15}}
    hash: "{hashes['v1-5-pruned-emaonly']}"
  deliberate_v2:
    architecture: sd15
    source: {{path: sd15-deliberate}}
    hash: "{hashes['deliberate_v2']}"
"""


def is_built(out: Path) -> bool:
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("recipe") == RECIPE_VERSION and (out / CATALOG).exists()


def ensure(out: str | os.PathLike) -> Path:
    """Build the tiny models into ``out`` unless they are there with this recipe; return the catalog's path.

    Builds into a sibling temporary folder and renames it into place, so a half-written folder is never used and two
    concurrent builders both end with a complete one.
    """
    out = Path(out).resolve()
    if is_built(out):
        return out / CATALOG
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build(tmp)
        if out.exists() and not is_built(out):
            shutil.rmtree(out)  # an older recipe, or a broken folder
        try:
            os.rename(tmp, out)
        except OSError:
            if not is_built(out):  # someone else won the race with a good build: keep theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / CATALOG


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m img2img_runner.tiny_models OUT_DIR", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(ensure(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
