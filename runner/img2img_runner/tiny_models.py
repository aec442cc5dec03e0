"""Randomly initialised models in diffusers format, tiny or full size, and a catalog naming them as A1111 names the
real ones.

``python -m img2img_runner.tiny_models OUT_DIR [--size tiny|full]`` writes (offline, no weights downloaded):

| catalog name                          | what                                   | source kind              |
|---------------------------------------|----------------------------------------|--------------------------|
| sd_xl_base_1.0                        | SDXL base (2 text encoders, x8 VAE)    | diffusers folder         |
| sd_xl_refiner_1.0                     | SDXL refiner (text_encoder_2 only)     | diffusers folder         |
| sdxl_vae.safetensors                  | SDXL VAE (fp32 decode in fp16 runs)    | one .safetensors + config|
| sdxl-vae-fp16-fix.safetensors         | SDXL VAE marked ``fp16_fix``           | one .safetensors + config|
| diffusers_xl_canny_mid                | SDXL ControlNet                        | diffusers folder         |
| control_v11p_sd15_canny               | SD 1.5 ControlNet; under an SDXL       | diffusers folder         |
|                                       | checkpoint -> diffusers_xl_canny_mid   |                          |
| v1-5-pruned-emaonly, deliberate_v2    | SD 1.5 checkpoints (different weights) | diffusers folder         |
| tiny_lora                             | LoRA for the SDXL base, kohya format   | one .safetensors         |
| sd-v1-5-inpainting (tiny only)        | SD 1.5 inpainting (UNet in_channels 9) | diffusers folder         |
| sd_xl_base_1.0_inpainting_0.1 (tiny)  | SDXL inpainting (UNet in_channels 9)   | diffusers folder         |

Both sizes are built by the same code from a configuration per component; only where the configurations come from
differs:

- ``tiny`` (tests, the local stack; a few seconds on a CPU): the recipe of diffusers' own ``get_dummy_components``
  (tests/pipelines/controlnet/test_controlnet_sdxl_img2img.py) with an x8 VAE (four levels, as the real ones: 64x64
  pixels -> 8x8 latents, so large images stay cheap) and a byte-level CLIP tokenizer built in memory.
- ``full`` (GPU timing, ``bench/gpu_check.sh``): the published architectures, from the ``config.json`` files of the
  real models held in ``configs/`` (``FULL_SIZE`` says which file is which model's); weights in fp16, as the
  published fp16 files. Timing on them is timing on the real architecture; the pictures are noise. The tokenizers
  carry CLIP's real vocabulary (49408 tokens, read from the BPE merges file that the ``open-clip-torch`` package
  ships) when that package is installed, else the byte-level stand-in (same token ids for the special tokens'
  roles, same 77-token window: the text encoders do the same work).

ControlNets get small random weights in their zero-initialised output convolutions (a new ControlNet is a no-op; the
tests need the control image to change the picture). ``tiny_lora`` is a rank-4 LoRA in the format most LoRAs users
send come in (kohya/A1111 ``.safetensors``: ``lora_unet_…``/``lora_te1_…``/``lora_te2_…`` keys with ``lora_down``,
``lora_up`` and ``alpha``) on every linear layer of the base's transformer blocks and text-encoder layers, random
(a trained LoRA's up weights are not zero: it changes the picture). Everything is seeded: the same recipe version
gives the same weights on every machine. The folder holds ``tiny-models.json`` with the recipe version and the size; a second run
with the same version does nothing.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

RECIPE_VERSION = 6
MARKER = "tiny-models.json"
CATALOG = "catalog.yaml"
SIZES = ("tiny", "full")
CONFIGS = Path(__file__).resolve().with_name("configs")
# configs/<name>.json: the published config.json of each component the full size builds
FULL_SIZE = {
    "clip-vit-large-text": "openai/clip-vit-large-patch14 text model (SDXL text_encoder, SD 1.5 text_encoder)",
    "sdxl-text-encoder-2": "stabilityai/stable-diffusion-xl-base-1.0 text_encoder_2 (OpenCLIP ViT-bigG/14)",
    "sdxl-base-unet": "stabilityai/stable-diffusion-xl-base-1.0 unet",
    "sdxl-refiner-unet": "stabilityai/stable-diffusion-xl-refiner-1.0 unet",
    "sdxl-vae": "stabilityai/stable-diffusion-xl-base-1.0 vae (= stabilityai/sdxl-vae; madebyollin/sdxl-vae-fp16-fix "
                "has the same architecture)",
    "sdxl-controlnet-canny-mid": "diffusers/controlnet-canny-sdxl-1.0-mid (A1111: diffusers_xl_canny_mid)",
    "sd15-unet": "runwayml/stable-diffusion-v1-5 unet",
    "sd15-vae": "runwayml/stable-diffusion-v1-5 vae",
    "sd15-controlnet-canny": "lllyasviel/control_v11p_sd15_canny",
}
CLIP_VOCAB_SIZE = 49408  # 256 bytes + 256 end-of-word bytes + 48894 merges + 2 special tokens
_CLIP_BPE = ("open_clip", "bpe_simple_vocab_16e6.txt.gz")  # (package, file): CLIP's merges, as OpenAI published them

_HIDDEN = 32  # tiny: CLIP hidden size of both text encoders (SDXL concatenates them: cross-attention dim 64)
_TIME_EMBED = 8  # tiny: SDXL addition_time_embed_dim


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


def clip_vocabulary(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's token ids (OpenAI's SimpleTokenizer, as HF's vocab.json holds them): bytes, bytes with "</w>", one token
    per merge in order, then <|startoftext|> and <|endoftext|>."""
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]:
        vocab.setdefault(token, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def clip_merges(text: str) -> list[tuple[str, str]]:
    """The merges of OpenAI's BPE file that CLIP uses: after the version line, the first 49152 - 256 - 2."""
    lines = text.split("\n")
    return [tuple(line.split()) for line in lines[1:CLIP_VOCAB_SIZE - 512 - 2 + 1]]


def clip_bpe_file() -> Path | None:
    """CLIP's BPE merges file as the ``open-clip-torch`` package ships it (found without importing the package)."""
    spec = importlib.util.find_spec(_CLIP_BPE[0])
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / _CLIP_BPE[1]
        if path.is_file():
            return path
    return None


def _tokenizer(size: str, pad_token: str | None = None):
    """A CLIP tokenizer: CLIP's own vocabulary (full size, when its file is here), else a byte-level one that
    encodes every byte string (byte tokens, their end-of-word forms, a few merges)."""
    from transformers import CLIPTokenizer

    bpe = clip_bpe_file() if size == "full" else None
    if bpe is not None:
        merges = clip_merges(gzip.decompress(bpe.read_bytes()).decode("utf-8"))
    else:
        merges = [("a", "n</w>"), ("t", "h"), ("th", "e</w>"), ("o", "n</w>")]
    kwargs = {"pad_token": pad_token} if pad_token else {}
    return CLIPTokenizer(vocab=clip_vocabulary(merges), merges=merges, model_max_length=77, **kwargs)


def tokenizer_kind(size: str) -> str:
    """What the ``size`` models' tokenizers are built from on this machine (said in the benchmark's report)."""
    if size == "full" and clip_bpe_file() is not None:
        return "CLIP vocabulary (open-clip-torch's BPE file)"
    return "byte-level stand-in (open-clip-torch not installed)" if size == "full" else "byte-level (tiny)"


# --- the tiny configurations, under the names of the full-size files -------------------------------------------


def _tiny_text(tokenizer, *, with_projection: bool) -> dict[str, Any]:
    # The pooled output is taken at the first eos_token_id: the ids must be the tokenizer's.
    return dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        hidden_size=_HIDDEN, intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5,
        vocab_size=1000, hidden_act="gelu", projection_dim=_HIDDEN, max_position_embeddings=77,
    )


def _tiny_vae(scaling_factor: float) -> dict[str, Any]:
    return dict(
        block_out_channels=[32, 32, 64, 64], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, sample_size=128, scaling_factor=scaling_factor,
        force_upcast=True,
    )


def _tiny_unet(*, xl: bool, cross_attention_dim: int, time_ids: int, in_channels: int = 4) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=32,
        attention_head_dim=(2, 4),
    )
    if xl:
        kwargs.update(
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=_TIME_EMBED,
            transformer_layers_per_block=(1, 2),
            # time ids (original size, crop, target size | aesthetic score) + pooled text embedding
            projection_class_embeddings_input_dim=time_ids * _TIME_EMBED + _HIDDEN,
        )
    return kwargs


def _tiny_controlnet(**unet: Any) -> dict[str, Any]:
    kwargs = {k: v for k, v in _tiny_unet(**unet).items() if k not in ("out_channels", "up_block_types", "sample_size")}
    # four levels in the conditioning embedding: the control image is downsampled x8, like the VAE
    return dict(conditioning_embedding_out_channels=(16, 32, 48, 64), **kwargs)


_TINY = {
    "sdxl-base-unet": lambda: _tiny_unet(xl=True, cross_attention_dim=2 * _HIDDEN, time_ids=6),
    "sdxl-refiner-unet": lambda: _tiny_unet(xl=True, cross_attention_dim=_HIDDEN, time_ids=5),
    "sdxl-controlnet-canny-mid": lambda: _tiny_controlnet(xl=True, cross_attention_dim=2 * _HIDDEN, time_ids=6),
    "sdxl-vae": lambda: _tiny_vae(0.13025),
    "sd15-unet": lambda: _tiny_unet(xl=False, cross_attention_dim=_HIDDEN, time_ids=0),
    "sd15-vae": lambda: _tiny_vae(0.18215),
    "sd15-controlnet-canny": lambda: _tiny_controlnet(xl=False, cross_attention_dim=_HIDDEN, time_ids=0),
    # inpainting checkpoints: the latents, the mask and the masked image's latents (4 + 1 + 4 input channels)
    "sdxl-inpainting-unet": lambda: _tiny_unet(xl=True, cross_attention_dim=2 * _HIDDEN, time_ids=6, in_channels=9),
    "sd15-inpainting-unet": lambda: _tiny_unet(xl=False, cross_attention_dim=_HIDDEN, time_ids=0, in_channels=9),
}


def config(size: str, name: str) -> dict[str, Any]:
    """The configuration of component ``name`` at ``size`` (a full-size one as published, ``_`` keys included)."""
    if size == "full":
        return json.loads((CONFIGS / f"{name}.json").read_text())
    if size == "tiny":
        return _TINY[name]()
    raise ValueError(f"size {size!r}: expected one of {', '.join(SIZES)}")


# --- components ---------------------------------------------------------------------------------------------------


class _Maker:
    """Makes each component of one size, seeded, on ``device``, in the size's weight dtype."""

    def __init__(self, size: str, device: str):
        import torch

        self.size = size
        self.device = device
        self.dtype = torch.float16 if size == "full" else torch.float32

    def _finish(self, model):
        return (model if model.dtype == self.dtype else model.to(self.dtype)).eval()

    def _seeded(self, seed: int):
        import torch

        torch.manual_seed(seed)
        return torch.device(self.device)

    def text_encoder(self, tokenizer, name: str, *, with_projection: bool, seed: int):
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        if self.size == "full":
            cfg = CLIPTextConfig(**{k: v for k, v in config("full", name).items() if k != "architectures"})
        else:
            cfg = CLIPTextConfig(**_tiny_text(tokenizer, with_projection=with_projection))
        with self._seeded(seed):
            return self._finish((CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg))

    def diffusers_model(self, cls, name: str, *, seed: int):
        with self._seeded(seed):
            return self._finish(cls.from_config(config(self.size, name)))

    def controlnet(self, name: str, *, seed: int):
        import torch
        from diffusers import ControlNetModel

        model = self.diffusers_model(ControlNetModel, name, seed=seed)
        # A new ControlNet's output convolutions are zero (it starts as a no-op); give them small weights so the
        # control image has a visible effect.
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for module in [*model.controlnet_down_blocks, model.controlnet_mid_block,
                           model.controlnet_cond_embedding.conv_out]:
                for param in module.parameters():
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        return model


LORA_RANK = 4


def kohya_lora(modules: dict[str, Any], *, rank: int = LORA_RANK, seed: int) -> dict[str, Any]:
    """A random LoRA in kohya's format for ``modules`` (kohya prefix -> model: ``lora_unet``, ``lora_te1``, …): one
    ``lora_down``/``lora_up``/``alpha`` triple per linear layer of the UNet's transformer blocks and of the text
    encoders' layers, the key the module's path with "_" for ".", as kohya's trainer names them (a text encoder's
    path as transformers 4 writes it, under ``text_model``: transformers 5 flattened CLIPTextModel)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, Any] = {}
    for prefix, model in modules.items():
        for path, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear) or not (".attentions." in path or "encoder.layers." in path):
                continue
            if prefix != "lora_unet" and not path.startswith("text_model."):
                path = f"text_model.{path}"
            key = f"{prefix}_{path.replace('.', '_')}"
            down = torch.randn(rank, module.in_features, generator=generator) / module.in_features ** 0.5
            tensors[f"{key}.lora_down.weight"] = down
            tensors[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.3
            tensors[f"{key}.alpha"] = torch.tensor(float(rank) / 2)
    return {k: v.to(torch.float16) if v.ndim else v for k, v in tensors.items()}


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
        with path.open("rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()[:10]


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()[:10]


def _free() -> None:
    """Give back the device memory of the models just saved (and deleted) before the next ones (full size: gigabytes
    each)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build(out: Path, size: str = "tiny", device: str = "cpu") -> None:
    """Write every model and the catalog into ``out`` (which must not exist yet)."""
    import safetensors.torch
    import torch
    from diffusers import (
        AutoencoderKL,
        StableDiffusionPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    if size not in SIZES:
        raise ValueError(f"size {size!r}: expected one of {', '.join(SIZES)}")
    if device == "cpu":
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    make = _Maker(size, device)
    out.mkdir(parents=True)
    hashes: dict[str, str] = {}

    # SDXL base: CLIP-L + CLIP-G text encoders, pad "!" for the second as SDXL ships it
    tok = _tokenizer(size)
    tok2 = _tokenizer(size, pad_token="!")
    te = make.text_encoder(tok, "clip-vit-large-text", with_projection=False, seed=10)
    te2 = make.text_encoder(tok2, "sdxl-text-encoder-2", with_projection=True, seed=11)
    xl_vae = make.diffusers_model(AutoencoderKL, "sdxl-vae", seed=12)
    base_unet = make.diffusers_model(UNet2DConditionModel, "sdxl-base-unet", seed=13)
    base = StableDiffusionXLPipeline(
        vae=xl_vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2, unet=base_unet,
        scheduler=_sdxl_scheduler(), force_zeros_for_empty_prompt=True, add_watermarker=False,
    )
    base.save_pretrained(out / "sdxl-base")
    hashes["sd_xl_base_1.0"] = _folder_hash(out / "sdxl-base")
    (out / "loras").mkdir()
    lora = kohya_lora({"lora_unet": base_unet, "lora_te1": te, "lora_te2": te2}, seed=14)
    safetensors.torch.save_file(lora, out / "loras" / "tiny_lora.safetensors", metadata={
        "ss_network_module": "networks.lora", "ss_network_dim": str(LORA_RANK), "ss_network_alpha": str(LORA_RANK / 2),
        "ss_base_model_version": "sdxl_base_v1-0"})
    del base, te, base_unet
    _free()

    # SDXL refiner: only the second text encoder, aesthetic-score time ids (5 instead of 6)
    refiner_unet = make.diffusers_model(UNet2DConditionModel, "sdxl-refiner-unet", seed=20)
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=xl_vae, text_encoder=None, text_encoder_2=te2, tokenizer=None, tokenizer_2=tok2, unet=refiner_unet,
        scheduler=_sdxl_scheduler(), requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )
    refiner.save_pretrained(out / "sdxl-refiner")
    hashes["sd_xl_refiner_1.0"] = _folder_hash(out / "sdxl-refiner")
    del refiner, refiner_unet, te2, xl_vae
    _free()

    # External SDXL VAEs as A1111 keeps them: one .safetensors file (+ a diffusers config folder for offline loading)
    for name, folder, seed in (("sdxl_vae.safetensors", "sdxl-vae", 30),
                               ("sdxl-vae-fp16-fix.safetensors", "sdxl-vae-fp16-fix", 31)):
        make.diffusers_model(AutoencoderKL, "sdxl-vae", seed=seed).save_pretrained(out / folder / "config")
        (out / folder / "config" / "diffusion_pytorch_model.safetensors").rename(out / folder / name)
        hashes[name] = _file_hash(out / folder / name)

    make.controlnet("sdxl-controlnet-canny-mid", seed=40).save_pretrained(out / "controlnet-sdxl-canny")
    hashes["diffusers_xl_canny_mid"] = _folder_hash(out / "controlnet-sdxl-canny")
    _free()

    # SD 1.5: one text encoder, two checkpoints with different weights
    for name, folder, seed in (("v1-5-pruned-emaonly", "sd15", 50), ("deliberate_v2", "sd15-deliberate", 60)):
        sd_tok = _tokenizer(size)
        sd = StableDiffusionPipeline(
            vae=make.diffusers_model(AutoencoderKL, "sd15-vae", seed=seed),
            text_encoder=make.text_encoder(sd_tok, "clip-vit-large-text", with_projection=False, seed=seed + 1),
            tokenizer=sd_tok, unet=make.diffusers_model(UNet2DConditionModel, "sd15-unet", seed=seed + 2),
            scheduler=_sd15_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        sd.save_pretrained(out / folder)
        hashes[name] = _folder_hash(out / folder)
        del sd
        _free()

    make.controlnet("sd15-controlnet-canny", seed=70).save_pretrained(out / "controlnet-sd15-canny")
    hashes["control_v11p_sd15_canny"] = _folder_hash(out / "controlnet-sd15-canny")

    if size == "tiny":  # the inpainting checkpoints are for the tests; the full size times the seed's job
        sd_tok = _tokenizer(size)
        StableDiffusionPipeline(
            vae=make.diffusers_model(AutoencoderKL, "sd15-vae", seed=80),
            text_encoder=make.text_encoder(sd_tok, "clip-vit-large-text", with_projection=False, seed=81),
            tokenizer=sd_tok, unet=make.diffusers_model(UNet2DConditionModel, "sd15-inpainting-unet", seed=82),
            scheduler=_sd15_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        ).save_pretrained(out / "sd15-inpainting")
        hashes["sd-v1-5-inpainting"] = _folder_hash(out / "sd15-inpainting")
        xl_tok, xl_tok2 = _tokenizer(size), _tokenizer(size, pad_token="!")
        StableDiffusionXLPipeline(
            vae=make.diffusers_model(AutoencoderKL, "sdxl-vae", seed=90),
            text_encoder=make.text_encoder(xl_tok, "clip-vit-large-text", with_projection=False, seed=91),
            text_encoder_2=make.text_encoder(xl_tok2, "sdxl-text-encoder-2", with_projection=True, seed=92),
            tokenizer=xl_tok, tokenizer_2=xl_tok2,
            unet=make.diffusers_model(UNet2DConditionModel, "sdxl-inpainting-unet", seed=93),
            scheduler=_sdxl_scheduler(), force_zeros_for_empty_prompt=True, add_watermarker=False,
        ).save_pretrained(out / "sdxl-inpainting")
        hashes["sd_xl_base_1.0_inpainting_0.1"] = _folder_hash(out / "sdxl-inpainting")

    (out / CATALOG).write_text(catalog_yaml(hashes, size))
    (out / MARKER).write_text(json.dumps({"recipe": RECIPE_VERSION, "size": size,
                                          "tokenizer": tokenizer_kind(size)}) + "\n")


def catalog_yaml(hashes: dict[str, str], size: str = "tiny") -> str:
    """The models' catalog: paths relative to the catalog file."""
    inpainting = "" if size != "tiny" else f"""\
  sd-v1-5-inpainting:
    architecture: sd15
    source: {{path: sd15-inpainting}}
    hash: "{hashes['sd-v1-5-inpainting']}"
  sd_xl_base_1.0_inpainting_0.1:
    architecture: sdxl
    source: {{path: sdxl-inpainting}}
    hash: "{hashes['sd_xl_base_1.0_inpainting_0.1']}"
"""
    return f"""\
# Random {size} models (img2img_runner.tiny_models, recipe {RECIPE_VERSION}) under the names A1111 users send.
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
  sdxl-vae-fp16-fix.safetensors:
    architecture: vae
    source: {{file: sdxl-vae-fp16-fix/sdxl-vae-fp16-fix.safetensors, config: sdxl-vae-fp16-fix/config}}
    hash: "{hashes['sdxl-vae-fp16-fix.safetensors']}"
    fp16_fix: true
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
  tiny_lora:
    architecture: lora-sdxl
    source: {{file: loras/tiny_lora.safetensors}}
{inpainting}"""


def is_built(out: Path, size: str = "tiny") -> bool:
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (marker.get("recipe") == RECIPE_VERSION and marker.get("size", "tiny") == size
            and (out / CATALOG).exists())


def ensure(out: str | os.PathLike, size: str = "tiny", device: str = "cpu") -> Path:
    """Build the ``size`` models into ``out`` on ``device`` unless they are there with this recipe; return the
    catalog's path.

    Builds into a sibling temporary folder and renames it into place, so a half-written folder is never used and two
    concurrent builders both end with a complete one.
    """
    out = Path(out).resolve()
    if is_built(out, size):
        return out / CATALOG
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build(tmp, size, device)
        if out.exists() and not is_built(out, size):
            shutil.rmtree(out)  # an older recipe, another size, or a broken folder
        try:
            os.rename(tmp, out)
        except OSError:
            if not is_built(out, size):  # someone else won the race with a good build: keep theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / CATALOG


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m img2img_runner.tiny_models", description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--size", choices=SIZES, default="tiny",
                   help="tiny (default; seconds on a CPU) or full (the published architectures, fp16; build on a GPU)")
    p.add_argument("--device", default=None, help="where to build: cuda when available for --size full, else cpu")
    p.add_argument("--versioned", action="store_true",
                   help="build into OUT_DIR/SIZE-rRECIPE (checkouts at other recipes then never rebuild each other's "
                        "folder under a running stack)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = args.device
    if device is None:
        import torch

        device = "cuda" if args.size == "full" and torch.cuda.is_available() else "cpu"
    out = Path(args.out_dir) / f"{args.size}-r{RECIPE_VERSION}" if args.versioned else args.out_dir
    print(ensure(out, args.size, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
