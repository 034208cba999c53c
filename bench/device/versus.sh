#!/usr/bin/env bash
# Issue 6's speed comparison on the lent GPU: resnet50-cifar10 training throughput of trainbench
# (tf32, bf16, bf16 --nhwc) against the best of PyTorch 2.11's eager fp32, eager tf32, bf16
# autocast + channels_last and torch.compile (tf32; bf16 + channels_last), same card, one call.
# Each run trains STEPS full batches of 128 from the whole CIFAR-10 training set (decoded once
# to the binary layout by `trainbench data`, so no run pays for JPEG decoding) and reports steady
# images/s (the first 5% of its steps left out: cuDNN's search, torch.compile's compile).
# Prepare here: bench/device/prepare_quick.sh. Device call: carry [".devrun"],
# command "bash bench/device/versus.sh", timeout_s ~540. STEPS (default 100), BUDGET_S (480).
# Files back: versus.log (every run's output and the table) and versus.json (every record).
set -u
cd "$(dirname "$0")/../.." || exit 2
OUT=${OUT:-/tmp/tb-out}
LOG="$OUT/versus.log"
STEPS=${STEPS:-100}
BUDGET=${BUDGET_S:-480}
T0=$(date +%s)
REC=/tmp/tb-versus
mkdir -p "$OUT" /tmp/tb "$REC"
tar -xJf .devrun/pack.tar.xz -C /tmp/tb
libdirs=$(find /usr/local/cuda*/lib* /usr/local/lib /opt /usr/lib -xdev \( -name 'libcudnn.so.9' \
  -o -name 'libcublasLt.so.13' -o -name 'libcudart.so.13' \) -printf '%h\n' 2>/dev/null | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="/tmp/tb/lib:${libdirs}${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1
TB=/tmp/tb/trainbench
nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.total --format=csv 2>&1 | tee "$LOG"

# run NAME LIMIT_S CMD...: output to versus.log, capped by what is left of the budget.
run() {
  local name=$1 limit=$2 left s
  shift 2
  left=$((T0 + BUDGET - $(date +%s)))
  if [ "$left" -lt 20 ]; then
    echo "== $name skipped: out of time" | tee -a "$LOG"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "===== $name: $*" >>"$LOG"
  s=$(date +%s)
  timeout -k 5 "$limit" "$@" >>"$LOG" 2>&1
  echo "== $name rc=$? $(($(date +%s) - s))s" | tee -a "$LOG"
}

DATA=/tmp/cifarbin
run data 60 $TB data .devrun/cifar10-jpeg.tar.gz $DATA
TBRUN=(run resnet50-cifar10 --device cuda --steps "$STEPS" --no-peak --quiet --data "$DATA")
run tb_tf32 60 $TB "${TBRUN[@]}" --precision tf32 --out "$REC/tb_tf32.json"
run tb_bf16 60 $TB "${TBRUN[@]}" --precision bf16 --out "$REC/tb_bf16.json"
run tb_bf16_nhwc 60 $TB "${TBRUN[@]}" --precision bf16 --nhwc --out "$REC/tb_bf16_nhwc.json"
PEER=(python3 bench/peers/resnet50_cifar10_torch.py --device cuda --epochs 1 --steps "$STEPS"
  --data "$DATA" --no-util --quiet)
run torch_fp32 90 "${PEER[@]}" --precision fp32 --out "$REC/torch_fp32.json"
run torch_tf32 90 "${PEER[@]}" --precision tf32 --out "$REC/torch_tf32.json"
run torch_bf16_cl 90 "${PEER[@]}" --precision bf16 --channels-last --out "$REC/torch_bf16_cl.json"
run torch_compile_bf16_cl 180 "${PEER[@]}" --precision bf16 --channels-last --compile \
  --out "$REC/torch_compile_bf16_cl.json"
run torch_compile_tf32 180 "${PEER[@]}" --precision tf32 --compile --out "$REC/torch_compile_tf32.json"

python3 - "$REC" "$OUT/versus.json" <<'PY' 2>&1 | tee -a "$LOG"
import glob, json, os, sys
records = {}
for p in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    try:
        records[os.path.basename(p)[:-5]] = json.load(open(p))
    except Exception as e:
        print(f"{p}: unreadable ({e})")
json.dump(records, open(sys.argv[2], "w"), indent=1)
def steady(r):
    return (r.get("throughput") or {}).get("train_images_per_s_steady")
rows = [(k, steady(r)) for k, r in records.items()]
print(f"\n{'run':<24} {'steady images/s':>16}")
for k, v in rows:
    print(f"{k:<24} {v if v is None else round(v):>16}")
tb = [(v, k) for k, v in rows if k.startswith("tb_") and v]
torch = [(v, k) for k, v in rows if k.startswith("torch_") and v]
if tb and torch:
    (bt, kt), (bp, kp) = max(tb), max(torch)
    print(f"\nbest trainbench {kt} {bt:.0f} / best PyTorch {kp} {bp:.0f} = {bt / bp:.2f}x "
          f"(issue 6's target: 1.5x)")
PY
