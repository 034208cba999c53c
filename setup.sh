#!/usr/bin/env bash
# trainbench setup: installs what is missing (Debian packages), builds in Release, and with
# `test` also builds and runs the whole test suite. The one script a fresh machine needs.
#
#   ./setup.sh            install + build           (then: build/trainbench run fashion-mlp)
#   ./setup.sh test       install + build + tests   (what CI runs; with PyTorch for the
#                         safetensors round trip)
#   ./setup.sh sanitize   install + build with ASan/UBSan (CPU only) + tests
#   ./setup.sh bench      install + build, plus the CPU PyTorch peer (python3-torch, OpenBLAS)
#                         that bench/cpu_*.sh run side by side (bench/README.md)
#   ./setup.sh fuzz [S]   install clang + build the libFuzzer targets of tests/fuzz (build-fuzz)
#                         and run each for S seconds (default 30); fails on any crash, leak,
#                         timeout or out-of-memory (README "Fuzzing")
#
# Environment: BUILD_DIR (default build), TRAINBENCH_CUDA (AUTO|ON|OFF, default AUTO: the CUDA
# backend is built when nvcc is found, e.g. in /usr/local/cuda/bin), JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-build}"
case "$mode" in
  build | test | sanitize | bench | fuzz) ;;
  *) echo "usage: ./setup.sh [build|test|sanitize|bench|fuzz [seconds]]" >&2; exit 2 ;;
esac

packages=(cmake g++ make pkg-config libdnnl-dev ocl-icd-opencl-dev dataset-fashion-mnist
  libcli11-dev nlohmann-json3-dev libfmt-dev zlib1g-dev libjpeg62-turbo-dev libpng-dev
  libgtest-dev libgmock-dev libbenchmark-dev chromium fonts-dejavu-core
  libvulkan-dev glslc mesa-vulkan-drivers vulkan-validationlayers libopenmpi-dev openmpi-bin)
[ "$mode" = bench ] && packages+=(python3-torch libopenblas0-pthread)
# The safetensors round trip with PyTorch (tests/train/torch_roundtrip.py).
[ "$mode" = test ] && packages+=(python3-torch python3-torchvision)
[ "$mode" = fuzz ] && packages+=(clang libclang-rt-14-dev libomp-14-dev)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

jobs="${JOBS:-$(nproc)}"
build="${BUILD_DIR:-build}"
extra=()
targets=()
if [ "$mode" = sanitize ]; then
  build="${BUILD_DIR:-build-sanitize}"
  extra=(-DTRAINBENCH_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTRAINBENCH_CUDA=OFF)
fi
if [ "$mode" = fuzz ]; then
  build="${BUILD_DIR:-build-fuzz}"
  extra=(-DCMAKE_CXX_COMPILER=clang++ -DTRAINBENCH_FUZZ=ON -DTRAINBENCH_CUDA=OFF
    -DTRAINBENCH_TESTS=OFF -DTRAINBENCH_BENCHMARKS=OFF -DTRAINBENCH_VULKAN=OFF -DTRAINBENCH_MPI=OFF)
  targets=(--target fuzzers)
fi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTRAINBENCH_CUDA="${TRAINBENCH_CUDA:-AUTO}" \
  "${extra[@]}" >/dev/null
cmake --build "$build" -j "$jobs" "${targets[@]}"

case "$mode" in
  build) echo "setup: built $build/trainbench; try: $build/trainbench run fashion-mlp" ;;
  bench) echo "setup: built $build/trainbench and installed the PyTorch peer; try: bench/cpu_fashion_mlp.sh" ;;
  test)
    # One test at a time: the end-to-end tests use every core, and timing-sensitive sampler
    # tests want a quiet machine.
    ctest --test-dir "$build" --output-on-failure --timeout 600 ;;
  sanitize)
    # Under ASan/UBSan everything runs 3-10x slower: leave out the real-data end-to-end runs and
    # the timing tests, and the PyTorch round trip (ResNet-50 steps), which the plain `test` run
    # covers; and the MPI ranks (Open MPI's own allocations read as leaks to LeakSanitizer).
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      ctest --test-dir "$build" --output-on-failure --timeout 600 \
      -E 'Real|OneEpoch|ShortRunWritesRecord|Bench\.|Sampler\.|Html|TorchRoundTrip|ResNet50Step|Ranks' ;;
  fuzz)
    # Each target from its checked-in seeds; what it discovers goes to $build/fuzz-corpus, a
    # crashing input to $build/fuzz-artifacts. All targets run, then any failure fails the step.
    seconds="${2:-30}"
    mkdir -p "$build/fuzz-artifacts"
    failed=()
    for src in tests/fuzz/fuzz_*.cpp; do
      name="$(basename "$src" .cpp)"
      name="${name#fuzz_}"
      mkdir -p "$build/fuzz-corpus/$name"
      log="$build/fuzz-$name.log"
      dict=()
      [ -f "tests/fuzz/fuzz_$name.dict" ] && dict=(-dict="tests/fuzz/fuzz_$name.dict")
      if UBSAN_OPTIONS=print_stacktrace=1 "$build/tests/fuzz/fuzz_$name" \
        "$build/fuzz-corpus/$name" "tests/fuzz/corpus/$name" "${dict[@]}" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$build/fuzz-artifacts/$name-" >"$log" 2>&1; then
        runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
        echo "setup: fuzz_$name: ${runs:-?} runs in ${seconds} s, no findings"
      else
        tail -40 "$log" >&2
        echo "setup: fuzz_$name FAILED (log: $log, input: $build/fuzz-artifacts/$name-*)" >&2
        failed+=("$name")
      fi
    done
    ((${#failed[@]} == 0)) || { echo "setup: fuzz findings in: ${failed[*]}" >&2; exit 1; } ;;
esac
