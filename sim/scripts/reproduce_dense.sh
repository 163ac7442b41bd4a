#!/usr/bin/env bash
# Dense-transfer rows of the README table (ViT-B/16, 1600 ep): COCO Mask R-CNN (52.1 / 46.2), LVIS (40.5 box AP),
# ADE20K UperNet (51.1 mIoU). 8 GPUs. See README for the adaptations to ViTDet / mmseg.
# Usage: PRETRAIN=sim_base_1600ep_pretrain.pth COCO=/data/coco ADE=/data/ADEChallengeData2016 \
#        bash scripts/reproduce_dense.sh [coco|lvis|ade20k]
set -euo pipefail
case "${1:-coco}" in
  coco)   torchrun --nproc_per_node 8 "$(which sim-det)" experiment=det/coco_maskrcnn_vitdet_b_100ep init.path="$PRETRAIN" \
            data.root="$COCO" hydra.run.dir=outputs/det_coco ;;
  lvis)   torchrun --nproc_per_node 8 "$(which sim-det)" experiment=det/lvis_maskrcnn_vitdet_b_100ep init.path="$PRETRAIN" \
            data.root="$COCO" hydra.run.dir=outputs/det_lvis ;;   # lvis_v1_{train,val}.json in $COCO/annotations
  ade20k) torchrun --nproc_per_node 8 "$(which sim-seg)" experiment=seg/ade20k_upernet_vit_b_160k init.path="$PRETRAIN" \
            data.root="$ADE" hydra.run.dir=outputs/seg_ade20k ;;
  *) echo "unknown row $1; use coco, lvis or ade20k" >&2; exit 2 ;;
esac
