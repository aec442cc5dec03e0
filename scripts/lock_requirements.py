"""Write requirements/<image>.lock: every Python package an image installs, pinned, with the hashes of its files.

The Dockerfiles install a lock with ``pip install --require-hashes --only-binary=:all:`` and then the project with
``--no-deps``, so an image gets exactly these files or fails to build. The versions are those of the development
environment (``.venv``, what the tests ran), as constraints; what the image needs beyond them (its Python differs)
is resolved for the image's Python and platform. Run ``make lock`` after changing a dependency in pyproject.toml.

uv (a pinned version, in a tool environment of its own under the cache folder) does the resolving: pip-compile
resolves only for the Python that runs it, and the runner image's Python (3.12) is not the development one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UV_VERSION = "0.13.8"
PLATFORM = "x86_64-manylinux_2_28"  # the images are linux/amd64 (glibc 2.36 and 2.39: manylinux_2_28 wheels run)
# image -> (the extras it installs, its Python); the Dockerfiles' base images decide the Python
IMAGES = {"operator": (("operator", "gateway"), "3.11"), "runner": (("runner",), "3.12")}
BUILD = ("setuptools>=69", "wheel")  # the project's build backend: installed from the lock too (--no-build-isolation)


def lock_path(image: str) -> Path:
    return REPO / "requirements" / f"{image}.lock"


def uv() -> Path:
    cache = Path(os.environ.get("IMG2IMG_CACHE_DIR") or Path.home() / ".cache" / "img2img-operator")
    env = cache / "tools" / f"uv-{UV_VERSION}"
    binary = env / "bin" / "uv"
    if not binary.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(env)
        subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", f"uv=={UV_VERSION}"],
                       check=True)
    return binary


def main() -> int:
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        print("lock_requirements: no .venv (run `make venv` first): its versions are the constraints", file=sys.stderr)
        return 2
    frozen = subprocess.run([str(python), "-m", "pip", "freeze", "--exclude-editable"], check=True,
                            capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        constraints, build = Path(tmp) / "constraints.txt", Path(tmp) / "build.in"
        constraints.write_text(frozen)
        build.write_text("\n".join(BUILD) + "\n")
        for image, (extras, version) in IMAGES.items():
            lock_path(image).parent.mkdir(exist_ok=True)
            command = [str(uv()), "pip", "compile", "pyproject.toml", str(build),
                       *(a for extra in extras for a in ("--extra", extra)), "--constraint", str(constraints),
                       "--generate-hashes", "--only-binary", ":all:", "--python-version", version,
                       "--python-platform", PLATFORM, "--no-header", "--quiet", "--output-file", str(lock_path(image))]
            subprocess.run(command, check=True, cwd=REPO)
            body = (lock_path(image).read_text().replace(f"-r {build}", "the project's build backend")
                    .replace(f"-c {constraints}", "the development environment's version"))
            header = (f"# The {image} image's Python packages: {', '.join(extras)} extra(s) of pyproject.toml and the "
                      f"build backend,\n# for Python {version} on {PLATFORM}, with hashes. Written by `make lock` "
                      "(scripts/lock_requirements.py); do not edit.\n")
            lock_path(image).write_text(header + body)
            print(f"[lock] {lock_path(image).relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
