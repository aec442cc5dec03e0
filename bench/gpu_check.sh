#!/usr/bin/env bash
# The seed's job at full size on a GPU machine without network, measured (bench/gpu_check.py says what):
#
#   bench/gpu_check.sh [--wheelhouse DIR] [--json FILE] [gpu_check.py options]   # on the GPU machine
#   bench/gpu_check.sh --dry-run [--json FILE]                                   # here: tiny models on the CPU
#
# On a GPU machine it uses the torch it finds (python3, or $PYTHON; torch 2.5 to 2.15, the machine's CUDA build),
# makes .gpu-venv on top of it (--system-site-packages) and installs there only what is missing, offline, from the
# wheelhouse made beforehand by bench/gpu_wheelhouse.sh (default: wheelhouse/cpXY-ARCH of that Python). Then it
# builds the full-size random models (under ~/.cache/img2img-operator/models/full), runs the phases within about
# 7 minutes on an H100/H200, writes the figures to bench/gpu-check.json and renders BENCHMARKS.md's GPU
# section from them. --dry-run runs the same measuring code with the development environment (.venv) on the CPU.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
dry_run=0 wheelhouse="" json="" rest=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --wheelhouse) wheelhouse="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) rest+=("$1"); shift ;;
  esac
done
export PYTHONPATH="$repo:$repo/runner${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
started=$(date +%s)

if [[ $dry_run == 1 ]]; then
  py=.venv/bin/python
  [[ -x $py ]] || { echo "gpu_check: no .venv here: run make venv first" >&2; exit 2; }
  json="${json:-out/gpu-check-dry-run.json}"
  "$py" bench/gpu_check.py --dry-run --json "$json" "${rest[@]}"
  exit 0
fi

system_py="${PYTHON:-python3}"
"$system_py" bench/wheelhouse.py check-torch || exit 2
tag=$("$system_py" -c 'import platform, sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}-{platform.machine()}")')
wheelhouse="${wheelhouse:-wheelhouse/$tag}"
[[ -d $wheelhouse ]] || { echo "gpu_check: no wheelhouse at $wheelhouse: make it with bench/gpu_wheelhouse.sh $tag on a machine with network, copy it here" >&2; exit 2; }
[[ -x .gpu-venv/bin/python ]] || "$system_py" -m venv --system-site-packages .gpu-venv
py=.gpu-venv/bin/python
mapfile -t wanted < <("$py" bench/wheelhouse.py requirements)
mapfile -t no_deps < <("$py" bench/wheelhouse.py no-deps)
echo "[gpu_check] installing what is missing from $wheelhouse (offline)"
"$py" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$wheelhouse" "${wanted[@]}"
"$py" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$wheelhouse" --no-deps "${no_deps[@]}"
"$py" bench/wheelhouse.py check-torch || { echo "gpu_check: the install replaced the machine's torch" >&2; exit 2; }
echo "[gpu_check] install took $(( $(date +%s) - started )) s"
json="${json:-bench/gpu-check.json}"
"$py" bench/gpu_check.py --json "$json" "${rest[@]}"
"$py" bench/gpu_report.py "$json" BENCHMARKS.md
echo "[gpu_check] done in $(( $(date +%s) - started )) s: $json, BENCHMARKS.md"
