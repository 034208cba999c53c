#!/usr/bin/env bash
# fashion-mlp on this machine's CPU: the PyTorch peer, then trainbench, one after the other,
# same options, and a side-by-side table. See bench/README.md.
#
#   bench/cpu_fashion_mlp.sh [ARGS...]        ARGS go to both (e.g. --epochs 1 --seed 3)
#
# Environment:
#   TRAINBENCH=build/trainbench   trainbench binary
#   PYTHON=...                    python with torch (default /usr/bin/python3 if it has torch)
#   THREADS=$(nproc)              --threads for both (torch.set_num_threads)
#   TORCH_BLAS_THREADS=1          OPENBLAS_NUM_THREADS of the torch run (1 is fastest: with
#                                 more, OpenBLAS threads fight torch's OpenMP threads)
#   TORCH_BLAS=openblas|system    openblas: put OpenBLAS's libblas.so.3 first for torch
#   OUTDIR=results/cpu-fashion-mlp-DATE   where the JSON records and logs go
#   PEER_ARGS=... / TB_ARGS=...   extra args for the PyTorch peer / for trainbench only
#   ONLY=pytorch|trainbench       run just one side (or keras)
#   PEERS="torch keras"           also run the Keras peer (default: torch only); its python is
#                                 results/venv-keras, made with TensorFlow from PyPI on first use
#   KERAS_ARGS=...                extra args for the Keras peer only
set -u
# shellcheck source=bench/bench_lib.sh disable=SC2034  # (variables are read by compare_cpu)
source "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
cd "$REPO_ROOT" || exit 1

WORKLOAD=fashion-mlp
PEER="$BENCH_DIR/peers/fashion_mlp_torch.py"
KERAS_PEER="$BENCH_DIR/peers/fashion_mlp_keras.py"
TRAINBENCH="${TRAINBENCH:-build/trainbench}"
THREADS="${THREADS:-$(nproc)}"
OUTDIR="${OUTDIR:-results/cpu-$WORKLOAD-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUTDIR" || exit 1
PY="$(pick_python)"
DEFAULTS=()
default_opt --device cpu "$@"
default_opt --epochs 10 "$@"
default_opt --batch 32 "$@"
default_opt --threads "$THREADS" "$@"

echo "== $WORKLOAD on CPU: ${PEERS:-torch} peer(s) vs trainbench =="
machine_banner
echo "python:   $PY ($("$PY" -c 'import torch; print("torch", torch.__version__)' 2>&1 | tail -1))"
setup_torch_blas "$PY"
echo "results:  $OUTDIR"
echo

PEER_ONLY_ARGS=()
compare_cpu "$@"
