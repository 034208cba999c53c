#!/usr/bin/env bash
# The one prepared script for the lent GPU machine (bare image: nvcc 13, CMake, ninja, PyTorch
# with cuDNN/cuBLAS in its wheels; no oneDNN, fmt, CLI11, json, GoogleTest, no data, no network).
# Prepare here first:  bench/device/prepare_carry.sh   (fills .carry/, git-ignored)
# Device call:         carry [".carry"], command "bash bench/device/check.sh", timeout_s 540
#
# Steps, in priority order, each under `timeout` and all under one deadline (CHECK_BUDGET_S,
# default 450 s) so the script ends in time; a failing step is recorded and the next one runs:
#   env, unpack .carry, configure (-DTRAINBENCH_CUDA=ON, sm_90), build, the Cuda* tests,
#   trainbench devices, fashion-mlp on cuda (fp32; with and without CUDA graphs), resnet50-cifar10
#   on cuda (tf32 and bf16, 1 epoch each), the two PyTorch peers the same way, then the rest of
#   the test suite.
# Everything lands in $OUT (at most 8 files come back from the device): check.log (all steps, the
# summary at its end), tests.log and the six result records. The table of steps and results is
# printed last. Exit status 0 only when every step passed.
#
# Knobs: CHECK_BUDGET_S (deadline), CHECK_BUILD_DIR (default build-device),
#        CHECK_SKIP_BUILD=1 (reuse an existing build), CHECK_JOBS (default 16).
set -u
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO" || exit 2
OUT=${OUT:-$REPO/results/device-check}
mkdir -p "$OUT"
LOG="$OUT/check.log"
TESTLOG="$OUT/tests.log"
BUDGET=${CHECK_BUDGET_S:-450}
BUILD=${CHECK_BUILD_DIR:-$REPO/build-device}
JOBS=${CHECK_JOBS:-16}
T0=$(date +%s)
: >"$LOG"
: >"$TESTLOG"

STEPS=()  # "name|status|seconds|note"
FAILED=()
log() { echo "[check +$(($(date +%s) - T0))s] $*" | tee -a "$LOG"; }
record() {  # name status seconds note
  STEPS+=("$1|$2|$3|$4")
  [ "$2" = ok ] || FAILED+=("$1")
}

# step NAME LIMIT_S LOGFILE CMD... : runs CMD under timeout (capped by the deadline), output
# appended to LOGFILE. Returns CMD's status.
step() {
  local name=$1 limit=$2 logf=$3
  shift 3
  local left=$((T0 + BUDGET - $(date +%s) - 5))
  if [ "$left" -lt 10 ]; then
    record "$name" SKIPPED 0 "out of time (CHECK_BUDGET_S=$BUDGET)"
    log "$name: SKIPPED, out of time"
    return 125
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  log "$name: start (limit ${limit}s): $*"
  echo "===== $name ($(date -u +%H:%M:%S)): $* =====" >>"$logf"
  local s rc dt st
  s=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" >>"$logf" 2>&1
  rc=$?
  dt=$(($(date +%s) - s))
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then st=TIMEOUT; elif [ $rc -ne 0 ]; then st="FAIL(rc=$rc)"; else st=ok; fi
  echo "===== $name: $st in ${dt}s =====" >>"$logf"
  record "$name" "$st" "$dt" ""
  log "$name: $st in ${dt}s"
  return $rc
}
skip() {  # name reason
  record "$1" SKIPPED 0 "$2"
  log "$1: SKIPPED: $2"
}

# ---------------------------------------------------------------- environment
export PATH="$PATH:/usr/local/cuda/bin"
for d in /opt/*/.venv/bin; do [ -d "$d" ] && PATH="$PATH:$d"; done
export PYTHONUNBUFFERED=1
PY=$(command -v python3 || true)
CMAKE=$(command -v cmake || true)
GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)

# cuDNN / cuBLAS / nvrtc library folders that PyTorch's wheels bring (the toolkit may lack cuDNN).
PY_NV_LIBS=""
CUDNN_FROM_PY=""
if [ -n "$PY" ]; then
  PY_NV_LIBS=$("$PY" - <<'EOF' 2>/dev/null
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
dirs = []
for r in roots:
    for d in sorted(glob.glob(os.path.join(r, "*", "lib"))):
        dirs.append(d)
print(":".join(dirs))
EOF
)
  CUDNN_FROM_PY=$("$PY" -c 'import nvidia.cudnn as m, os; print(list(m.__path__)[0])' 2>/dev/null || true)
fi
if [ ! -f /usr/local/cuda/include/cudnn.h ] && [ ! -f /usr/include/cudnn.h ] && [ -n "$CUDNN_FROM_PY" ]; then
  export CUDNN_ROOT="$CUDNN_FROM_PY"
fi

{
  echo "===== env ====="
  date -u
  uname -a
  nvidia-smi 2>&1 | head -25
  nvcc --version 2>&1 | tail -2
  echo "cmake: ${CMAKE:-none} $([ -n "$CMAKE" ] && "$CMAKE" --version | head -1)"
  echo "ninja: $(command -v ninja || echo none)"
  echo "c++: $(c++ --version 2>&1 | head -1)"
  echo "python3: ${PY:-none}"
  [ -n "$PY" ] && "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))' 2>&1
  echo "cuDNN header: $(ls /usr/local/cuda/include/cudnn.h /usr/include/cudnn.h 2>/dev/null) CUDNN_ROOT=${CUDNN_ROOT:-unset} (wheel: ${CUDNN_FROM_PY:-none})"
  echo "cuBLASLt: $(ls /usr/local/cuda/lib64/libcublasLt.so* 2>/dev/null | head -1)"
  echo "python nvidia lib dirs: $PY_NV_LIBS"
  echo "nproc: $(nproc)  free: $(free -g 2>/dev/null | awk '/Mem/ {print $2 " GiB"}')"
} >>"$LOG" 2>&1
log "env written to check.log"

# ---------------------------------------------------------------- carried prefix
TBROOT=/tmp/trainbench-carry-root
PREFIX_ARGS=()
if [ -f "$REPO/.carry/root.tar.xz" ]; then
  if [ ! -f "$TBROOT/.unpacked" ] || [ "$REPO/.carry/root.tar.xz" -nt "$TBROOT/.unpacked" ]; then
    rm -rf "$TBROOT"
    mkdir -p "$TBROOT"
    if command -v xz >/dev/null 2>&1; then
      step unpack-carry 60 "$LOG" tar -C "$TBROOT" -xJf "$REPO/.carry/root.tar.xz" && touch "$TBROOT/.unpacked"
    else
      step unpack-carry 60 "$LOG" "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
        "$REPO/.carry/root.tar.xz" "$TBROOT" && touch "$TBROOT/.unpacked"
    fi
  else
    record unpack-carry ok 0 "already unpacked"
  fi
  PREFIX_ARGS=(-DCMAKE_PREFIX_PATH="$TBROOT" -DCMAKE_LIBRARY_ARCHITECTURE=x86_64-linux-gnu)
else
  log "no .carry/root.tar.xz: relying on system packages (run bench/device/prepare_carry.sh first)"
fi
CARRY_LIB="$TBROOT/lib/x86_64-linux-gnu"
TB_LD="$CARRY_LIB:/usr/local/cuda/lib64${PY_NV_LIBS:+:$PY_NV_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
TBENV=(env "LD_LIBRARY_PATH=$TB_LD")

# ---------------------------------------------------------------- data
CIFAR=""
for c in "$REPO/data/cifar10-jpeg.tar.gz" "$REPO/.carry/data/cifar10-jpeg.tar.gz" "$REPO/.carry/cifar10-jpeg.tar.gz" \
  "$REPO/data/cifar10"; do
  [ -e "$c" ] && CIFAR=$c && break
done
FASHION=""
for f in "$REPO/.carry/data/fashion-mnist" "$REPO/.carry/fashion-mnist" "$REPO/data/fashion-mnist" \
  /usr/share/datasets/fashion-mnist; do
  [ -f "$f/train-images-idx3-ubyte.gz" ] && FASHION=$f && break
done
log "data: fashion-mnist=${FASHION:-MISSING} cifar10=${CIFAR:-MISSING}"

# ---------------------------------------------------------------- build
TB="$BUILD/trainbench"
TT="$BUILD/trainbench_tests"
if [ "${CHECK_SKIP_BUILD:-0}" = 1 ]; then
  skip configure "CHECK_SKIP_BUILD=1"
  skip build "CHECK_SKIP_BUILD=1"
elif [ -z "$CMAKE" ]; then
  skip configure "no cmake on PATH"
  skip build "no cmake on PATH"
else
  if step configure 120 "$LOG" "${TBENV[@]}" "$CMAKE" -S "$REPO" -B "$BUILD" "${GEN[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DTRAINBENCH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DTRAINBENCH_BENCHMARKS=OFF "${PREFIX_ARGS[@]}"; then
    step build 300 "$LOG" "${TBENV[@]}" "$CMAKE" --build "$BUILD" -j"$JOBS"
  else
    skip build "configure failed"
  fi
fi

# ---------------------------------------------------------------- tests and runs
if [ -x "$TT" ]; then
  step cuda-tests 150 "$TESTLOG" "${TBENV[@]}" "$TT" --gtest_filter='Cuda*:TorchParity*:BackendOps*' --gtest_color=no
else
  skip cuda-tests "no $TT"
fi
if [ -x "$TB" ]; then
  step devices 60 "$LOG" "${TBENV[@]}" "$TB" devices
  if [ -n "$FASHION" ]; then
    step mlp-cuda 120 "$LOG" "${TBENV[@]}" "$TB" run fashion-mlp --device cuda --data "$FASHION" \
      --out "$OUT/mlp_cuda.json"
    # The same without CUDA graphs: what recording the step saves (host time per step, total).
    step mlp-nographs 120 "$LOG" "${TBENV[@]}" "$TB" run fashion-mlp --device cuda --no-graphs \
      --data "$FASHION" --out "$OUT/mlp_cuda_nographs.json"
  else
    skip mlp-cuda "no fashion-mnist data"
  fi
  if [ -n "$CIFAR" ]; then
    step resnet-cuda 180 "$LOG" "${TBENV[@]}" "$TB" run resnet50-cifar10 --device cuda --precision tf32 \
      --epochs 1 --data "$CIFAR" --out "$OUT/resnet_cuda.json"
    step resnet-bf16 180 "$LOG" "${TBENV[@]}" "$TB" run resnet50-cifar10 --device cuda --precision bf16 \
      --epochs 1 --data "$CIFAR" --out "$OUT/resnet_cuda_bf16.json"
  else
    skip resnet-cuda "no CIFAR-10 data"
    skip resnet-bf16 "no CIFAR-10 data"
  fi
else
  for s in devices mlp-cuda mlp-nographs resnet-cuda resnet-bf16; do skip "$s" "no $TB"; done
fi
if [ -n "$PY" ] && [ -f bench/peers/fashion_mlp_torch.py ] && [ -n "$FASHION" ]; then
  step mlp-torch 120 "$LOG" "$PY" bench/peers/fashion_mlp_torch.py --device cuda --data "$FASHION" \
    --out "$OUT/mlp_torch.json"
else
  skip mlp-torch "no python3, peer script or data"
fi
if [ -n "$PY" ] && [ -f bench/peers/resnet50_cifar10_torch.py ] && [ -n "$CIFAR" ]; then
  step resnet-torch 180 "$LOG" "$PY" bench/peers/resnet50_cifar10_torch.py --device cuda --precision tf32 \
    --epochs 1 --data "$CIFAR" --out "$OUT/resnet_torch.json"
else
  skip resnet-torch "no python3, peer script or data"
fi
if [ -x "$TT" ]; then
  step other-tests 120 "$TESTLOG" "${TBENV[@]}" "$TT" --gtest_filter='-Cuda*:BackendOps*' --gtest_color=no
else
  skip other-tests "no $TT"
fi

# ---------------------------------------------------------------- summary
{
  echo
  echo "== steps (total $(($(date +%s) - T0))s of ${BUDGET}s) =="
  printf '%-14s %-12s %6s  %s\n' step status seconds note
  for s in "${STEPS[@]}"; do
    IFS='|' read -r n st sec note <<<"$s"
    printf '%-14s %-12s %6s  %s\n' "$n" "$st" "$sec" "$note"
  done
  echo
  echo "== tests (tests.log) =="
  grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test|^\[==========\] [0-9]+ tests? from' "$TESTLOG" 2>/dev/null | head -20
  grep -E '^\[  FAILED  \] [A-Za-z]' "$TESTLOG" 2>/dev/null | sort -u | head -40
  echo
  echo "== result records =="
  if [ -n "$PY" ]; then
    "$PY" "$REPO/bench/device/summarize.py" "$OUT"
  fi
  echo
  if [ ${#FAILED[@]} -eq 0 ]; then
    echo "ALL STEPS OK"
  else
    echo "FAILED OR SKIPPED STEPS: ${FAILED[*]}  (details in check.log / tests.log)"
  fi
} 2>&1 | tee -a "$LOG"

[ ${#FAILED[@]} -eq 0 ]
