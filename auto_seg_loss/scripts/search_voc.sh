#!/usr/bin/env bash
# Official-size search (12 rounds x 32 proxy trainings of DeepLabv3+ R50-D8, 1000 it at 128x128) for one
# metric; resumable: rerun the same line after a crash (same hydra.run.dir).
# Usage: VOC_ROOT=... R50_V1C=/weights/resnet50_v1c.pth METRIC=miou bash scripts/search_voc.sh
# Reward split: held-out 1,500 train-aug images (default) or proxy.reward_split=val (official).
set -euo pipefail
: "${VOC_ROOT:?set VOC_ROOT}"; : "${R50_V1C:?set R50_V1C}"
METRIC=${METRIC:-miou}
asl-search experiment="search_voc_${METRIC}" data.root="$VOC_ROOT" init.path="$R50_V1C" \
  hydra.run.dir="outputs/search/${METRIC}"
cat "outputs/search/${METRIC}/searched_control_points.yaml"
