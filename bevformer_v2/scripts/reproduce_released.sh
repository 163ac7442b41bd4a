#!/usr/bin/env bash
# released R50 configs (official README numbers): every row on real nuScenes with 8 GPUs, one after the other.
#   scripts/reproduce_released.sh [data.root=/data/nuscenes] [init.path=...]   (overrides go to every row)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
for EXP in r50_t1_base_24ep r50_t1_base_48ep r50_t1_24ep r50_t1_48ep r50_t2_24ep r50_t2_48ep r50_t8_24ep; do
    "$HERE/reproduce_nuscenes.sh" "$EXP" "$@"
done
