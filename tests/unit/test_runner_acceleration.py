"""The GPU speed switches as the environment sets them (img2img_runner.acceleration), and the wheelhouse's torch range."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from img2img_runner.acceleration import Switches

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import wheelhouse  # noqa: E402


def test_defaults_leave_a_cpu_runner_as_it_was_and_turn_channels_last_on_for_cuda():
    assert Switches.from_env({}, "cpu") == Switches(sdpa=True, channels_last=False, compile="off")
    assert Switches.from_env({}, "cuda").channels_last is True


def test_each_switch_from_its_variable():
    switches = Switches.from_env({"IMG2IMG_SDPA": "0", "IMG2IMG_CHANNELS_LAST": "off", "IMG2IMG_COMPILE": "Regional",
                                  "IMG2IMG_COMPILE_MODE": "max-autotune-no-cudagraphs"}, "cuda")
    assert (switches.sdpa, switches.channels_last, switches.compile) == (False, False, "regional")
    assert switches.compile_mode == "max-autotune-no-cudagraphs"
    assert "attention classic" in switches.describe() and "compile regional" in switches.describe()


@pytest.mark.parametrize("env, variable", [
    ({"IMG2IMG_COMPILE": "fast"}, "IMG2IMG_COMPILE"),
    ({"IMG2IMG_SDPA": "maybe"}, "IMG2IMG_SDPA"),
    ({"IMG2IMG_CHANNELS_LAST": "2"}, "IMG2IMG_CHANNELS_LAST"),
])
def test_a_value_a_switch_cannot_take_is_refused_naming_the_variable(env, variable):
    with pytest.raises(ValueError, match=variable):
        Switches.from_env(env, "cuda")


@pytest.mark.parametrize("version, supported", [
    ("2.15.0+cu132", True),
    ("2.7.0a0+79aa17489c.nv25.04", True),  # an NGC container's build
    ("2.5.1", True),
    ("2.4.1+cu121", False),  # before nn.Module.compile of repeated blocks sharing one graph
    ("2.16.0", False),  # newer than any tested
    ("1.13.1", False),
])
def test_torch_versions_the_gpu_check_accepts(version, supported):
    assert wheelhouse.torch_supported(version) is supported


def test_the_gpu_machine_installs_the_runner_requirements_but_never_torch():
    wanted = wheelhouse.requirements()
    assert any(r.startswith("diffusers==") for r in wanted) and any(r.startswith("transformers==") for r in wanted)
    assert not [r for r in wanted if r.split("=")[0].split(">")[0] in ("torch", "torchvision")]


def test_the_gpu_machine_installs_from_the_wheelhouse_only_what_it_lacks_at_that_version(tmp_path):
    from importlib import metadata

    pydantic = metadata.version("pydantic")
    for name in (f"pydantic-{pydantic}-py3-none-any.whl",  # here at this version: the machine's copy serves
                 "pydantic-1.0.0-py3-none-any.whl",  # another version: installed
                 "surely_not_installed_pkg-0.1-py3-none-any.whl",  # missing: installed
                 "torch-2.0.0-cp312-cp312-manylinux_2_28_x86_64.whl",  # never: the machine's CUDA build stays
                 "nvidia_cublas-13.0-py3-none-manylinux_2_28_x86_64.whl",
                 "README.txt"):
        (tmp_path / name).write_text("")
    assert [p.name for p in wheelhouse.plan(tmp_path)] == [
        "pydantic-1.0.0-py3-none-any.whl", "surely_not_installed_pkg-0.1-py3-none-any.whl"]


def test_a_lean_wheelhouse_leaves_out_what_cuda_images_carry_but_keeps_the_runners_own_libraries():
    full = {r.split("==")[0] for r in wheelhouse.closure()}
    lean = {r.split("==")[0] for r in wheelhouse.closure(lean=True)}
    assert {"numpy", "scipy", "pillow", "opencv-python-headless"} <= full - lean
    assert {"diffusers", "transformers", "pydantic", "torchsde", "controlnet-aux"} <= lean


def test_committed_figures_show_no_machine_paths():
    import machine

    home, repo = Path.home(), Path(__file__).resolve().parents[2]
    assert machine.shown_path(home / ".cache/img2img-operator/models/full/catalog.yaml") == \
        "~/.cache/img2img-operator/models/full/catalog.yaml"
    assert machine.shown_path(repo / "runner/img2img_runner/pipelines.py") == "runner/img2img_runner/pipelines.py"
    assert machine.shown_path(repo / ".gpu-site/diffusers/schedulers/x.py") == "diffusers/schedulers/x.py"
    assert machine.shown_path("/opt/torch/.venv/lib/python3.12/site-packages/torch/cuda/__init__.py") == \
        "torch/cuda/__init__.py"
    for committed in ("BENCHMARKS.md", "bench/gpu-check.json", "bench/gpu-profile.json"):
        text = (repo / committed).read_text()
        assert str(home) + "/" not in text and str(repo) + "/" not in text, committed
