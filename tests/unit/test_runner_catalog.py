"""The model catalog: A1111 names -> entries, compatibility, substitutes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runner_samples import tiny_catalog

from img2img_runner.catalog import Catalog, CatalogError, ModelError


@pytest.mark.parametrize("name", [
    "sd_xl_base_1.0",
    "sd_xl_base_1.0 [31e35c80fc]",  # A1111 title with the short hash
    "sd_xl_base_1.0.safetensors",
    "SD_XL_BASE_1.0",
    "SDXL/sd_xl_base_1.0.safetensors",  # A1111 checkpoints in a subfolder
])
def test_a1111_spellings_of_a_checkpoint(name):
    assert tiny_catalog().find(name).name == "sd_xl_base_1.0"


def test_vae_with_and_without_extension():
    catalog = tiny_catalog()
    assert catalog.find("sdxl_vae").name == "sdxl_vae.safetensors"
    assert catalog.find("sdxl_vae.safetensors").stem == "sdxl_vae"


def test_resolve_the_seed_request():
    resolved = tiny_catalog().resolve(checkpoint="sd_xl_base_1.0", vae="sdxl_vae.safetensors",
                                      refiner="sd_xl_refiner_1.0", controlnets=["control_v11p_sd15_canny"])
    assert resolved.architecture == "sdxl"
    assert resolved.vae.name == "sdxl_vae.safetensors"
    assert resolved.refiner.name == "sd_xl_refiner_1.0"
    (unit,) = resolved.controlnets
    assert unit.requested.name == "control_v11p_sd15_canny" and unit.runs.name == "diffusers_xl_canny_mid"
    assert unit.substituted


def test_sd15_controlnet_under_sd15_is_used_as_is():
    resolved = tiny_catalog().resolve(checkpoint="deliberate_v2", vae=None, refiner=None,
                                      controlnets=["control_v11p_sd15_canny"])
    assert not resolved.controlnets[0].substituted


def test_default_checkpoint_and_automatic_vae():
    resolved = tiny_catalog().resolve(checkpoint=None, vae="Automatic", refiner=None, controlnets=[])
    assert resolved.checkpoint.name == "sd_xl_base_1.0" and resolved.vae is None


def test_incompatible_controlnet_names_both_models():
    catalog = tiny_catalog(control_v11p_sd15_canny="substitutes")
    with pytest.raises(ModelError) as exc:
        catalog.resolve(checkpoint="sd_xl_base_1.0", vae=None, refiner=None, controlnets=[None, "control_v11p_sd15_canny"])
    message = str(exc.value)
    assert "control_v11p_sd15_canny" in message and "sd_xl_base_1.0" in message
    assert exc.value.field == "alwayson_scripts.controlnet.args[1].model"


def test_sdxl_controlnet_under_sd15_is_refused():
    with pytest.raises(ModelError, match="diffusers_xl_canny_mid.*v1-5-pruned-emaonly"):
        tiny_catalog().resolve(checkpoint="v1-5-pruned-emaonly", vae=None, refiner=None,
                               controlnets=["diffusers_xl_canny_mid"])


def test_unknown_names_list_what_the_catalog_has():
    with pytest.raises(ModelError) as exc:
        tiny_catalog().resolve(checkpoint="sd_xl_base_0.9", vae=None, refiner=None, controlnets=[])
    assert exc.value.field == "override_settings.sd_model_checkpoint"
    assert "sd_xl_base_0.9" in str(exc.value) and "deliberate_v2" in str(exc.value)
    with pytest.raises(ModelError, match="not a checkpoint"):
        tiny_catalog().resolve(checkpoint="sdxl_vae.safetensors", vae=None, refiner=None, controlnets=[])
    with pytest.raises(ModelError) as exc:
        tiny_catalog().resolve(checkpoint=None, vae="vae-ft-mse-840000", refiner=None, controlnets=[])
    assert exc.value.field == "override_settings.sd_vae"


def test_refiner_needs_an_sdxl_base():
    with pytest.raises(ModelError) as exc:
        tiny_catalog().resolve(checkpoint="deliberate_v2", vae=None, refiner="sd_xl_refiner_1.0", controlnets=[])
    assert "deliberate_v2" in str(exc.value) and "sd_xl_refiner_1.0" in str(exc.value)
    assert exc.value.field == "refiner_checkpoint"


@pytest.mark.parametrize("models, message", [
    ({"x": {"architecture": "sdxl-turbo", "source": {"path": "x"}}}, "architecture"),
    ({"x": {"architecture": "sdxl"}}, "needs a source"),
    ({"x": {"architecture": "sdxl", "source": {"path": "a", "hub": "b"}}}, "exactly one"),
    ({"x": {"architecture": "controlnet-sd15", "source": "x", "substitutes": {"sdxl": "y"}}}, "not in the catalog"),
    ({"x": {"architecture": "controlnet-sd15", "source": "x", "substitutes": {"controlnet-sdxl": "x"}}},
     "not a checkpoint architecture"),
    ({"x": {"architecture": "sdxl", "source": "x", "hash": "zz"}}, "hexadecimal"),
])
def test_a_broken_catalog_says_what_is_wrong(models, message):
    with pytest.raises(CatalogError, match=message):
        Catalog.from_dict({"models": models})


def test_source_shorthands_and_paths(tmp_path: Path):
    catalog = Catalog.from_dict({"models": {
        "a": {"architecture": "sdxl", "source": "rel/folder"},
        "b": {"architecture": "sdxl", "source": "/abs/model.safetensors"},
        "c": {"architecture": "sdxl", "source": "s3://models/xl/base/"},
        "d": {"architecture": "sdxl", "source": "hub:stabilityai/stable-diffusion-xl-base-1.0"},
    }}, base_dir=tmp_path, cache_dir=tmp_path / "cache")
    e = catalog.entries
    assert (e["a"].source.kind, catalog.local_path(e["a"].source)) == ("path", tmp_path / "rel/folder")
    assert e["b"].source.kind == "file"
    assert catalog.local_path(e["c"].source) == tmp_path / "cache/s3/models/xl/base"
    assert e["d"].source.kind == "hub" and e["d"].source.location == "stabilityai/stable-diffusion-xl-base-1.0"


def test_the_chart_default_catalog_is_valid():
    path = Path(__file__).resolve().parents[2] / "helm/img2img-operator/files/default-catalog.yaml"
    if not path.exists():
        pytest.skip("no chart default catalog")
    catalog = Catalog.from_dict(yaml.safe_load(path.read_text()), cache_dir="/tmp/unused")
    resolved = catalog.resolve(checkpoint="sd_xl_base_1.0", vae="sdxl_vae.safetensors", refiner="sd_xl_refiner_1.0",
                               controlnets=["control_v11p_sd15_canny"])
    assert resolved.controlnets[0].runs.architecture == "controlnet-sdxl"


def test_short_title_is_a1111s():
    entry = tiny_catalog().find("sd_xl_refiner_1.0")
    assert entry.short_title == f"sd_xl_refiner_1.0 [{entry.hash}]"


def test_annotator_lookup():
    catalog = Catalog.from_dict({"models": {
        "annotators": {"architecture": "annotator", "source": "ann"},
        "midas": {"architecture": "annotator", "source": "midas", "modules": ["depth", "normal_map"]},
    }})
    assert catalog.annotator("depth").name == "midas"
    assert catalog.annotator("hed").name == "annotators"


def annotator_catalog() -> Catalog:
    return Catalog.from_dict({"default_checkpoint": "v1-5-pruned-emaonly", "models": {
        "v1-5-pruned-emaonly": {"architecture": "sd15", "source": "sd15"},
        "control_v11p_sd15_canny": {"architecture": "controlnet-sd15", "source": "canny"},
        "lllyasviel/Annotators": {"architecture": "annotator", "source": "s3://models/annotators/"},
        "pose": {"architecture": "annotator", "source": "pose", "modules": ["openpose", "openpose_hand"]},
    }})


def unit(module: str, enabled: bool = True) -> dict:
    return {"module": module, "model": "control_v11p_sd15_canny", "enabled": enabled}


def annotator_payload(*units: dict):
    from img2img.api.payload import Img2ImgPayload

    return Img2ImgPayload.model_validate({"init_images": ["s3://inputs/a.png"],
                                          "alwayson_scripts": {"controlnet": {"args": list(units)}}})


def test_a_units_annotator_weights_resolve_by_its_position_in_the_request():
    resolved = annotator_catalog().resolve_payload(annotator_payload(
        unit("openpose", enabled=False), unit("lineart_realistic"), unit("canny"), unit("openpose_hand")))
    assert {i: e.name for i, e in resolved.annotators.items()} == {1: "lllyasviel/Annotators", 3: "pose"}


def test_without_an_annotator_entry_the_refusal_names_the_unit_the_weights_and_the_entry_kind():
    catalog = Catalog.from_dict({"models": {"v1-5-pruned-emaonly": {"architecture": "sd15", "source": "sd15"},
                                            "control_v11p_sd15_canny": {"architecture": "controlnet-sd15",
                                                                        "source": "canny"},
                                            "pose": {"architecture": "annotator", "source": "pose",
                                                     "modules": ["openpose"]}},
                                 "default_checkpoint": "v1-5-pruned-emaonly"})
    with pytest.raises(ModelError) as exc:
        catalog.resolve_payload(annotator_payload(unit("canny", enabled=False), unit("openpose"), unit("lineart")))
    assert exc.value.field == "alwayson_scripts.controlnet.args[2].module"
    assert "'lineart'" in str(exc.value) and "sk_model.pth, sk_model2.pth" in str(exc.value)
    assert "architecture 'annotator'" in str(exc.value)


def test_annotator_keys_name_the_entry_serving_the_preprocessor():
    catalog = annotator_catalog()
    assert catalog.find("annotator:openpose").name == "pose"
    assert catalog.find("annotator:lineart_realistic").name == "lllyasviel/Annotators"  # CN's label
    assert catalog.find("annotator:no_such_preprocessor") is None


def test_a_runner_serves_the_preprocessors_whose_detectors_it_holds():
    held = ["lllyasviel/Annotators", "annotator:lineart", "annotator:lineart_coarse", "pose", "annotator:openpose"]
    assert annotator_catalog().servable(held) == sorted(held)
    # a key the catalog cannot serve (no preprocessor of that name) is not reported
    assert annotator_catalog().servable(["annotator:no_such_preprocessor"]) == []


def test_every_preprocessor_with_annotator_weights_has_a_detector():
    from img2img.api.controlnet import WEIGHTED_PREPROCESSORS
    from img2img_runner.preprocess import NO_WEIGHTS, detector_class

    assert all(detector_class(module) for module in WEIGHTED_PREPROCESSORS)
    assert not set(NO_WEIGHTS) & set(WEIGHTED_PREPROCESSORS)


@pytest.mark.parametrize("spec, reason", [
    ({"architecture": "annotator", "source": {"file": "sk_model.pth"}}, "a folder"),
    ({"architecture": "annotator", "source": "ann", "modules": ["canny"]}, "['canny'] are not preprocessors"),
])
def test_an_annotator_entry_is_a_folder_serving_weighted_preprocessors(spec, reason):
    with pytest.raises(CatalogError) as exc:
        Catalog.from_dict({"models": {"ann": spec}})
    assert "'ann'" in str(exc.value) and reason in str(exc.value)


def test_a_runner_serves_what_it_holds_and_what_runs_as_it_under_a_held_checkpoint():
    catalog = tiny_catalog()
    held = ["sd_xl_base_1.0", "sd_xl_refiner_1.0", "sdxl_vae.safetensors", "diffusers_xl_canny_mid"]
    assert catalog.servable(held) == sorted(held + ["control_v11p_sd15_canny"])
    # without an SDXL checkpoint the SD 1.5 ControlNet would run as itself: holding the SDXL one does not serve it
    assert catalog.servable(["diffusers_xl_canny_mid"]) == ["diffusers_xl_canny_mid"]
    assert catalog.servable(["not_in_the_catalog"]) == []


# --- LoRAs ---------------------------------------------------------------------------------------------------


def lora_catalog() -> Catalog:
    data = {"default_checkpoint": "sd_xl_base_1.0", "models": {
        "sd_xl_base_1.0": {"architecture": "sdxl", "source": "base"},
        "sd_xl_refiner_1.0": {"architecture": "sdxl-refiner", "source": "refiner"},
        "juggernaut_xl": {"architecture": "sdxl", "source": "juggernaut"},
        "v1-5-pruned-emaonly": {"architecture": "sd15", "source": "sd15"},
        "pixel-art-xl.safetensors": {"architecture": "lora-sdxl", "source": "loras/pixel-art-xl.safetensors",
                                     "hash": "ABCDEF0123456789"},
        "add_detail": {"architecture": "lora-sd15", "source": "loras/add_detail.safetensors"},
        "offset_xl": {"architecture": "lora-sdxl", "source": "s3://models/loras/offset/"},
    }}
    return Catalog.from_dict(data)


def test_loras_resolve_as_a1111_spells_them_in_the_prompts_order():
    resolved = lora_catalog().resolve(checkpoint="sd_xl_base_1.0", vae=None, refiner="sd_xl_refiner_1.0",
                                      controlnets=[], loras=["offset_xl", "pixel-art-xl"])
    assert [e.name for e in resolved.loras] == ["offset_xl", "pixel-art-xl.safetensors"]
    assert resolved.loras[1].hash == "abcdef012345"  # A1111's "Lora hashes" show 12 hex


def test_an_unknown_lora_is_refused_naming_it_and_the_catalogs_loras():
    with pytest.raises(ModelError) as exc:
        lora_catalog().resolve(checkpoint=None, vae=None, refiner=None, controlnets=[], loras=["pixel", "cutesexy"])
    assert exc.value.field == "prompt"
    assert str(exc.value) == ("unknown LoRA 'pixel'; the model catalog has: add_detail, offset_xl, "
                              "pixel-art-xl.safetensors")
    with pytest.raises(ModelError, match="'sd_xl_refiner_1.0' is a sdxl-refiner model, not a LoRA"):
        lora_catalog().resolve(checkpoint=None, vae=None, refiner=None, controlnets=[], loras=["sd_xl_refiner_1.0"])


def test_a_lora_of_another_family_is_refused_naming_both_models():
    with pytest.raises(ModelError) as exc:
        lora_catalog().resolve(checkpoint="sd_xl_base_1.0", vae=None, refiner=None, controlnets=[],
                               loras=["add_detail"])
    assert exc.value.field == "prompt"
    assert "add_detail" in str(exc.value) and "lora-sd15" in str(exc.value) and "sd_xl_base_1.0" in str(exc.value)


def test_a_lora_named_twice_is_refused():
    with pytest.raises(ModelError, match="'pixel-art-xl.safetensors' is named twice"):
        lora_catalog().resolve(checkpoint=None, vae=None, refiner=None, controlnets=[],
                               loras=["pixel-art-xl", "PIXEL-ART-XL.safetensors"])


def test_loras_with_a_base_checkpoint_as_the_refiner_are_refused():
    # A1111 would apply the LoRAs to that refiner too (its module names are the base's); an SDXL refiner gets none
    with pytest.raises(ModelError) as exc:
        lora_catalog().resolve(checkpoint="sd_xl_base_1.0", vae=None, refiner="juggernaut_xl", controlnets=[],
                               loras=["pixel-art-xl"])
    assert exc.value.field == "refiner_checkpoint" and "juggernaut_xl" in str(exc.value)
    assert lora_catalog().resolve(checkpoint="sd_xl_base_1.0", vae=None, refiner="juggernaut_xl",
                                  controlnets=[]).loras == ()


def test_an_unknown_controlnet_is_refused_naming_the_unit_as_sent_when_a_disabled_unit_comes_first():
    from runner_samples import seed_input, seed_payload

    unit = seed_input()["payload"]["alwayson_scripts"]["controlnet"]["args"][0]
    payload = seed_payload(alwayson_scripts={"controlnet": {"args": [{**unit, "enabled": False},
                                                                     {**unit, "model": "nope"}]}})
    with pytest.raises(ModelError) as exc:
        tiny_catalog().resolve_payload(payload)
    assert exc.value.field == "alwayson_scripts.controlnet.args[1].model" and "nope" in str(exc.value)
