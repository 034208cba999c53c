#!/usr/bin/env bash
# Builds trainbench with CUDA (sm_90) here and packs what bench/device/quick.sh needs into
# .devrun/ (git-ignored): the two binaries and the non-CUDA shared libraries they load, the
# Fashion-MNIST files, and a 4,000-image CIFAR-10 subset. No device time goes to compiling.
# Then: device run, carry [".devrun"], command "bash bench/device/quick.sh", timeout_s ~180.
# --full-cifar packs the whole CIFAR-10 JPEG set instead of Fashion-MNIST and the subset (the
# carry holds 64 MiB), for bench/device/accuracy.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
FULL_CIFAR=0
[ "${1:-}" = --full-cifar ] && FULL_CIFAR=1
grep -qx '/.devrun/' .git/info/exclude 2>/dev/null || echo '/.devrun/' >>.git/info/exclude
cmake -S . -B build-dev -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DTRAINBENCH_CUDA=ON -DTRAINBENCH_BENCHMARKS=OFF >/dev/null
cmake --build build-dev -j"$(nproc)"
rm -rf .devrun && mkdir -p .devrun/stage/lib
cp build-dev/trainbench build-dev/trainbench_tests .devrun/stage/
for l in libdnnl.so.2 libfmt.so.9 libjpeg.so.62 libpng16.so.16 libgomp.so.1 libOpenCL.so.1; do
  cp -L "/usr/lib/x86_64-linux-gnu/$l" .devrun/stage/lib/
done
(cd .devrun/stage && tar -cJf ../pack.tar.xz .) && rm -rf .devrun/stage
if [ "$FULL_CIFAR" = 1 ]; then
  cp ../shared/data/cifar10-jpeg.tar.gz .devrun/
  du -sh .devrun
  exit 0
fi
cp -r /usr/share/datasets/fashion-mnist .devrun/fashion
python3 - <<'PY'
import collections, tarfile
src = tarfile.open('../shared/data/cifar10-jpeg.tar.gz')
out = tarfile.open('.devrun/cifar-small.tar.gz', 'w:gz')
count = collections.Counter()
for m in src:
    if not m.isfile():
        continue
    split, cls = m.name.split('/')[-3:-1]
    if count[(split, cls)] < (300 if split == 'train' else 100):
        count[(split, cls)] += 1
        out.addfile(m, src.extractfile(m))
out.close()
PY
du -sh .devrun
