#!/usr/bin/env bash
# Exercise every GPU path of the engine on a small input (< 8 minutes), one JSON line per path:
# decord on NVDEC, faiss-gpu, CLIP on CUDA, the transformers recaption backend on CUDA, and the
# trainer's bf16 and FSDP paths once the trainer is in the tree (see bench/gpu_check.py).
#
#   bench/gpu_check.sh              # on a GPU machine: installs what the GPU paths need, then checks
#   bench/gpu_check.sh --cpu-only   # CI: each path's CPU side, nothing installed
#   bench/gpu_check.sh --no-install --trainer-data OUT
#                                   # a GPU image with no registry: nothing installed, the trainer paths
#                                   # read a curated output built elsewhere (the image needs no Beam)
#
# Installs into the active Python environment (a fresh venv at .venv when none is active):
# requirements.txt, then requirements-gpu.txt's swap (faiss-cpu -> faiss-gpu). decord with NVDEC
# cannot come from PyPI: build it as docker/gpu.Dockerfile does, or run inside that image; with
# PyPI's CPU-only decord the decord_nvdec line reports the failure and the rest still run.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

install=1
if [ "${1:-}" = "--no-install" ]; then install=0; shift; fi
if [ "${1:-}" != "--cpu-only" ] && [ "$install" = 1 ]; then
  if [ -z "${VIRTUAL_ENV:-}" ]; then
    python3 -m venv .venv && . .venv/bin/activate
  fi
  command -v ffmpeg >/dev/null || { apt-get update -qq && apt-get install -y -qq ffmpeg >/dev/null; }
  python -m pip install -q -r requirements.txt
  if ! python -c "import faiss, sys; sys.exit(0 if hasattr(faiss, 'StandardGpuResources') else 1)" 2>/dev/null; then
    python -m pip uninstall -y -q faiss-cpu && python -m pip install -q -r requirements-gpu.txt
  fi
fi
[ "${1:-}" = "--cpu-only" ] || nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true
exec timeout 480 "$(command -v python || command -v python3)" -m bench.gpu_check "$@"
