#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): CUDA contract tests, figure 7 and a 4-condition sweep on
# the GPU, then one summary table. Without a GPU it says so and exits 0.
#     bash benchmarks/gpu_check.sh [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export WANDB_MODE="${WANDB_MODE:-offline}" HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
exec "$PYTHON" benchmarks/gpu_check.py "$@"
