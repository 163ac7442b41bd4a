#!/usr/bin/env bash
# CPU-only tiny runs on the embedded shapes data: the commands behind the README "TINY DATA" tables.
# Each loss row uses its paper row's test settings (box-coder stds 1.0 and NMS 0.5 for the Focal
# baselines, NMS 0.5 for AP-Loss / aLRP, NMS 0.6 for PAP); everything else is the tiny default config.
set -euo pipefail
export OMP_NUM_THREADS=1
OUT=outputs/tiny_experiment
python scripts/tiny_experiment.py --out $OUT --losses pap_retinanet pap_identity
python scripts/tiny_experiment.py "model.box_stds=[1.0,1.0,1.0,1.0]" model.nms_thresh=0.5 --out $OUT --losses focal_giou focal_l1
python scripts/tiny_experiment.py model.nms_thresh=0.5 --out $OUT --losses ap_loss
python scripts/tiny_experiment.py model.nms_thresh=0.5 loss.sb_period=12 --out $OUT --losses alrp   # SB period = 1 epoch
python scripts/tiny_experiment.py experiment=deformable_detr_tiny_shapes --out $OUT --tag _detr --losses pap_detr focal_l1_giou
for l in pap_faster_rcnn ce_giou; do
    pap-train model=faster_rcnn_tiny loss=$l train.epochs=4 "train.milestones=[3]" hydra.run.dir=outputs/frcnn_smoke_$l
done
pap-search search.rounds=4 search.samples=8 hydra.run.dir=outputs/tiny_search
python scripts/tiny_experiment.py --out $OUT --losses pap_identity --tag _searched \
    loss.head.params_file="$PWD/outputs/tiny_search/searched_params.json"
python benchmarks/bench_loss.py
python benchmarks/bench_ranking_losses.py
