#!/usr/bin/env bash
# Train + evaluate one experiment on real nuScenes v1.0-trainval with 8 GPUs (torchrun, DDP, SyncBN).
#   scripts/reproduce_nuscenes.sh r50_t1_base_24ep [data.root=/data/nuscenes] [train.load_from=ckpts/fcos_r50_coco_converted.pth]
# Global batch 16 = 8 GPUs x batch 1 x accum 2 (the experiment files set train.accum=2).
# Experiments: r50_t1_base_{24,48}ep r50_t1_{24,48}ep r50_t2_{24,48}ep r50_t8_24ep        (released configs)
#              tab3_{r50,dla34,r101,v2_99}_{bev_only,persp_bev} tab2_r101_{persp_only,bev_bev} (paper Tab. 2/3)
#              tab4_r50_{bev_only,persp_bev}_{24,72}ep  tab5_r50_dd3d_group_detr            (paper Tab. 4/5)
#              r50_t1_two_stage_24ep                                                      (hybrid queries, §2.8)
set -euo pipefail
EXP=${1:?usage: $0 <experiment> [hydra overrides]}
shift
torchrun --standalone --nproc_per_node=8 --no-python bevformer-v2-train experiment="$EXP" \
    hydra.run.dir="outputs/$EXP" "$@"
# evaluation of the final checkpoint alone (single GPU, devkit NDS/mAP/TP errors):
#   bevformer-v2-eval experiment=$EXP checkpoint=outputs/$EXP/checkpoints/<last>.pt hydra.run.dir=outputs/$EXP/eval
