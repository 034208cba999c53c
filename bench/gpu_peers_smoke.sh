#!/usr/bin/env bash
# Smoke test + first timings of the PyTorch peers on a CUDA machine (PyTorch 2.x, python3).
#   bench/gpu_peers_smoke.sh [FASHION_DIR] [CIFAR10]     results into ${OUT:-results/gpu-smoke}
# Checks that the in-file ResNet-50 equals torchvision's (names, shapes, weights for one seed),
# then runs fashion-mlp (10 epochs eager; 2 epochs compiled) and resnet50-cifar10 for a few
# steps in fp32, tf32, bf16 + channels-last, and compiled.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
FASHION="${1:-/usr/share/datasets/fashion-mnist}"
CIFAR="${2:-/work/shared/data/cifar10-jpeg.tar.gz}"
OUT="${OUT:-results/gpu-smoke}"
STEPS="${STEPS:-60}"
mkdir -p "$OUT/json"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'

echo "== in-file ResNet-50 vs torchvision"
"$PY" - <<'PYEOF'
import sys, torch
sys.path.insert(0, "bench/peers")
import peer_common as pc; pc.torch = torch
import resnet50_cifar10_torch as R
import torchvision
torch.manual_seed(7); a = R._local_resnet50(10)
torch.manual_seed(7); b = torchvision.models.resnet50(num_classes=10)
sa, sb = a.state_dict(), b.state_dict()
assert list(sa) == list(sb), "state_dict names/order differ"
bad = [k for k in sa if sa[k].shape != sb[k].shape or not torch.equal(sa[k], sb[k])]
print("state_dict entries:", len(sa), "differing:", bad[:5])
x = torch.randn(4, 3, 32, 32)
a.train(); b.train()
print("max |forward diff| (train mode):", (a(x) - b(x)).abs().max().item())
print("macs:", R.count_macs(b), "params:", sum(p.numel() for p in b.parameters()))
PYEOF

run() { local name="$1"; shift; echo "== $name: $*"; "$PY" "$@" --out "$OUT/json/$name.json" 2>&1 | tee "$OUT/json/$name.log" | grep -vE '^epoch [2-9]/'; }
M=bench/peers/fashion_mlp_torch.py
R=bench/peers/resnet50_cifar10_torch.py
C=/tmp/cifar10-u8.pt
run mlp_cuda_fp32        $M --device cuda --data "$FASHION"
run mlp_cuda_fp32_c2     $M --device cuda --data "$FASHION" --epochs 2 --compile

run rn50_fp32            $R --device cuda --data "$CIFAR" --cache $C --steps "$STEPS"
run rn50_tf32            $R --device cuda --data "$CIFAR" --cache $C --steps "$STEPS" --precision tf32
run rn50_bf16_cl         $R --device cuda --data "$CIFAR" --cache $C --steps "$STEPS" --precision bf16 --channels-last
run rn50_bf16_cl_aug     $R --device cuda --data "$CIFAR" --cache $C --steps "$STEPS" --precision bf16 --channels-last --augment --model local
run rn50_bf16_cl_compile $R --device cuda --data "$CIFAR" --cache $C --steps "$((STEPS * 3))" --precision bf16 --channels-last --compile
tar czf "$OUT/json.tar.gz" -C "$OUT" json
