#!/usr/bin/env bash
# Builds trainbench with CUDA (sm_90) here and packs what the device scripts need into .devrun/
# (git-ignored): the two binaries and the non-CUDA shared libraries they load, the Fashion-MNIST
# files, a 4,000-image CIFAR-10 subset (bench/device/quick.sh) and the whole CIFAR-10 JPEG set
# (bench/device/session.sh), about 60 MB of the carry's 64 MiB. No device time goes to
# compiling. Then one device call, carry [".devrun"]: "bash bench/device/session.sh"
# (timeout_s 580; a whole lease's work) or, with less time left, "bash bench/device/quick.sh"
# (timeout_s ~360; the GPU tests and trainbench's own speed).
set -euo pipefail
cd "$(dirname "$0")/../.."
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
cp ../shared/data/cifar10-jpeg.tar.gz .devrun/
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
bytes=$(du -sb .devrun | cut -f1)
if [ "$bytes" -gt $((64 * 1024 * 1024)) ]; then
  echo "prepare_quick: .devrun is $bytes bytes, over the carry's 64 MiB" >&2
  exit 1
fi
