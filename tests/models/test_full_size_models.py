"""The full-size random models: the published architectures from the configurations in the repository (built on the
meta device here: no memory, no weights), CLIP's vocabulary, and the speed switches applied by the model cache."""

from __future__ import annotations

import gzip

import pytest
import torch

from img2img_runner import tiny_models
from img2img_runner.acceleration import Switches, compiled_regions
from img2img_runner.pipelines import ModelCache, Runtime

# Parameters of the published models (their fp16 safetensors files are 2 bytes a parameter: 5.14 GB SDXL UNet,
# 4.52 GB refiner UNet, 545 MB diffusers_xl_canny_mid, 723 MB control_v11p_sd15_canny, 1.72 GB SD 1.5 UNet)
PUBLISHED = {
    "sdxl-base-unet": 2_567_463_684,
    "sdxl-refiner-unet": 2_259_526_660,
    "sdxl-controlnet-canny-mid": 272_586_000,
    "sdxl-vae": 83_653_863,
    "sd15-unet": 859_520_964,
    "sd15-vae": 83_653_863,
    "sd15-controlnet-canny": 361_279_120,
    "clip-vit-large-text": 123_060_480,
    "sdxl-text-encoder-2": 694_659_840,
}


def _parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _first_conv(model):
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).weight


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_the_full_size_builder_makes_the_published_architecture(name):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    make = tiny_models._Maker("full", "meta")
    if name.startswith(("clip", "sdxl-text")):
        model = make.text_encoder(None, name, with_projection=name == "sdxl-text-encoder-2", seed=0)
    elif "controlnet" in name:
        model = make.controlnet(name, seed=0)
    else:
        model = make.diffusers_model(AutoencoderKL if name.endswith("vae") else UNet2DConditionModel, name, seed=0)
    assert _parameters(model) == PUBLISHED[name]
    assert next(model.parameters()).dtype == torch.float16  # saved as the published fp16 files


def test_every_configuration_in_the_repository_is_one_the_builder_names():
    assert {p.stem for p in tiny_models.CONFIGS.glob("*.json")} == set(tiny_models.FULL_SIZE) == set(PUBLISHED)


def test_clip_vocabulary_from_a_bpe_merges_file():
    # OpenAI's file: a version line, then merges; CLIP keeps the first 48894
    merges_file = "#version: 0.2\n" + "\n".join(f"x{i} y{i}" for i in range(50000))
    merges = tiny_models.clip_merges(merges_file)
    vocab = tiny_models.clip_vocabulary(merges)
    assert len(merges) == 48894 and len(vocab) == tiny_models.CLIP_VOCAB_SIZE == 49408
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["x0y0"] == 512


def test_the_real_clip_vocabulary_encodes_as_clip_does():
    path = tiny_models.clip_bpe_file()
    if path is None:
        pytest.skip("open-clip-torch is not installed (the GPU wheelhouse brings it)")
    tokenizer = tiny_models._tokenizer("full")
    assert len(tokenizer) == 49408
    # ids of openai/clip-vit-large-patch14's tokenizer for the same text
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert gzip.decompress(path.read_bytes()).startswith(b'"bpe_simple_vocab_16e6.txt#version: 0.2')


def test_the_model_cache_applies_the_switches_and_replaces_them(catalog):
    eager = Switches()
    fast = Switches(sdpa=False, channels_last=True, compile="regional", compile_backend="eager")
    cache = ModelCache(catalog, Runtime("cpu", torch.float32, fast))
    cache.begin_job()
    base = cache.checkpoint(catalog.find("sd_xl_base_1.0"))
    controlnet = cache.controlnet(catalog.find("diffusers_xl_canny_mid"))
    unet, vae = base["unet"], base["vae"]

    for model in (unet, controlnet, vae):
        assert {type(p).__name__ for p in model.attn_processors.values()} == {"AttnProcessor"}
        assert _first_conv(model).is_contiguous(memory_format=torch.channels_last)
    for model in (unet, controlnet):
        regions = compiled_regions(model)
        assert regions and {type(r).__name__ for r in regions} == {"BasicTransformerBlock"}
    assert not compiled_regions(vae)

    cache.set_switches(Switches(compile="full", compile_backend="eager"))
    assert compiled_regions(unet) == [unet] and compiled_regions(controlnet) == [controlnet]

    cache.set_switches(eager)
    for model in (unet, controlnet, vae):
        assert {type(p).__name__ for p in model.attn_processors.values()} == {"AttnProcessor2_0"}
        assert _first_conv(model).is_contiguous()
        assert not compiled_regions(model)
    # a model loaded after the change runs with the new switches
    refiner = cache.refiner(catalog.find("sd_xl_refiner_1.0"), base, vae)
    assert not compiled_regions(refiner["unet"])


def test_the_pngs_of_a_job_encoded_in_parallel_are_the_ones_encoded_one_by_one():
    from PIL import Image

    from img2img_runner.storage import image_bytes, image_files

    images = [Image.effect_noise((96, 64), 40 + 10 * i).convert("RGB") for i in range(3)]
    images[0].info["parameters"] = "an astronaut riding a horse\nSteps: 30"
    assert image_files(images) == [image_bytes(image) for image in images]
