"""LoRAs: the weights of a prompt's ``<lora:…>`` tags, put on the checkpoint for one job and taken off after it.

- ``read`` reads a LoRA's ``.safetensors`` file as users ship it (kohya/A1111 keys, ``lora_unet_…``,
  ``lora_te1_…``, as civitai files have them, or diffusers/PEFT keys) and its short hash as A1111 shows it in "Lora hashes";
  ``pipelines.ModelCache.lora`` keeps what it read on the device between jobs (least recently used dropped first,
  within the cache's memory budget).
- ``applied`` loads each LoRA of the job into the checkpoint's UNet and text encoders as an adapter of its own
  (diffusers' ``load_lora_weights``, which converts kohya keys), weights it as A1111 does (the tag's te weight on
  both text encoders, its unet weight on the UNet: ``set_adapters``), and on leaving removes every LoRA layer
  (``unload_lora_weights``). The LoRA layers sit beside the checkpoint's weights, never fused into them, so the
  modules are the checkpoint's own again afterwards, their weights untouched: the next job draws what it would have
  drawn on a fresh runner. Under ``IMG2IMG_COMPILE`` the compiled blocks trace through the LoRA layers (new modules:
  a recompile for a job with LoRAs).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from img2img_runner.catalog import LORA_HASH_LENGTH, Entry, ModelError

DIFFUSERS_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"  # what diffusers' save_lora_weights writes


@dataclass
class Lora:
    """A LoRA file's tensors (keys as in the file) and A1111's short hash of it."""

    entry: Entry
    state_dict: dict[str, Any]
    shorthash: str

    @property
    def size(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state_dict.values())

    def to(self, device: str) -> "Lora":
        self.state_dict = {k: t.to(device) for k, t in self.state_dict.items()}
        return self


def weights_file(folder: Path, entry: Entry) -> Path:
    """The LoRA file of a folder source (path, hub, s3): its only ``.safetensors`` file, or diffusers' file name
    among several."""
    files = sorted(folder.glob("*.safetensors"))
    named = [f for f in files if f.name == DIFFUSERS_WEIGHTS_NAME]
    if len(files) == 1 or named:
        return (named or files)[0]
    found = ", ".join(f.name for f in files) or "none"
    raise ModelError("prompt", f"LoRA {entry.name!r}: its folder {folder} must hold one .safetensors file (found: "
                               f"{found}); name the file in the catalog (source: {{file: …}})")


def addnet_hash(path: Path) -> str:
    """sha256 of a safetensors file's tensor data, its header left out (kohya's and A1111's LoRA hash: editing
    the metadata does not change it)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        header = int.from_bytes(f.read(8), "little")
        f.seek(8 + header)
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def read(entry: Entry, path: Path) -> Lora:
    """A LoRA file's tensors (on the CPU) and its short hash: the catalog's, else A1111's (the ``sshs_model_hash``
    a kohya trainer writes into the metadata, else the file's addnet hash), 12 hex."""
    from safetensors import SafetensorError, safe_open

    if path.suffix.lower() != ".safetensors":
        raise ModelError("prompt", f"LoRA {entry.name!r}: {path.name} is not a .safetensors file (the only LoRA "
                                   "format read)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (OSError, SafetensorError) as exc:
        raise ModelError("prompt", f"LoRA {entry.name!r}: cannot read {path}: {exc}") from exc
    shorthash = entry.hash or (metadata.get("sshs_model_hash") or addnet_hash(path))[:LORA_HASH_LENGTH]
    return Lora(entry=entry, state_dict=tensors, shorthash=shorthash.lower())


@contextlib.contextmanager
def applied(pipe: Any, weighted: list[tuple[Lora, float, float]]) -> Iterator[None]:
    """Within the block the LoRAs are on ``pipe``'s UNet and text encoders, each with its (text-encoder weight,
    UNet weight); every LoRA layer is gone after it, whatever happened inside."""
    if not weighted:
        yield
        return
    encoders = [name for name in ("text_encoder", "text_encoder_2") if getattr(pipe, name, None) is not None]
    try:
        names = []
        for i, (lora, _, _) in enumerate(weighted):
            name = f"lora{i}"  # adapter names are module keys: catalog names may hold dots
            try:
                # a copy: diffusers' conversion pops keys from the dict it is given
                pipe.load_lora_weights(dict(lora.state_dict), adapter_name=name)
            except (ValueError, KeyError, RuntimeError) as exc:
                raise ModelError("prompt", f"LoRA {lora.entry.name!r} cannot be loaded: {exc}") from exc
            names.append(name)
        pipe.set_adapters(names, adapter_weights=[{"unet": unet, **{e: te for e in encoders}}
                                                  for _, te, unet in weighted])
        yield
    finally:
        pipe.unload_lora_weights()
