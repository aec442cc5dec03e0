"""Preprocessors with annotator weights (lineart, openpose, depth_midas), through the runner's real path, on weights from a catalog
entry: random-weight files in the lllyasviel/Annotators format (controlnet-aux's own networks, their state dicts
saved under the real file names), so nothing is downloaded. Random weights draw no real lines or poses: the tests
check the detect map's size and type, that it comes from the unit's image, and that the detector runs the file's
weights, loaded once per runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from model_samples import b64, canny_unit, picture, sd15_input

FAST = dict(steps=2, denoising_strength=0.5)


def _save(module, path: Path, strip_first: bool = False) -> None:
    """A network's state dict under the real file name; OpenPose's body and hand files keep their keys without the
    network's first name (controlnet-aux's ``util.transfer`` adds it back)."""
    import torch

    state = module.state_dict()
    if strip_first:
        state = {key.split(".", 1)[1]: value for key, value in state.items()}
    torch.save(state, path)


@pytest.fixture(scope="module")
def annotators(tmp_path_factory) -> Path:
    import torch
    from controlnet_aux.lineart import Generator
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel
    from controlnet_aux.open_pose.body import bodypose_model
    from controlnet_aux.open_pose.face import FaceNet
    from controlnet_aux.open_pose.hand import handpose_model

    folder = tmp_path_factory.mktemp("annotators")
    torch.manual_seed(0)
    _save(Generator(3, 1, 3), folder / "sk_model.pth")
    _save(Generator(3, 1, 3), folder / "sk_model2.pth")
    _save(bodypose_model(), folder / "body_pose_model.pth", strip_first=True)
    _save(handpose_model(), folder / "hand_pose_model.pth", strip_first=True)
    _save(FaceNet(), folder / "facenet.pth")
    _save(DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True),
          folder / "dpt_hybrid-midas-501f0c75.pt")
    return folder


@pytest.fixture(scope="module")
def with_annotators(tiny_catalog_path, annotators):
    """The tiny catalog plus an annotator entry for the folder, and a fresh model cache over it."""
    from img2img_runner.catalog import Catalog
    from img2img_runner.pipelines import ModelCache

    data = yaml.safe_load(tiny_catalog_path.read_text())
    data["models"]["lllyasviel/Annotators"] = {"architecture": "annotator", "source": {"path": str(annotators)}}
    catalog = Catalog.from_dict(data, base_dir=tiny_catalog_path.parent)
    return catalog, ModelCache(catalog)


def run_unit(with_annotators, unit: dict, **changes):
    from img2img_runner.execute import execute

    catalog, cache = with_annotators
    return execute(sd15_input(alwayson_scripts={"controlnet": {"args": [unit]}}, **{**FAST, **changes}), catalog,
                   cache=cache)


def first_weight(path: Path, key: str) -> np.ndarray:
    import torch

    return torch.load(path, map_location="cpu")[key].numpy()


@pytest.mark.parametrize("module, coarse", [("lineart_realistic", False), ("lineart_coarse", True)])
def test_lineart_runs_the_catalogs_weights_on_the_units_image(with_annotators, annotators, module, coarse):
    catalog, cache = with_annotators
    own = picture(48, 48).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    result = run_unit(with_annotators, canny_unit(module=module, image=b64(own)), width=64, height=64)
    other = run_unit(with_annotators, canny_unit(module=module, image=b64(picture(48, 48))), width=64, height=64)

    detect = np.asarray(result.images[-1])
    assert detect.shape == (64, 64, 3) and detect.dtype == np.uint8
    assert not np.array_equal(detect, np.asarray(other.images[-1]))  # the unit's own image, not another
    detector = cache.annotator(catalog.find("lllyasviel/Annotators"), "LineartDetector",
                               ("sk_model.pth", "sk_model2.pth"))
    network = detector.model_coarse if coarse else detector.model
    expected = first_weight(annotators / ("sk_model2.pth" if coarse else "sk_model.pth"), "model0.1.weight")
    assert np.array_equal(network.model0[1].weight.detach().cpu().numpy(), expected)


def test_openpose_loads_its_three_files_once_per_runner(with_annotators, annotators):
    catalog, cache = with_annotators
    result = run_unit(with_annotators, canny_unit(module="openpose"), width=64, height=64)
    loads = cache.loads
    again = run_unit(with_annotators, canny_unit(module="openpose_hand"), width=64, height=64)

    for answer in (result, again):
        detect = np.asarray(answer.images[-1])
        assert detect.shape == (64, 64, 3) and detect.dtype == np.uint8
    assert cache.loads == loads  # the second job (another OpenPose module) loaded nothing
    served = catalog.servable(cache.held())  # what the runner tells the operator when it asks for work
    assert {"lllyasviel/Annotators", "annotator:openpose", "annotator:openpose_full"} <= set(served)
    assert "annotator:hed" not in served  # the same entry, a detector not loaded
    detector = cache.annotator(catalog.find("annotator:openpose"), "OpenposeDetector",
                               ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"))
    body = detector.body_estimation.model.model0.conv1_1.weight.detach().cpu().numpy()
    assert np.array_equal(body, first_weight(annotators / "body_pose_model.pth", "conv1_1.weight"))


def test_depth_midas_runs_the_catalogs_weights(with_annotators, annotators):
    catalog, cache = with_annotators
    result = run_unit(with_annotators, canny_unit(module="depth_midas"), width=96, height=64)

    detect = np.asarray(result.images[-1])
    assert detect.shape == (64, 96, 3) and detect.dtype == np.uint8
    detector = cache.annotator(catalog.find("annotator:depth"), "MidasDetector", ("dpt_hybrid-midas-501f0c75.pt",))
    head = detector.model.model.scratch.output_conv[0].weight.detach().cpu().numpy()
    assert np.array_equal(head, first_weight(annotators / "dpt_hybrid-midas-501f0c75.pt",
                                             "scratch.output_conv.0.weight"))


def test_an_annotator_entry_without_the_file_fails_naming_the_missing_file(tiny_catalog_path, tmp_path):
    from img2img.api.exitcodes import ExitCode
    from img2img_runner.catalog import Catalog
    from img2img_runner.errors import classify
    from img2img_runner.execute import execute

    (tmp_path / "annotators").mkdir()
    (tmp_path / "annotators" / "body_pose_model.pth").write_bytes(b"")
    data = yaml.safe_load(tiny_catalog_path.read_text())
    data["models"]["annotators"] = {"architecture": "annotator", "source": {"path": str(tmp_path / "annotators")}}
    catalog = Catalog.from_dict(data, base_dir=tiny_catalog_path.parent)
    with pytest.raises(Exception) as exc:
        execute(sd15_input(alwayson_scripts={"controlnet": {"args": [canny_unit(module="openpose")]}}, **FAST),
                catalog)
    failure = classify(exc.value)
    assert failure.code == ExitCode.MODEL
    assert failure.field == "input.payload.alwayson_scripts.controlnet.args[0].module"
    assert "hand_pose_model.pth, facenet.pth not found" in failure.message
    assert "body_pose_model.pth" not in failure.message  # that one is there



def test_a_pool_preloads_an_annotator_by_its_preprocessor(with_annotators):
    from img2img_runner.catalog import ModelError
    from img2img_runner.pipelines import ModelCache

    catalog, _ = with_annotators
    cache = ModelCache(catalog)
    cache.preload(["annotator:lineart_realistic"], field="IMG2IMG_POOL_MODELS")
    assert cache.loads == 1
    assert cache.held() == ["annotator:lineart", "annotator:lineart_coarse", "lllyasviel/Annotators"]
    with pytest.raises(ModelError) as exc:  # a whole lllyasviel/Annotators folder: which detectors is not said
        cache.preload(["lllyasviel/Annotators"], field="IMG2IMG_POOL_MODELS")
    assert exc.value.field == "IMG2IMG_POOL_MODELS" and "annotator:<preprocessor>" in str(exc.value)
