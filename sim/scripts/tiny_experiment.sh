#!/usr/bin/env bash
# Tiny CPU experiment (README "Tiny experiment"): the default sim-pretrain (tiny SiameseIM, sklearn digits, 10 epochs)
# for seeds 0, 1, 2, with the UniGrad negative weight lambda = 0.02 (paper) and lambda = 0 (ablation).
# Each run probes its own initial weights (the "random init" baseline at equal architecture) and its final weights.
# Usage: bash scripts/tiny_experiment.sh [OUT_DIR]   (about 2 CPU-minutes per run with OMP_NUM_THREADS=1)
set -euo pipefail
OUT=${1:-outputs/tiny_experiment}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for lam in 0.02 0; do
  for seed in 0 1 2; do
    sim-pretrain seed=$seed train.neg_weight=$lam hydra.run.dir=$OUT/lambda${lam}_seed${seed}
  done
done
python "$(dirname "$0")/summarize_tiny.py" "$OUT" | tee "$OUT/summary.json"
