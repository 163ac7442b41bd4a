#!/usr/bin/env bash
# README tiny-data experiment (CPU, ~10 CPU-minutes): De-focus recipe vs plain causal Mamba, 3 seeds, digits on canvas.
set -euo pipefail
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python "$(dirname "$0")/toy_experiment.py" --out outputs/toy_experiment
