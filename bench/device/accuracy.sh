#!/usr/bin/env bash
# The 10-epoch accuracy comparison issue 5 asks for: resnet50-cifar10 on the GPU, trainbench and
# the PyTorch 2.11 peer at the same settings (WORKLOADS.md: batch 128, Adam 1e-3, no
# augmentation) and the same precision, one after the other on the same card. About 3-4 minutes
# of device time in bf16 (trainbench ~1 min, PyTorch ~2 min with its JPEG decode).
# Prepare here: bench/device/prepare_quick.sh (it packs the whole set too). Device call: carry [".devrun"],
# command "bash bench/device/accuracy.sh", timeout_s ~420. PRECISION=tf32 for the tf32 pair.
# Files back: accuracy.log and the two records.
set -u
cd "$(dirname "$0")/../.." || exit 2
OUT=${OUT:-/tmp/tb-out}
LOG="$OUT/accuracy.log"
PREC=${PRECISION:-bf16}
DATA=.devrun/cifar10-jpeg.tar.gz
mkdir -p "$OUT" /tmp/tb
[ -f "$DATA" ] || { echo "no $DATA: run bench/device/prepare_quick.sh first" | tee "$LOG"; exit 2; }
tar -xJf .devrun/pack.tar.xz -C /tmp/tb
libdirs=$(find /usr/local/cuda*/lib* /usr/local/lib /opt /usr/lib -xdev \( -name 'libcudnn.so.9' \
  -o -name 'libcublasLt.so.13' -o -name 'libcudart.so.13' \) -printf '%h\n' 2>/dev/null | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="/tmp/tb/lib:${libdirs}${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.total --format=csv 2>&1 | tee "$LOG"
TORCH_FLAGS=()
[ "$PREC" = bf16 ] && TORCH_FLAGS=(--channels-last)
s=$(date +%s)
timeout -k 5 150 /tmp/tb/trainbench run resnet50-cifar10 --device cuda --precision "$PREC" \
  --epochs 10 --no-peak --data "$DATA" --out "$OUT/resnet_10ep_trainbench.json" >>"$LOG" 2>&1
echo "== trainbench rc=$? $(( $(date +%s) - s ))s" | tee -a "$LOG"
s=$(date +%s)
timeout -k 5 240 python3 bench/peers/resnet50_cifar10_torch.py --device cuda --precision "$PREC" \
  "${TORCH_FLAGS[@]}" --epochs 10 --data "$DATA" --out "$OUT/resnet_10ep_torch.json" >>"$LOG" 2>&1
echo "== torch rc=$? $(( $(date +%s) - s ))s" | tee -a "$LOG"
python3 - "$OUT" <<'PY' 2>&1 | tee -a "$LOG"
import json, os, sys
for name in ("resnet_10ep_trainbench", "resnet_10ep_torch"):
    p = os.path.join(sys.argv[1], name + ".json")
    if not os.path.exists(p):
        print(f"{name}: no record"); continue
    r = json.load(open(p))
    print(f"{name}: test accuracy {r.get('accuracy', {}).get('test')}, train+test "
          f"{r.get('times_s', {}).get('train_test')} s, steady "
          f"{r.get('throughput', {}).get('train_images_per_s_steady')} images/s")
PY
