#!/usr/bin/env bash
# Convert official weights, then evaluate them:
#   scripts/convert_official.sh ckpts/bevformerv2-r50-t1-base-24ep.pth r50_t1_base_24ep
#   (FCOS COCO init of the R50 rows: bevformer-v2-convert ckpts/fcos_r50_coco_2mmdet.pth ckpts/fcos_r50_coco.pt,
#    which is their default init.path)
set -euo pipefail
SRC=${1:?official checkpoint}; EXP=${2:?experiment name}
bevformer-v2-convert "$SRC" "${SRC%.pth}_bevformer_v2.pt"
bevformer-v2-eval experiment="$EXP" checkpoint="${SRC%.pth}_bevformer_v2.pt" hydra.run.dir="outputs/${EXP}_official"
