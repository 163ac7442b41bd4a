#!/usr/bin/env bash
# Tiny-data pilot of spec section 8 on CPU (README "Tiny-data pilot"): five objectives x 3 seeds on the embedded
# captioned shapes, frozen-feature probes, mean +- std. TINY DATA, not the paper's numbers.
set -euo pipefail
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} python "$(dirname "$0")/tiny_experiment.py" --out "${OUT:-outputs/tiny_experiment}" \
  --seeds 0 1 2 --jobs "${JOBS:-2}"
