#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): sampler, training steps and faiss search on one GPU, <= 8 min.
#   bash benchmarks/gpu_check.sh [--dry] [--out FILE] [--rounds N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the pipeline package, installed or not
if command -v nvidia-smi >/dev/null; then
    nvidia-smi -L || echo "nvidia-smi -L failed (exit $?)"
fi
exec python benchmarks/gpu_check.py "$@"
