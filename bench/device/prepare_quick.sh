#!/usr/bin/env bash
# Builds trainbench with CUDA (sm_90) here and packs what the device scripts need into .devrun/
# (git-ignored): the two binaries and the non-CUDA shared libraries they load, Fashion-MNIST
# (unpacked, then xz: 26 MB instead of the .gz files' 31) and the CIFAR-10 JPEG set, about 56 MB.
# What travels is that and the tracked files, at most 64 MiB together: checked at the end. No
# device time goes to compiling. Then one device call, carry [".devrun"]: "bash bench/device/session.sh"
# (timeout_s 580; a whole lease's work) or, with less time left, "bash bench/device/quick.sh"
# (timeout_s ~360; the GPU tests and trainbench's own speed).
# Our loops are built for x86-64-v3: the lent machine's host CPU is unknown, and a v4 build
# refuses to start on one without AVX-512. No MPI: the image has no libmpi, and one GPU runs no
# ranks. (Vulkan stays: its loader is opened at run time, where the image has one.)
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.devrun/' .git/info/exclude 2>/dev/null || echo '/.devrun/' >>.git/info/exclude
cmake -S . -B build-dev -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DTRAINBENCH_CUDA=ON -DTRAINBENCH_BENCHMARKS=OFF -DTRAINBENCH_ARCH_FLAGS=-march=x86-64-v3 \
  -DTRAINBENCH_MPI=OFF >/dev/null
cmake --build build-dev -j"$(nproc)"
rm -rf .devrun && mkdir -p .devrun/stage/lib
cp build-dev/trainbench build-dev/trainbench_tests .devrun/stage/
for l in libdnnl.so.2 libfmt.so.9 libjpeg.so.62 libpng16.so.16 libgomp.so.1 libOpenCL.so.1; do
  cp -L "/usr/lib/x86_64-linux-gnu/$l" .devrun/stage/lib/
done
(cd .devrun/stage && tar -cJf ../pack.tar.xz .) && rm -rf .devrun/stage
cp ../shared/data/cifar10-jpeg.tar.gz .devrun/
mkdir -p .devrun/stage
for f in /usr/share/datasets/fashion-mnist/*-ubyte.gz; do
  gunzip -c "$f" >".devrun/stage/$(basename "$f" .gz)"
done
(cd .devrun/stage && tar -cJf ../fashion.tar.xz .) && rm -rf .devrun/stage
pack=$(du -sb .devrun | cut -f1)
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
echo "prepare_quick: .devrun $pack bytes + tracked files $tracked = $((pack + tracked)) of 67108864"
if [ $((pack + tracked)) -gt $((64 * 1024 * 1024)) ]; then
  echo "prepare_quick: over the 64 MiB that may travel to the device" >&2
  exit 1
fi
