"""LoRAs through the runner's real path (``execute``) on the tiny models: ``tiny_lora`` is a kohya-format LoRA of the
tiny SDXL base (UNet and both text encoders)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from model_samples import seed_input

LORA = "tiny_lora"


def request(prompt: str, **changes) -> dict:
    """The seed request at 64x64 without refiner and ControlNet, few steps, a fixed seed."""
    base = dict(seed=3, steps=4, prompt=prompt, alwayson_scripts={}, refiner_checkpoint=None, refiner_switch_at=None)
    return seed_input(64, 64, **{**base, **changes})


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.int16)


def test_weight_0_draws_exactly_what_no_lora_draws(run):
    plain = run(request("an astronaut riding a horse"))
    zero = run(request(f"an astronaut riding a horse<lora:{LORA}:0>"))
    assert zero.images[0].tobytes() == plain.images[0].tobytes()  # the tag is no text either
    assert json.loads(zero.info)["prompt"] == f"an astronaut riding a horse<lora:{LORA}:0>"  # info shows it as sent


def test_a_lora_changes_the_picture_through_the_text_encoders_and_through_the_unet(run):
    plain = pixels(run(request("an astronaut")))
    both, text_only, unet_only = (pixels(run(request(f"an astronaut <lora:{LORA}:{w}>")))
                                  for w in ("1", "1:0", "0:1"))
    for changed in (both, text_only, unet_only):
        assert np.abs(changed - plain).mean() > 1
    assert np.abs(text_only - unet_only).mean() > 1


def test_after_a_lora_job_the_checkpoint_is_bitwise_what_it_was(catalog, model_cache, run):
    base = model_cache.checkpoint(catalog.entries["sd_xl_base_1.0"])
    parts = ("unet", "text_encoder", "text_encoder_2")

    def snapshot():
        return {part: ({k: v.clone() for k, v in base[part].state_dict().items()},
                       [type(m) for m in base[part].modules()]) for part in parts}

    before = snapshot()
    result = run(request(f"an astronaut <lora:{LORA}:0.7:1.2>"))
    after = snapshot()
    for part in parts:
        weights, modules = before[part]
        assert after[part][1] == modules, f"{part}: LoRA layers left behind"
        assert after[part][0].keys() == weights.keys()
        assert all(torch_equal(after[part][0][k], weights[k]) for k in weights), f"{part}: weights changed"
    shorthash = json.loads(result.info)["extra_generation_params"]["Lora hashes"]
    assert shorthash.startswith(f"{LORA}: ") and len(shorthash) == len(LORA) + 2 + 12
    assert LORA in model_cache.held()  # read once, kept for the next job that names it


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def test_several_loras_at_once_from_a_file_a_folder_and_the_hub_cache(tmp_path, tiny_catalog_path, catalog):
    """Three catalog entries holding the same weights (a file, a folder, a hub repository in the local cache): at
    0.5 + 0.25 + 0.25 they draw what the one LoRA draws at 1, up to rounding."""
    from img2img_runner.catalog import Catalog
    from img2img_runner.execute import execute
    from img2img_runner.pipelines import ModelCache

    weights = catalog.local_path(catalog.entries[LORA].source)
    (tmp_path / "folder").mkdir()
    shutil.copy(weights, tmp_path / "folder" / "style.safetensors")
    commit = "0" * 40  # the hub's local cache: refs/main names the snapshot folder holding the repository's files
    repo = tmp_path / "cache" / "hub" / "models--someone--tiny-lora"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    shutil.copy(weights, repo / "snapshots" / commit / "tiny_lora.safetensors")
    data = yaml.safe_load(tiny_catalog_path.read_text())
    data["models"]["from_folder"] = {"architecture": "lora-sdxl", "source": {"path": str(tmp_path / "folder")}}
    data["models"]["from_hub"] = {"architecture": "lora-sdxl", "source": {"hub": "someone/tiny-lora"}}
    several = Catalog.from_dict(data, base_dir=tiny_catalog_path.parent, cache_dir=tmp_path / "cache")
    cache = ModelCache(several)

    def run_here(job_input):
        return execute(job_input, several, cache=cache)

    one = pixels(run_here(request(f"a horse <lora:{LORA}:1>")))
    three = run_here(request(f"a horse <lora:{LORA}:0.5> <lora:from_folder:0.25><lora:from_hub:0.25>"))
    plain = pixels(run_here(request("a horse")))
    assert np.abs(pixels(three) - one).mean() < 0.1 * np.abs(one - plain).mean()
    shorthash = cache.lora(several.entries[LORA]).shorthash
    assert json.loads(three.info)["extra_generation_params"]["Lora hashes"] == ", ".join(
        f"{name}: {shorthash}" for name in (LORA, "from_folder", "from_hub"))


def test_an_unknown_lora_is_refused_by_name_before_anything_loads(catalog, run):
    from img2img_runner.catalog import ModelError
    from img2img_runner.pipelines import ModelCache

    cache = ModelCache(catalog)
    with pytest.raises(ModelError) as exc:
        run(request("an astronaut <lora:pixel-art-xl:0.8>"), cache=cache)
    assert exc.value.field == "prompt"
    assert "unknown LoRA 'pixel-art-xl'" in str(exc.value) and LORA in str(exc.value)
    assert cache.loads == 0


def test_a_pool_that_lists_a_lora_reads_it_at_start_and_says_it_holds_it(catalog):
    from img2img_runner.pipelines import ModelCache

    cache = ModelCache(catalog)
    cache.preload([LORA])
    assert cache.held() == [LORA] and cache.loads == 1
    assert catalog.servable(cache.held()) == [LORA]  # what the runner reports when it asks for work
