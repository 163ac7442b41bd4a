#!/usr/bin/env bash
# Every row of the README reproduction table (COCO val2017, R50-FPN, 512 training scale), on GPUs.
# COCO 2017 in data/coco (annotations/, train2017/, val2017/); the ImageNet ResNet-50 file
#   https://download.pytorch.org/models/resnet50-0676ba61.pth  in $PAP_WEIGHTS (default ./weights)
# (the runs stop before building anything when it is missing). Each run folder gets metrics.json
# (AP, AP50, AP75, APs, APm, APl; COCOeval, score threshold 0.05). A killed run continues exactly
# when the same command is started again (train.resume=auto, checkpoints every 2000 steps).
set -euo pipefail
COCO=${COCO:-data/coco}
export PAP_WEIGHTS=${PAP_WEIGHTS:-weights}
PAP_TRAIN="$(which pap-train)"
run() {  # run <GPUs> <experiment>
    torchrun --nproc_per_node="$1" "$PAP_TRAIN" experiment="$2" data.root="$COCO" hydra.run.dir=outputs/"$2"
}

# mmdet rows of the PAP repository: 8 GPUs x 8 images (global batch 64)
for exp in retinanet_focal_l1_coco retinanet_focal_giou_coco retinanet_pap_coco \
           faster_rcnn_ce_l1_coco faster_rcnn_ce_giou_coco faster_rcnn_pap_coco; do
    run 8 "$exp"
done
# rows from the aLRP code base: 8 images per GPU; 4 GPUs (our reading: its 3665-iteration epoch = batch 32)
for exp in retinanet_ap_loss_coco retinanet_alrp_coco faster_rcnn_alrp_coco; do
    run 4 "$exp"
done
# Deformable DETR (Deformable DETR recipe, 8 GPUs x 4 images): baseline and PAP (our adaptation),
# each plain, with iterative box refinement, and with refinement + two-stage
for exp in deformable_detr_coco deformable_detr_refine_coco deformable_detr_two_stage_coco \
           deformable_detr_pap_coco deformable_detr_pap_refine_coco deformable_detr_pap_two_stage_coco; do
    run 8 "$exp"
done
# Evaluate a checkpoint alone:
#   pap-eval experiment=retinanet_pap_coco data.root="$COCO" eval.checkpoint=outputs/retinanet_pap_coco/checkpoints/ckpt_<step>.pt
