#!/usr/bin/env bash
# PAP-loss search on COCO (official: 40 rounds x 8 samples, every proxy = 1 epoch on 8 GPUs).
# COCO 2017 in data/coco (annotations/, train2017/, val2017/); 8 GPUs; the ImageNet ResNet-50 file
# resnet50-0676ba61.pth in $PAP_WEIGHTS (every proxy starts from it, as officially).
set -euo pipefail
COCO=${COCO:-data/coco}
export PAP_WEIGHTS=${PAP_WEIGHTS:-weights}
python scripts/make_search_split.py "$COCO/annotations/instances_train2017.json" "$COCO/annotations" --num-val 5000 --seed 0

# (a) official scheme: samples one after another, each proxy DDP over the 8 GPUs (global batch 64)
torchrun --nproc_per_node=8 "$(which pap-search)" experiment=search_retinanet data.root="$COCO" \
    hydra.run.dir=outputs/search_retinanet
torchrun --nproc_per_node=8 "$(which pap-search)" experiment=search_faster_rcnn data.root="$COCO" \
    hydra.run.dir=outputs/search_faster_rcnn

# (b) alternative: 8 proxies in parallel, one per GPU (per-proxy batch 8: scale the lr linearly)
# pap-search experiment=search_retinanet data.root="$COCO" train.lr=0.002 search.devices=auto

# A crashed search resumes from its folder (state saved after every proxy): rerun the same command.
# The result is written to <run dir>/searched_params.json; train with it:
torchrun --nproc_per_node=8 "$(which pap-train)" experiment=retinanet_pap_coco data.root="$COCO" \
    loss.head.params_file=outputs/search_retinanet/searched_params.json hydra.run.dir=outputs/retinanet_pap_searched
torchrun --nproc_per_node=8 "$(which pap-train)" experiment=faster_rcnn_pap_coco data.root="$COCO" \
    loss.rpn.params_file=outputs/search_faster_rcnn/searched_params.json \
    loss.roi.params_file=outputs/search_faster_rcnn/searched_params.json hydra.run.dir=outputs/faster_rcnn_pap_searched
