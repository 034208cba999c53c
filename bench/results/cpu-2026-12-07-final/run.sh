#!/bin/bash
# Quiet machine, 2026-12-07 (2-vCPU EPYC, AVX512-BF16), from the repository root: the peers side
# by side again (PyTorch 1.13 with OpenBLAS, TensorFlow/Keras from PyPI), then ResNet-50 bf16:
# 33 steps (its projection of the 10-epoch run) and the whole 10 epochs + test.
set -u
R=bench/results/cpu-2026-12-07-final
B=build/trainbench
D=/work/data/cifar10
log() { echo "$(date +%T) load $(cut -d' ' -f1 /proc/loadavg) $*" | tee -a $R/progress.log; }
log start
PEERS="torch keras" OUTDIR=$R/fashion-mlp bench/cpu_fashion_mlp.sh > $R/fashion-mlp.log 2>&1
log "fashion-mlp vs pytorch, keras done"
PEERS="torch keras" OUTDIR=$R/resnet50-fp32 DATA=$D bench/cpu_resnet50.sh --precision fp32 > $R/resnet50-fp32.log 2>&1
log "resnet50 fp32 vs pytorch, keras done"
$B run resnet50-cifar10 --data $D --precision bf16 --steps 33 --out $R/r50-bf16-33steps.json > $R/r50-bf16-33steps.log 2>&1
log "resnet50 bf16 33 steps done"
$B run resnet50-cifar10 --data $D --precision bf16 --out $R/r50-bf16-10epochs.json > $R/r50-bf16-10epochs.log 2>&1
log "resnet50 bf16 10 epochs done"
