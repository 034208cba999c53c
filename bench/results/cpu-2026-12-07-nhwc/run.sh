#!/bin/bash
# The session's quiet-machine pass (2026-12-07, 2-vCPU EPYC, AVX512-BF16), from the repository
# root: PyTorch peers side by side (bench/cpu_*.sh), the layout A/B (NHWC, the default, against
# --nchw) interleaved, and the MPI ranks comparison (1 rank x 2 threads against 2 ranks x 1).
set -u
R=bench/results/cpu-2026-12-07-nhwc
B=build/trainbench
D=/work/data/cifar10
log() { echo "$(date +%T) load $(cut -d' ' -f1 /proc/loadavg) $*" | tee -a $R/progress.log; }
log start
for p in fp32 bf16; do
  OUTDIR=$R/resnet50-$p DATA=$D bench/cpu_resnet50.sh --precision $p > $R/resnet50-$p.log 2>&1
  log "resnet50 $p vs pytorch done"
done
OUTDIR=$R/fashion-mlp bench/cpu_fashion_mlp.sh > $R/fashion-mlp.log 2>&1
log "fashion-mlp vs pytorch done"
for round in 1 2; do
  for p in bf16 fp32; do
    for l in nhwc nchw; do
      flag=""; [ $l = nchw ] && flag=--nchw
      $B run resnet50-cifar10 --data $D --precision $p --steps 40 --no-peak --quiet $flag \
        --out $R/layout/r50-$p-$l-$round.json > /dev/null 2>> $R/layout.err
    done
  done
  log "layout round $round done"
done
# MPI: the test set cut to 1,000 images, as the first (loaded) comparison did.
T=/tmp/cifar-t1k; mkdir -p $T; cp $D/data_batch_* $D/batches.meta.txt $T/
head -c $((1000 * 3073)) $D/test_batch.bin > $T/test_batch.bin
M="mpirun --allow-run-as-root"
for round in 1 2; do
  $B run resnet50-cifar10 --data $T --steps 24 --threads 2 --no-peak --quiet --out $R/ranks/r50-1x2-$round.json > /dev/null 2>> $R/ranks.err
  $M -np 2 $B run resnet50-cifar10 --data $T --steps 24 --no-peak --quiet --out $R/ranks/r50-2x1-$round.json > /dev/null 2>> $R/ranks.err
  $B run fashion-mlp --steps 1000 --threads 2 --no-peak --quiet --out $R/ranks/mlp-1x2-$round.json > /dev/null 2>> $R/ranks.err
  $M -np 2 $B run fashion-mlp --steps 1000 --no-peak --quiet --out $R/ranks/mlp-2x1-$round.json > /dev/null 2>> $R/ranks.err
  log "ranks round $round done"
done
log end
