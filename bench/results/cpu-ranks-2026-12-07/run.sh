#!/bin/bash
# Interleaved A/B on the shared 2-core machine: ResNet-50 (CIFAR-10 training set, test set cut
# to 1,000 images, 12 steps), 1 rank x 2 threads against 2 ranks x 1 thread at buckets of 4 MB
# and none; fashion-mlp (1000 steps) likewise.
B=/work/wt-mpi/build/trainbench
M="mpirun --allow-run-as-root"
D="--data /tmp/cifar-t1k"
cd /tmp/bench
for round in 1 2; do
  $B run resnet50-cifar10 $D --steps 12 --threads 2 --no-peak --quiet --out r50-1x2-$round.json > /dev/null 2>>err.log
  for bm in 4 0; do
    $M -np 2 $B run resnet50-cifar10 $D --steps 12 --bucket-mb $bm --no-peak --quiet --out r50-2x1-b$bm-$round.json > /dev/null 2>>err.log
  done
  $B run fashion-mlp --steps 1000 --threads 2 --no-peak --quiet --out mlp-1x2-$round.json > /dev/null 2>>err.log
  $M -np 2 $B run fashion-mlp --steps 1000 --no-peak --quiet --out mlp-2x1-$round.json > /dev/null 2>>err.log
  echo "round $round done $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)" >> progress.log
done
