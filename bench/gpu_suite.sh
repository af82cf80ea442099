#!/usr/bin/env bash
# GPU speed table for the `default` path, ready before any GPU is at hand (about 3-6 min on one GPU).
# Needs: one CUDA GPU, python with torch (>= 2.1). SMIT and pretraining rows also need MONAI, the
# nnU-Net U-Net row dynamic_network_architectures; a missing package prints "needs X" in its row.
# Nothing is downloaded, no data are read: synthetic tensors, random weights.
# Usage: bench/gpu_suite.sh                 # measure on cuda:0 (CUDA_VISIBLE_DEVICES picks the GPU)
#        bench/gpu_suite.sh --device cpu --tiny   # dry run (the test suite runs this)
#        PYTHON=/path/python bench/gpu_suite.sh --json table.json
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import torch' 2>/dev/null || { echo "error: $PYTHON has no torch; set PYTHON=" >&2; exit 2; }
exec timeout "${GPU_SUITE_TIMEOUT:-360}" "$PYTHON" bench/gpu_suite.py "$@"
