#!/usr/bin/env bash
# The README's tiny experiment: UniGrad vs lambda = 0 vs random init on the digits, seeds 0 1 2, CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python scripts/tiny_experiment.py --out "${OUT:-tiny_results}" "$@"
