#!/usr/bin/env bash
# A whole lease's device work in one call (about 9 minutes): what issues 5 and 6 need from a GPU,
# in order of value, under one deadline (SESSION_BUDGET_S, default 530 s; a step that would start
# too late is skipped and says so).
#   1. the GPU tests (every CUDA op against the CPU reference, the op table, whole steps); a
#      default-on path whose tests fail is switched off for the runs after (safe_flags);
#   2. the whole CIFAR-10 set decoded once to the binary layout (`trainbench data`), so no run
#      below pays for JPEG decoding;
#   3. trainbench: fashion-mlp 10 epochs (graphs; --fused-mlp), resnet50-cifar10 10 epochs + test
#      in bf16 (time, accuracy, MFU against the datasheet and the measured GEMM peak), 100-step
#      throughput in tf32, bf16 --nhwc and bf16 --no-graphs (host overhead before and after the
#      graph), and a bf16 per-layer GPU profile;
#   4. PyTorch 2.11 at the same settings: resnet50 bf16 + channels_last 10 epochs (the accuracy
#      pair, and its throughput; tf32 for both if trainbench's bf16 run failed), eager fp32 and tf32 100 steps, fashion-mlp 1 epoch, and last
#      torch.compile (bf16 + channels_last) 100 steps;
#   5. the GPU's test pass against the CPU's: a bf16 epoch's checkpoint tested by `evaluate` on
#      the machine's CPU and on the GPU in fp32;
#   6. one table: every run's train/test time, steady images/s, test accuracy, MFU, and the
#      best-vs-best throughput ratio against issue 6's 1.5x; then issue 23's time targets, met or
#      not, and its flips read off one pair each (--nhwc against NCHW bf16, --fused-mlp against
#      the op-by-op step: faster, make it the default; slower, remove it).
#   7. where the image has a Vulkan driver, the Vulkan backend's tests and a fashion-mlp epoch on it
#      (run before the table, which shows its row).
# Prepare here: bench/device/prepare_quick.sh. Device call: carry [".devrun"], command
# "bash bench/device/session.sh", timeout_s 580. Files back: session.log (every step's output
# and the table), cuda_tests.log, session.json (every record and the profile, by run name).
set -u
OUT=${OUT:-/tmp/tb-out}
LOG="$OUT/session.log"
BUDGET=${SESSION_BUDGET_S:-530}
REC=/tmp/tb-records
mkdir -p "$OUT" "$REC"
source "$(dirname "$0")/common.sh"

STEP_LOG="$OUT/cuda_tests.log" step cuda_tests 100 $TT --gtest_filter='Cuda*:TorchParity*:BackendOps*'
grep -E "FAILED|Failure|error" "$OUT/cuda_tests.log" | head -30 | tee -a "$LOG"
BF16=(--precision bf16 $(safe_flags "$OUT/cuda_tests.log" bf16))
TF32=(--precision tf32 $(safe_flags "$OUT/cuda_tests.log" tf32))
[ ${#BF16[@]} -gt 2 ] && echo "== bf16 runs below with ${BF16[*]:2} (their tests failed)" | tee -a "$LOG"

DATA=/tmp/cifarbin
step data 60 $TB data .devrun/cifar10-jpeg.tar.gz $DATA

MLP=(run fashion-mlp --device cuda --data $FASHION --no-peak)
step tb_mlp 30 $TB "${MLP[@]}" --out "$REC/tb_mlp.json"
step tb_mlp_fused 30 $TB "${MLP[@]}" --fused-mlp --out "$REC/tb_mlp_fused.json"
RES=(run resnet50-cifar10 --device cuda --data $DATA)
step tb_resnet_bf16_10ep 120 $TB "${RES[@]}" "${BF16[@]}" --epochs 10 --out "$REC/tb_resnet_bf16_10ep.json"
# bf16 had never run on a GPU when this was written: if it fails, the accuracy pair is tf32.
ACC=(--precision bf16 --channels-last)
if [ ! -s "$REC/tb_resnet_bf16_10ep.json" ]; then
  ACC=(--precision tf32)
  step tb_resnet_tf32_10ep 150 $TB "${RES[@]}" "${TF32[@]}" --epochs 10 --out "$REC/tb_resnet_tf32_10ep.json"
fi
step tb_resnet_tf32 40 $TB "${RES[@]}" "${TF32[@]}" --steps 100 --no-peak --out "$REC/tb_resnet_tf32.json"
step tb_resnet_bf16_nhwc 40 $TB "${RES[@]}" "${BF16[@]}" --nhwc --steps 100 --no-peak --out "$REC/tb_resnet_bf16_nhwc.json"
step tb_resnet_bf16_nographs 40 $TB "${RES[@]}" "${BF16[@]}" --no-graphs --steps 100 --no-peak --out "$REC/tb_resnet_bf16_nographs.json"
step tb_profile_bf16 60 $TB profile resnet50-cifar10 --device cuda "${BF16[@]}" --steps 5 --data $DATA --out "$REC/profile_bf16.json"

PEER=(python3 bench/peers/resnet50_cifar10_torch.py --device cuda --data $DATA --no-util --quiet)
step torch_resnet_10ep 150 "${PEER[@]}" "${ACC[@]}" --epochs 10 --out "$REC/torch_resnet_${ACC[1]}_10ep.json"
step torch_resnet_fp32 60 "${PEER[@]}" --precision fp32 --epochs 1 --steps 100 --out "$REC/torch_resnet_fp32.json"
step torch_resnet_tf32 60 "${PEER[@]}" --precision tf32 --epochs 1 --steps 100 --out "$REC/torch_resnet_tf32.json"
step torch_mlp 40 python3 bench/peers/fashion_mlp_torch.py --device cuda --epochs 1 --data $FASHION --no-util --quiet --out "$REC/torch_mlp_1ep.json"
step torch_resnet_compile_bf16_cl 150 "${PEER[@]}" --precision bf16 --channels-last --compile --epochs 1 --steps 100 --out "$REC/torch_resnet_compile_bf16_cl.json"

# The GPU's test pass against the CPU's on the same weights: one bf16 epoch on the GPU with a
# checkpoint, then `evaluate` of it on this machine's CPU (oneDNN, fp32) and on the GPU in fp32:
# each accuracy within a few images of the GPU run's own.
CK=/tmp/tb-eval.tbck
rm -f $CK
step tb_resnet_bf16_1ep_ck 40 $TB "${RES[@]}" "${BF16[@]}" --epochs 1 --no-peak --checkpoint $CK --out "$REC/tb_resnet_bf16_1ep_ck.json"
step eval_cpu_fp32 60 $TB evaluate $CK --device cpu --precision fp32 --data $DATA --out "$REC/eval_cpu_fp32.json"
step eval_cuda_fp32 30 $TB evaluate $CK --device cuda --precision fp32 --data $DATA --out "$REC/eval_cuda_fp32.json"

vulkan_steps "$REC/tb_mlp_vulkan.json"

python3 bench/device/summarize.py "$REC" "$OUT/session.json" 2>&1 | tee -a "$LOG"
