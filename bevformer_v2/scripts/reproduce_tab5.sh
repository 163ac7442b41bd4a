#!/usr/bin/env bash
# paper Tab. 5 (perspective head x BEV decoder, R50 48 ep): every row on real nuScenes with 8 GPUs, one after the other.
#   scripts/reproduce_tab5.sh [data.root=/data/nuscenes] [init.path=...]   (overrides go to every row)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
for EXP in tab3_r50_persp_bev tab5_r50_dd3d_group_detr tab5_r50_detr3d_deformable_detr tab5_r50_detr3d_group_detr; do
    "$HERE/reproduce_nuscenes.sh" "$EXP" "$@"
done
