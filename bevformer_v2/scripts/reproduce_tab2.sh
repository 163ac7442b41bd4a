#!/usr/bin/env bash
# paper Tab. 2 (R101: perspective only, BEV only, BEV & BEV, perspective & BEV): every row on real nuScenes with 8 GPUs, one after the other.
#   scripts/reproduce_tab2.sh [data.root=/data/nuscenes] [init.path=...]   (overrides go to every row)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
for EXP in tab2_r101_persp_only tab3_r101_bev_only tab2_r101_bev_bev tab3_r101_persp_bev; do
    "$HERE/reproduce_nuscenes.sh" "$EXP" "$@"
done
