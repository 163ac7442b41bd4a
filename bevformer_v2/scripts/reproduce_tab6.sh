#!/usr/bin/env bash
# paper Tab. 6 (temporal ablation, R50 24 ep; settings partly our reading, see README): every row on real nuScenes with 8 GPUs, one after the other.
#   scripts/reproduce_tab6.sh [data.root=/data/nuscenes] [init.path=...]   (overrides go to every row)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
for EXP in tab6_r50_temporal_pers tab6_r50_temporal_ida tab6_r50_temporal_long tab6_r50_temporal_bidir tab6_r50_temporal_bidir_no_persp; do
    "$HERE/reproduce_nuscenes.sh" "$EXP" "$@"
done
