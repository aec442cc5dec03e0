#!/usr/bin/env bash
# The seed's job at full size on a GPU machine without network, measured (bench/gpu_check.py says what):
#
#   bench/gpu_check.sh [--wheelhouse DIR] [--json FILE] [gpu_check.py options]   # on the GPU machine
#   bench/gpu_check.sh --dry-run [--json FILE]                                   # here: tiny models on the CPU
#   bench/gpu_check.sh --install-only [--wheelhouse DIR]   # the install alone (then: tests/gpu, bench/gpu_profile.py
#                                                          # with PYTHONPATH=.gpu-site:.:runner)
#
# On a GPU machine it uses the torch it finds (python3, or $PYTHON; torch 2.5 to 2.15, the machine's CUDA build) and
# installs into .gpu-site (first on PYTHONPATH) only the wheels of the wheelhouse made beforehand by
# bench/gpu_wheelhouse.sh (default: wheelhouse/cpXY-ARCH of that Python) that the machine lacks at their version,
# offline. (Not a venv: the machine's Python is often a venv itself, whose packages a --system-site-packages venv
# would not see.) Then it builds the full-size random models (under ~/.cache/img2img-operator/models/full), runs
# the phases within about 7 minutes on an H100/H200, writes the figures to bench/gpu-check.json (after each phase,
# so a run cut short keeps what it measured) and renders BENCHMARKS.md's GPU section from them. --dry-run runs the
# same measuring code with the development environment (.venv) on the CPU.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
dry_run=0 install_only=0 wheelhouse="" json="" rest=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --install-only) install_only=1; shift ;;
    --wheelhouse) wheelhouse="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
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

py="${PYTHON:-python3}"
"$py" bench/wheelhouse.py check-torch || exit 2
tag=$("$py" -c 'import platform, sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}-{platform.machine()}")')
wheelhouse="${wheelhouse:-wheelhouse/$tag}"
[[ -d $wheelhouse ]] || { echo "gpu_check: no wheelhouse at $wheelhouse: make it with bench/gpu_wheelhouse.sh $tag on a machine with network, copy it here" >&2; exit 2; }
export PYTHONPATH="$repo/.gpu-site:$PYTHONPATH"
mapfile -t wheels < <("$py" bench/wheelhouse.py plan "$wheelhouse")
echo "[gpu_check] installing ${#wheels[@]} wheels the machine lacks from $wheelhouse into .gpu-site (offline)"
if [[ ${#wheels[@]} -gt 0 ]]; then
  "$py" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-compile --upgrade \
    --target .gpu-site "${wheels[@]}"
fi
"$py" bench/wheelhouse.py check-torch || { echo "gpu_check: the install shadowed the machine's torch" >&2; exit 2; }
"$py" -c 'import img2img_runner.execute, img2img_runner.tiny_models' \
  || { echo "gpu_check: the runner does not import with what is installed (above)" >&2; exit 2; }
echo "[gpu_check] install took $(( $(date +%s) - started )) s"
[[ $install_only == 1 ]] && exit 0
json="${json:-bench/gpu-check.json}"
"$py" bench/gpu_check.py --json "$json" "${rest[@]}"
"$py" bench/gpu_report.py "$json" BENCHMARKS.md
echo "[gpu_check] done in $(( $(date +%s) - started )) s: $json, BENCHMARKS.md"
