#!/usr/bin/env bash
# paper Tab. 4 (R50, 24 / 48 / 72 epochs; the 48-epoch rows are Tab. 3's R50 rows): every row on real nuScenes with 8 GPUs, one after the other.
#   scripts/reproduce_tab4.sh [data.root=/data/nuscenes] [init.path=...]   (overrides go to every row)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
for EXP in tab4_r50_bev_only_24ep tab3_r50_bev_only tab4_r50_bev_only_72ep tab4_r50_persp_bev_24ep tab3_r50_persp_bev tab4_r50_persp_bev_72ep; do
    "$HERE/reproduce_nuscenes.sh" "$EXP" "$@"
done
