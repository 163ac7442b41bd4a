#!/usr/bin/env bash
# Final trainings of the README table (COCO val2017, R50-FPN, 100 epochs, 512 training scale), 8 GPUs.
set -euo pipefail
COCO=${COCO:-data/coco}
PAP_TRAIN="$(which pap-train)"
for exp in retinanet_pap_coco retinanet_focal_giou_coco faster_rcnn_pap_coco faster_rcnn_ce_giou_coco; do
    torchrun --nproc_per_node=8 "$PAP_TRAIN" experiment=$exp data.root="$COCO" hydra.run.dir=outputs/$exp
done
# metrics.json of each run folder holds AP, AP50, AP75, APs, APm, APl (COCOeval, score threshold 0.05).
# Evaluate a checkpoint alone:
#   pap-eval experiment=retinanet_pap_coco data.root="$COCO" eval.checkpoint=outputs/retinanet_pap_coco/checkpoints/ckpt_<step>.pt
