#!/usr/bin/env bash
# Make the wheelhouse that bench/gpu_check.sh installs from on a GPU machine without network:
#
#   bench/gpu_wheelhouse.sh NAME [--lean]   # NAME = cpXY-ARCH of the GPU machine's Python, e.g. cp312-x86_64
#
# Run it here, on a machine with the package registry and the development environment (make venv). It downloads,
# for that Python and platform, the wheels of the runner's requirements and of everything they need, at the
# versions installed here (bench/wheelhouse.py closure), without torch, torchvision and their CUDA libraries (the GPU
# machine's own build is used), plus open-clip-torch for CLIP's vocabulary. Result: wheelhouse/NAME/ (about 150 MB,
# most of it opencv, scipy and scikit-image); copy it next to the checkout on the GPU machine. --lean leaves out the
# scientific stack CUDA images already carry (numpy, scipy, opencv, Pillow, ...: bench/wheelhouse.py GPU_IMAGES_CARRY):
# about 55 MB, for an NGC-style image.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-}" lean=()
[[ "${2:-}" == --lean ]] && lean=(--lean)
if [[ ! "$name" =~ ^cp3([0-9]+)-(x86_64|aarch64)$ ]]; then
  echo "usage: bench/gpu_wheelhouse.sh cpXY-ARCH   (e.g. cp312-x86_64 for Python 3.12 on x86_64; ARCH x86_64|aarch64)" >&2
  exit 2
fi
minor="${BASH_REMATCH[1]}" arch="${BASH_REMATCH[2]}"
py=.venv/bin/python
[[ -x $py ]] || { echo "no .venv here: run make venv first" >&2; exit 2; }
out="wheelhouse/$name"
mkdir -p "$out"
platforms=()
for glibc in 2_17 2_24 2_27 2_28 2_31 2_34 2_35; do platforms+=(--platform "manylinux_${glibc}_${arch}"); done
platforms+=(--platform "manylinux2014_${arch}" --platform "linux_${arch}")
target=(--only-binary=:all: --python-version "3.${minor}" --implementation cp --abi "cp3${minor}" "${platforms[@]}")
mapfile -t wanted < <("$py" bench/wheelhouse.py closure "${lean[@]}")
mapfile -t no_deps < <("$py" bench/wheelhouse.py no-deps)
echo "[gpu_wheelhouse] ${#wanted[@]} packages + ${no_deps[*]} for Python 3.${minor} on ${arch} -> $out"
"$py" -m pip download --quiet --disable-pip-version-check --no-deps -d "$out" "${target[@]}" "${wanted[@]}" "${no_deps[@]}"
du -sh "$out"
