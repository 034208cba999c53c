#!/usr/bin/env bash
# resnet50-cifar10 on this machine's CPU: the PyTorch peer, then trainbench, one after the
# other, same options, and a side-by-side table (images/s is the figure to read: by default
# only --steps 20 training steps run, then the full test pass). See bench/README.md.
#
#   bench/cpu_resnet50.sh [ARGS...]     ARGS go to both, after the defaults (e.g. --steps 50);
#   STEPS=0 bench/cpu_resnet50.sh        all 10 epochs (hours on a small CPU)
#
# Environment: as bench/cpu_fashion_mlp.sh, plus
#   DATA=...       CIFAR-10 location for both (default: the first of data/cifar-10-batches-bin,
#                  shared/data/cifar10-jpeg.tar.gz, /work/shared/data/cifar10-jpeg.tar.gz)
#   STEPS=20       default --steps (0: no --steps, the full run)
#   CACHE=results/cache/cifar10-u8.pt   the peer's decoded-JPEG cache (CACHE= to disable)
#   KERAS_CACHE=results/cache/cifar10-u8-nhwc.npz   the Keras peer's cache (KERAS_CACHE= to disable)
#   PEER_CHANNELS_LAST=1   the peer runs --channels-last (its fastest CPU layout); 0: NCHW
set -u
# shellcheck source=bench/bench_lib.sh disable=SC2034  # (variables are read by compare_cpu)
source "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
cd "$REPO_ROOT" || exit 1

WORKLOAD=resnet50-cifar10
PEER="$BENCH_DIR/peers/resnet50_cifar10_torch.py"
KERAS_PEER="$BENCH_DIR/peers/resnet50_cifar10_keras.py"
TRAINBENCH="${TRAINBENCH:-build/trainbench}"
THREADS="${THREADS:-$(nproc)}"
OUTDIR="${OUTDIR:-results/cpu-$WORKLOAD-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUTDIR" || exit 1
PY="$(pick_python)"
if [ -z "${DATA:-}" ]; then
    for d in data/cifar-10-batches-bin shared/data/cifar10-jpeg.tar.gz \
             ../shared/data/cifar10-jpeg.tar.gz /work/shared/data/cifar10-jpeg.tar.gz; do
        if [ -e "$d" ]; then DATA="$d"; break; fi
    done
fi
if [ -z "${DATA:-}" ] || [ ! -e "$DATA" ]; then echo "cpu_resnet50.sh: no CIFAR-10 found at '${DATA:-}'; set DATA=..." >&2; exit 2; fi
DATA="$(realpath "$DATA")"
STEPS="${STEPS:-20}"
DEFAULTS=()
default_opt --device cpu "$@"
default_opt --epochs 10 "$@"
default_opt --batch 128 "$@"
default_opt --threads "$THREADS" "$@"
default_opt --data "$DATA" "$@"
[ "$STEPS" = 0 ] || default_opt --steps "$STEPS" "$@"
PEER_ONLY_ARGS=()
# channels-last is PyTorch's fastest CPU layout for ResNet-50 here (oneDNN): ~108 vs ~91 img/s
# on 2 AMD EPYC cores with PyTorch 1.13. PEER_CHANNELS_LAST=0 for the default NCHW layout.
if [ "${PEER_CHANNELS_LAST:-1}" = 1 ]; then PEER_ONLY_ARGS+=(--channels-last); fi
CACHE="${CACHE-results/cache/cifar10-u8.pt}"
if [ -n "$CACHE" ]; then
    mkdir -p "$(dirname "$CACHE")"
    PEER_ONLY_ARGS+=(--cache "$CACHE")
fi
KERAS_ONLY_ARGS=()
KERAS_CACHE="${KERAS_CACHE-results/cache/cifar10-u8-nhwc.npz}"
if [ -n "$KERAS_CACHE" ]; then
    mkdir -p "$(dirname "$KERAS_CACHE")"
    KERAS_ONLY_ARGS+=(--cache "$KERAS_CACHE")
fi

echo "== $WORKLOAD on CPU: ${PEERS:-torch} peer(s) vs trainbench =="
machine_banner
echo "python:   $PY ($("$PY" -c 'import torch; print("torch", torch.__version__)' 2>&1 | tail -1))"
setup_torch_blas "$PY"
echo "data:     $DATA"
echo "results:  $OUTDIR"
echo
compare_cpu "$@"
