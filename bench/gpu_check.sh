#!/usr/bin/env bash
# The device check (bench/gpu_check.py): run from the repository root on a machine with golfpack's environment.
#   bash bench/gpu_check.sh            # one GPU: the 36M packs, CUDA verify, CPU-vs-GPU identity, 60 s train
#   bash bench/gpu_check.sh --tiny     # any machine, CPU only, seconds
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" bench/gpu_check.py "$@"
