"""Reading a LoRA's file: which file of a folder, and the short hash A1111 shows in "Lora hashes"."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from img2img_runner.catalog import Catalog, ModelError
from img2img_runner.loras import read, weights_file

TENSORS = {"lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight": torch.ones(4, 32),
           "lora_unet_down_blocks_1_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4),
           "lora_unet_down_blocks_1_attentions_0_proj_in.alpha": torch.tensor(2.0)}


def entry(**spec):
    spec = {"architecture": "lora-sdxl", "source": "x.safetensors", **spec}
    return Catalog.from_dict({"models": {"pixel": spec}}).entries["pixel"]


def lora_file(path: Path, metadata: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(TENSORS, path, metadata=metadata)
    return path


def tensor_data_sha256(path: Path) -> str:
    """kohya's "addnet" hash as its trainer defines it: sha256 of what follows the safetensors header."""
    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()


def test_the_short_hash_is_a1111s_12_hex_of_the_tensor_data_whatever_the_metadata(tmp_path):
    plain = read(entry(), lora_file(tmp_path / "a.safetensors"))
    described = read(entry(), lora_file(tmp_path / "b.safetensors", {"ss_output_name": "pixel", "ss_network_dim": "4"}))
    assert plain.shorthash == tensor_data_sha256(tmp_path / "a.safetensors")[:12]
    assert described.shorthash == plain.shorthash  # the metadata is in the header: not hashed
    assert plain.shorthash != hashlib.sha256((tmp_path / "a.safetensors").read_bytes()).hexdigest()[:12]
    assert set(plain.state_dict) == set(TENSORS)


def test_the_hash_a_kohya_trainer_wrote_or_the_catalog_names_wins(tmp_path):
    kohya = read(entry(), lora_file(tmp_path / "a.safetensors", {"sshs_model_hash": "FEDCBA9876543210abcd"}))
    assert kohya.shorthash == "fedcba987654"
    assert read(entry(hash="0123456789abcdef"), tmp_path / "a.safetensors").shorthash == "0123456789ab"


def test_a_folder_source_holds_one_lora_file_or_diffusers_one(tmp_path):
    one = lora_file(tmp_path / "one" / "pixel-art-xl.safetensors")
    assert weights_file(one.parent, entry()) == one
    lora_file(tmp_path / "two" / "a.safetensors")
    lora_file(tmp_path / "two" / "b.safetensors")
    with pytest.raises(ModelError, match=r"must hold one \.safetensors file \(found: a.safetensors, b.safetensors\)"):
        weights_file(tmp_path / "two", entry())
    diffusers = lora_file(tmp_path / "two" / "pytorch_lora_weights.safetensors")
    assert weights_file(tmp_path / "two", entry()) == diffusers


def test_only_safetensors_files_are_read(tmp_path):
    pickle = tmp_path / "old.pt"
    torch.save(TENSORS, pickle)
    with pytest.raises(ModelError, match="old.pt is not a .safetensors file") as exc:
        read(entry(), pickle)
    assert exc.value.field == "prompt"
    with pytest.raises(ModelError, match="cannot read"):
        read(entry(), tmp_path / "missing.safetensors")
