#!/usr/bin/env bash
# paper Tab. 3 (backbones x supervision; InternImage rows not configured): every row on real nuScenes with 8 GPUs, one after the other.
#   scripts/reproduce_tab3.sh [data.root=/data/nuscenes] [init.path=...]   (overrides go to every row)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
for EXP in tab3_r50_bev_only tab3_r50_persp_bev tab3_dla34_bev_only tab3_dla34_persp_bev tab3_r101_bev_only tab3_r101_persp_bev tab3_v2_99_bev_only tab3_v2_99_persp_bev; do
    "$HERE/reproduce_nuscenes.sh" "$EXP" "$@"
done
