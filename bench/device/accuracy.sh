#!/usr/bin/env bash
# Issue 5's accuracy pair, read from means over seeds: resnet50-cifar10, 10 epochs + test in bf16,
# trainbench and PyTorch 2.11 (bf16 autocast + channels_last) for each of SEEDS (default
# "0 1 2"), then summarize.py's tables, the last of which gives the mean test accuracy of each
# side and their difference. One run a side is not enough at WORKLOADS.md's settings: on the CPU
# two runs of one seed ended 20 points apart (BENCHMARKS.md, tenth session). For a lease (or the
# rest of one) after session.sh: about 5-6 minutes on an H100 (estimate: trainbench ~30 s a run,
# PyTorch ~60 s). Steps share one deadline (ACCURACY_BUDGET_S, default 450 s).
# Prepare here: bench/device/prepare_quick.sh. Device call: carry [".devrun"], command
# "bash bench/device/accuracy.sh", timeout_s 480. Files back: accuracy.log, accuracy.json (every
# record by run name).
set -u
OUT=${OUT:-/tmp/tb-out}
LOG="$OUT/accuracy.log"
BUDGET=${ACCURACY_BUDGET_S:-450}
REC=/tmp/tb-accuracy-records
SEEDS=${SEEDS:-0 1 2}
mkdir -p "$OUT" "$REC"
source "$(dirname "$0")/common.sh"

DATA=/tmp/cifarbin
step data 60 $TB data .devrun/cifar10-jpeg.tar.gz $DATA
for s in $SEEDS; do
  step tb_bf16_s$s 90 $TB run resnet50-cifar10 --device cuda --data $DATA --precision bf16 \
    --seed "$s" --no-peak --out "$REC/tb_bf16_s$s.json"
  step torch_bf16_cl_s$s 150 python3 bench/peers/resnet50_cifar10_torch.py --device cuda \
    --data $DATA --precision bf16 --channels-last --seed "$s" --no-util --quiet \
    --out "$REC/torch_bf16_cl_s$s.json"
done
python3 bench/device/summarize.py "$REC" "$OUT/accuracy.json" 2>&1 | tee -a "$LOG"
