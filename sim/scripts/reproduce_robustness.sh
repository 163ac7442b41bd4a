#!/usr/bin/env bash
# Robustness rows of the README table (fine-tuned ViT-B/16): ImageNet-A 43.8, -R 52.5, -Sketch 38.3, -C 1-mCE 57.1.
# Usage: FINETUNED=sim_base_1600ep_finetune.pth IMAGENET_TRAIN=/data/imagenet/train \
#        ROOT=/data/imagenet-a bash scripts/reproduce_robustness.sh [in_a|in_r|in_sketch|in_c]
set -euo pipefail
ROW=${1:-in_a}
EXTRA=()
if [[ $ROW == in_a || $ROW == in_r ]]; then EXTRA=(eval.imagenet_train="$IMAGENET_TRAIN"); fi
sim-eval experiment=robustness/$ROW init.path="$FINETUNED" data.root="$ROOT" "${EXTRA[@]}" hydra.run.dir=outputs/robustness_$ROW
