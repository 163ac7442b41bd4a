#!/usr/bin/env bash
# Train + evaluate one experiment on real nuScenes v1.0-trainval with 8 GPUs (torchrun, DDP, SyncBN).
#   scripts/reproduce_nuscenes.sh r50_t1_base_24ep [data.root=/data/nuscenes] [init.path=ckpts/fcos_r50_coco.pt]
# Every paper row needs its initial weights (init.path; the run stops at once, saying where to get them and how to
# convert them, when the file is missing). Global batch 16 = 8 GPUs x batch 1 x accum 2 (train.accum=2).
# Experiments: r50_t1_base_{24,48}ep r50_t1_{24,48}ep r50_t2_{24,48}ep r50_t8_24ep        (released configs)
#              tab3_{r50,dla34,r101,v2_99}_{bev_only,persp_bev} tab2_r101_{persp_only,bev_bev} (paper Tab. 2/3)
#              tab4_r50_{bev_only,persp_bev}_{24,72}ep                                    (paper Tab. 4)
#              tab3_r50_persp_bev (= DD3D + Def. DETR) tab5_r50_dd3d_group_detr
#              tab5_r50_detr3d_{deformable_detr,group_detr}                               (paper Tab. 5)
#              tab6_r50_temporal_{pers,ida,long,bidir,bidir_no_persp}                     (paper Tab. 6)
#              r50_t1_two_stage_24ep                                                      (hybrid queries, §2.8)
# One script per table (reproduce_<table>.sh) runs its rows one after the other.
set -euo pipefail
EXP=${1:?usage: $0 <experiment> [hydra overrides]}
shift
torchrun --standalone --nproc_per_node=8 --no-python bevformer-v2-train experiment="$EXP" \
    hydra.run.dir="outputs/$EXP" "$@"
# evaluation of the final checkpoint alone (single GPU, devkit NDS/mAP/TP errors):
#   bevformer-v2-eval experiment=$EXP checkpoint=outputs/$EXP/checkpoints/<last>.pt hydra.run.dir=outputs/$EXP/eval
