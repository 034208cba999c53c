# Sourced by the prebuilt device scripts (quick.sh, session.sh): unpacks the binaries that
# prepare_quick.sh packed, finds the image's CUDA libraries, and defines `step`, which runs one
# command under a shared deadline. Set before sourcing: LOG (the script's log) and BUDGET (its
# seconds). After it: TB, TT (the binaries), FASHION (the Fashion-MNIST folder), T0, OUT, and the
# functions step, safe_flags and vulkan_steps.
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
OUT=${OUT:-/tmp/tb-out}
T0=$(date +%s)
mkdir -p "$OUT" /tmp/tb
[ -f .devrun/pack.tar.xz ] || { echo "no .devrun/pack.tar.xz: run bench/device/prepare_quick.sh first" | tee "$LOG"; exit 2; }
tar -xJf .devrun/pack.tar.xz -C /tmp/tb
FASHION=/tmp/fashion
mkdir -p $FASHION && tar -xJf .devrun/fashion.tar.xz -C $FASHION
libdirs=$(find /usr/local/cuda*/lib* /usr/local/lib /opt /usr/lib -xdev \( -name 'libcudnn.so.9' \
  -o -name 'libcublasLt.so.13' -o -name 'libcudart.so.13' -o -name 'libnccl.so.2' \) -printf '%h\n' 2>/dev/null | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="/tmp/tb/lib:${libdirs}${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1
TB=/tmp/tb/trainbench
TT=/tmp/tb/trainbench_tests
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.total --format=csv; echo "libs: $libdirs"; ldd $TB | grep -E "not found|cudnn|cublas|cudart|nccl"; } 2>&1 | tee "$LOG"

# step NAME LIMIT_S CMD...: output appended to $STEP_LOG (default $LOG), its status and last lines
# shown; capped by what is left of BUDGET, skipped (and said so) when under 15 s are left.
step() {
  local name=$1 limit=$2 out=${STEP_LOG:-$LOG} s left rc tmp=/tmp/tb-step.log
  shift 2
  s=$(date +%s)
  left=$((T0 + BUDGET - s))
  if [ "$left" -lt 15 ]; then
    echo "== $name skipped: out of time (budget $BUDGET s)" | tee -a "$LOG"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "===== $name: $*" >>"$out"
  timeout -k 3 "$limit" "$@" 2>&1 | tee "$tmp" >>"$out"
  rc=${PIPESTATUS[0]}
  echo "== $name rc=$rc $(($(date +%s) - s))s" | tee -a "$LOG"
  tail -n 4 "$tmp"
}

# After the GPU tests (their log in $1): the default-on paths whose tests failed, as the flags
# that switch them off for a run in precision $2 (--no-bn-slices; in bf16 --no-bf16-reuse), so the
# runs after measure the rest instead of timing wrong numbers. Prints the flags.
safe_flags() {
  local f=""
  grep -qE "FAILED .*(CudaBatchnorm|batchnorm)" "$1" && f="$f --no-bn-slices"
  [ "$2" = bf16 ] && grep -qE "FAILED .*Bf16Reused" "$1" && f="$f --no-bf16-reuse"
  echo "$f"
}

# Issue 23's last line: where the image has a Vulkan driver for the GPU, the Vulkan backend's tests
# and one fashion-mlp epoch on it (its GEMM peak measured), record to $1 when given; else one line
# saying why not.
vulkan_steps() {
  local line
  line=$($TB devices 2>&1 | grep '^backend vulkan')
  if [[ "$line" != *"usable: yes"* ]]; then
    echo "== vulkan skipped: ${line:-no vulkan line from trainbench devices}" | tee -a "$LOG"
    return
  fi
  step vulkan_tests 60 $TT --gtest_filter='Vulkan*'
  step vulkan_mlp 40 $TB run fashion-mlp --device vulkan --epochs 1 --data $FASHION ${1:+--out "$1"}
}
