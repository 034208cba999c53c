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
#
# Environment: BUILD_DIR (default build), TRAINBENCH_CUDA (AUTO|ON|OFF, default AUTO: the CUDA
# backend is built when nvcc is found, e.g. in /usr/local/cuda/bin), JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-build}"
case "$mode" in
  build | test | sanitize | bench) ;;
  *) echo "usage: ./setup.sh [build|test|sanitize|bench]" >&2; exit 2 ;;
esac

packages=(cmake g++ make pkg-config libdnnl-dev ocl-icd-opencl-dev dataset-fashion-mnist
  libcli11-dev nlohmann-json3-dev libfmt-dev zlib1g-dev libjpeg62-turbo-dev libpng-dev
  libgtest-dev libgmock-dev libbenchmark-dev chromium fonts-dejavu-core libopenmpi-dev
  openmpi-bin)
[ "$mode" = bench ] && packages+=(python3-torch libopenblas0-pthread)
# The safetensors round trip with PyTorch (tests/train/torch_roundtrip.py).
[ "$mode" = test ] && packages+=(python3-torch python3-torchvision)

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
if [ "$mode" = sanitize ]; then
  build="${BUILD_DIR:-build-sanitize}"
  extra=(-DTRAINBENCH_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTRAINBENCH_CUDA=OFF)
fi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTRAINBENCH_CUDA="${TRAINBENCH_CUDA:-AUTO}" \
  "${extra[@]}" >/dev/null
cmake --build "$build" -j "$jobs"

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
      -E 'Real|OneEpoch|ShortRunWritesRecord|Bench\.|Sampler\.|Html|TorchRoundTrip|Ranks' ;;
esac
