#!/usr/bin/env bash
# The README's tiny-data experiment (embedded digits, CPU): 3 seeds of the default chain (addp-train) and of the
# chain with longer ADDP stages (experiment=tiny_long, 900 steps; experiment=tiny_60ep, 2,700 steps; tokenizer and
# teacher are the same cache entries), then the summary table (scripts/tiny_summary.py -> docs/tiny_experiment.json).
# Tiny data: not the paper's numbers.
#   bash scripts/tiny_experiment.sh [OUT_DIR]      (default outputs/tiny_experiment)
# SEEDS / ARMS select a subset, e.g. SEEDS="1" ARMS="default" (the README's measurement ran one seed per process,
# each seed with its own ADDP_CACHE_DIR; the tiny-FID feature network has its own fixed seed, so every cache trains
# the same one).
set -euo pipefail
OUT=${1:-outputs/tiny_experiment}
SEEDS=${SEEDS:-"0 1 2"}
ARMS=${ARMS:-"default tiny_long tiny_60ep"}
export OMP_NUM_THREADS=1 ADDP_CACHE_DIR=${ADDP_CACHE_DIR:-$OUT/cache}
mkdir -p "$OUT"
for seed in $SEEDS; do
  for exp in $ARMS; do
    args=(seed=$seed hydra.run.dir=$OUT/$exp/seed$seed)
    [ "$exp" = default ] || args+=(experiment=$exp)
    /usr/bin/time -f "%e s wall, %U s user, %S s sys" -o "$OUT/time_${exp}_seed$seed.txt" --quiet \
      addp-train "${args[@]}" > "$OUT/${exp}_seed$seed.log" 2>&1
  done
done
python "$(dirname "$0")/tiny_summary.py" "$OUT" "$(dirname "$0")/../docs/tiny_experiment.json"
