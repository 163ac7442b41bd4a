#!/usr/bin/env bash
# CPU-only tiny runs on the embedded shapes data: the commands behind the README "TINY DATA" tables.
set -euo pipefail
export OMP_NUM_THREADS=1
OUT=outputs/tiny_experiment
python scripts/tiny_experiment.py --out $OUT --losses pap_retinanet focal_giou pap_identity
python scripts/tiny_experiment.py --out $OUT --losses pap_detr focal_l1_giou --tag _detr experiment=deformable_detr_tiny_shapes
for l in pap_faster_rcnn ce_giou; do
    pap-train model=faster_rcnn_tiny loss=$l train.epochs=4 "train.milestones=[3]" hydra.run.dir=outputs/frcnn_smoke_$l
done
pap-search search.rounds=4 search.samples=8 hydra.run.dir=outputs/tiny_search
python scripts/tiny_experiment.py --out $OUT --losses pap_identity --tag _searched \
    loss.head.params_file="$PWD/outputs/tiny_search/searched_params.json"
python benchmarks/bench_loss.py
