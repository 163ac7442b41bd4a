#!/usr/bin/env bash
# CPU-only tiny runs on the embedded shapes data (numbers in the README "tiny" rows).
set -euo pipefail
export OMP_NUM_THREADS=1
python scripts/tiny_experiment.py --seeds 0 1 2 --losses pap_retinanet focal_giou pap_identity
pap-search hydra.run.dir=outputs/tiny_search          # 2 rounds x 2 samples demo search
python benchmarks/bench_loss.py                        # fast vs reference loss
