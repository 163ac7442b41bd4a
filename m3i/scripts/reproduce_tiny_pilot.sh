#!/usr/bin/env bash
# Tiny-data pilot of spec section 8 on CPU (README "Tiny-data pilot"): five objectives x 3 seeds on the embedded
# captioned shapes, frozen-feature probes, mean +- std. TINY DATA, not the paper's numbers.
# Extra arguments go to tiny_experiment.py; the reduced pilot of the README (24 steps, 1024 images) is
#   bash scripts/reproduce_tiny_pilot.sh --variants sup clip dense m3i -- train.epochs=3 data.sources.0.limit=1024 probe.limit=500
set -euo pipefail
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} python "$(dirname "$0")/tiny_experiment.py" --out "${OUT:-outputs/tiny_experiment}" \
  --seeds 0 1 2 --jobs "${JOBS:-1}" "$@"
