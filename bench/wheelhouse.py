"""What a GPU machine without network needs besides its own torch: the runner's requirements, from pyproject.

- ``requirements``: the core dependencies and the ``runner`` extra as pyproject pins them, without the torch family
  (the machine's CUDA build of torch and torchvision is used as it is), plus ``open-clip-torch`` for CLIP's
  vocabulary (its BPE file only: installed without its dependencies). What ``gpu_check.sh`` installs.
- ``check-torch``: whether this interpreter's torch is in ``TORCH_RANGE`` (exit 0) or not (exit 1, saying why).
- ``closure``: those requirements and everything they need, at the versions installed here (the development
  environment made by ``scripts/make_venv.py``), without the torch family: what ``gpu_wheelhouse.sh`` downloads.
  ``closure --lean`` leaves out the scientific stack that CUDA images (NGC, the cloud vendors') already carry
  (``GPU_IMAGES_CARRY``): a wheelhouse of ~50 MB instead of ~150 MB, for machines known to have them.
- ``plan DIR``: the wheels in DIR whose distribution this interpreter lacks at that version: what ``gpu_check.sh``
  installs (without dependency resolution: the wheelhouse is the closure, and what it leaves out is the machine's).

``python bench/wheelhouse.py requirements|closure`` prints one requirement a line.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# what the GPU machine brings (its CUDA build) and what only torch itself needs
TORCH_FAMILY = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*|pytorch-triton.*)$")
# a wheel whose one file the models need (CLIP's BPE merges), not its code: installed with --no-deps
NO_DEPS = ("open-clip-torch==3.3.0",)
# the torch versions the runner supports: from 2.5 (nn.Module.compile, regional compilation reusing one graph across
# blocks, SDPA) up to the newest tested here (pyproject's pin)
TORCH_RANGE = ((2, 5), (2, 15))
# what CUDA images bring besides torch (NGC's PyTorch image, the cloud vendors' deep-learning images): the runner uses
# them through APIs stable across their versions (arrays, resizing, Canny), so the machine's own copies serve
GPU_IMAGES_CARRY = frozenset({
    "numpy", "scipy", "scikit-image", "opencv-python-headless", "pillow", "networkx", "imageio", "tifffile",
    "lazy-loader", "psutil", "pyyaml", "regex", "requests", "urllib3", "certifi", "charset-normalizer", "idna",
    "packaging", "filelock", "fsspec", "tqdm", "typing-extensions", "six", "python-dateutil", "einops", "hf-xet",
    "aiohttp", "aiohappyeyeballs", "aiosignal", "attrs", "frozenlist", "multidict", "propcache", "yarl", "anyio",
    "h11", "click", "rich", "markdown-it-py", "mdurl", "pygments", "shellingham", "typer", "zipp", "annotated-doc",
})


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def requirements() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["runner"]
    return [r for r in wanted if not TORCH_FAMILY.match(_name(r))]


def closure(lean: bool = False) -> list[str]:
    """``name==version`` of the requirements and their dependencies as installed here (extras and markers that
    do not apply on Linux ignored), the torch family left out, and with ``lean`` what CUDA images carry."""
    seen: dict[str, str] = {}
    todo = [_name(r) for r in requirements()]
    while todo:
        name = todo.pop()
        if name in seen or TORCH_FAMILY.match(name):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a dependency for another platform or Python
        seen[name] = dist.version
        for req in dist.requires or []:
            if "extra ==" in req or "sys_platform == \"win32\"" in req or "platform_system == \"Windows\"" in req:
                continue
            todo.append(_name(req))
    return sorted(f"{n}=={v}" for n, v in seen.items() if not (lean and n in GPU_IMAGES_CARRY))


def wheel_identity(filename: str) -> tuple[str, str] | None:
    """(normalised name, version) of a wheel file name (PEP 427: ``name-version(-build)?-py-abi-platform.whl``)."""
    parts = filename.removesuffix(".whl").split("-")
    if not filename.endswith(".whl") or len(parts) not in (5, 6):
        return None
    return _name(parts[0]), parts[1]


def plan(wheelhouse: Path) -> list[Path]:
    """The wheels to install: each one whose distribution is missing here or installed at another version; never
    the torch family (the machine's CUDA build stays)."""
    chosen = []
    for wheel in sorted(wheelhouse.glob("*.whl")):
        identity = wheel_identity(wheel.name)
        if identity is None or TORCH_FAMILY.match(identity[0]):
            continue
        name, version = identity
        try:
            if metadata.version(name) == version:
                continue
        except metadata.PackageNotFoundError:
            pass
        chosen.append(wheel)
    return chosen


def torch_supported(version: str) -> bool:
    """Whether torch ``version`` ("2.7.0a0+79aa17489c.nv25.04", "2.15.0+cu132") is in ``TORCH_RANGE``."""
    found = re.match(r"(\d+)\.(\d+)", version)
    if not found:
        return False
    major_minor = (int(found.group(1)), int(found.group(2)))
    return TORCH_RANGE[0] <= major_minor <= TORCH_RANGE[1]


def check_torch() -> int:
    low, high = (".".join(map(str, v)) for v in TORCH_RANGE)
    try:
        import torch
    except ImportError:
        print(f"no torch in {sys.executable}: the GPU machine's own CUDA build ({low} to {high}) is used", file=sys.stderr)
        return 1
    if not torch_supported(torch.__version__):
        print(f"torch {torch.__version__} is outside the supported {low} to {high}", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, GPU: {torch.cuda.is_available()})")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["requirements"]:
        print("\n".join(requirements()))
    elif argv[:1] == ["closure"]:
        print("\n".join(closure(lean="--lean" in argv[1:])))
    elif argv[:1] == ["plan"] and len(argv) == 2:
        print("\n".join(str(w) for w in plan(Path(argv[1]))))
    elif argv[:1] == ["no-deps"]:
        print("\n".join(NO_DEPS))
    elif argv[:1] == ["check-torch"]:
        return check_torch()
    else:
        print("usage: python bench/wheelhouse.py requirements|closure [--lean]|no-deps|plan DIR|check-torch", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
