#!/bin/bash
# The current PyTorch from PyPI (2.15, in a venv the bench made: results/venv-torch) as the peer,
# side by side with trainbench, quiet machine, 2026-12-07.
set -u
R=bench/results/cpu-2026-12-07-torch2
export TORCH=pypi
PEERS=torch OUTDIR=$R/fashion-mlp bench/cpu_fashion_mlp.sh > $R/fashion-mlp.log 2>&1
for p in fp32 bf16; do
  OUTDIR=$R/resnet50-$p DATA=/work/data/cifar10 bench/cpu_resnet50.sh --precision $p > $R/resnet50-$p.log 2>&1
done
