#!/usr/bin/env bash
# Prebuilt GPU check for a short lease (about 5.5 minutes): the GPU tests, then trainbench's own
# speed on small runs. It runs binaries built on the CPU machine (CUDA ON, sm_90) with their
# libraries carried in .devrun/pack.tar.xz, so no device time goes to compiling.
# Prepare here: bench/device/prepare_quick.sh. Device call: carry [".devrun"],
# command "bash bench/device/quick.sh", timeout_s ~360. The steps share one deadline
# (QUICK_BUDGET_S, default 330 s): a step that would start too late is skipped and says so, so
# the call ends in time with everything written so far. With a whole lease, bench/device/session.sh
# does this and the comparisons against PyTorch in one call.
# Files back (at most 8): quick.log (environment, every step, the profiles), cuda_tests.log and
# six records.
set -u
OUT=${OUT:-/tmp/tb-out}
LOG="$OUT/quick.log"
BUDGET=${QUICK_BUDGET_S:-330}
mkdir -p "$OUT"
source "$(dirname "$0")/common.sh"

STEP_LOG="$OUT/cuda_tests.log" step cuda_tests 90 $TT --gtest_filter='Cuda*:TorchParity*:BackendOps*'
grep -E "FAILED|Failure|error" "$OUT/cuda_tests.log" | head -30
BF16_SAFE=$(safe_flags "$OUT/cuda_tests.log" bf16)
TF32_SAFE=$(safe_flags "$OUT/cuda_tests.log" tf32)
[ -n "$BF16_SAFE" ] && echo "== bf16 runs below with$BF16_SAFE (their tests failed)" | tee -a "$LOG"
MLP=(run fashion-mlp --device cuda --epochs 1 --no-peak --data $FASHION)
step mlp 30 $TB "${MLP[@]}" --out "$OUT/mlp_cuda.json"
step mlp_nographs 30 $TB "${MLP[@]}" --no-graphs --out "$OUT/mlp_cuda_nographs.json"
step mlp_fused 30 $TB "${MLP[@]}" --fused-mlp --out "$OUT/mlp_cuda_fused.json"
grep -E "step graphs|host issues|fused MLP" "$LOG"
DATA=/tmp/cifarbin
step data 60 $TB data .devrun/cifar10-jpeg.tar.gz $DATA
RES=(run resnet50-cifar10 --device cuda --steps 40 --no-peak --data $DATA)
step resnet 40 $TB "${RES[@]}" --precision tf32 $TF32_SAFE --out "$OUT/resnet_cuda.json"
step resnet_bf16 40 $TB "${RES[@]}" --precision bf16 $BF16_SAFE --out "$OUT/resnet_cuda_bf16.json"
step resnet_bf16_nhwc 40 $TB "${RES[@]}" --precision bf16 $BF16_SAFE --nhwc --out "$OUT/resnet_cuda_bf16_nhwc.json"
PROF=(profile resnet50-cifar10 --device cuda --steps 5 --data $DATA)
step profile_bf16 60 $TB "${PROF[@]}" --precision bf16 $BF16_SAFE
step profile_bf16_nhwc 60 $TB "${PROF[@]}" --precision bf16 $BF16_SAFE --nhwc
step profile_tf32 60 $TB "${PROF[@]}" --precision tf32 $TF32_SAFE
step devices 30 $TB devices
vulkan_steps
