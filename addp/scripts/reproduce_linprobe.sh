#!/usr/bin/env bash
# Linear probing with MAGE's protocol (90 epochs, LARS, 4096 per step). UNVERIFIED for ADDP: the official code has
# no linear probe and whether the paper reports one is unknown; no paper number to compare with.
# Usage: IMAGENET=/data/imagenet CKPT=addp-vit-base-16.pth GPUS=8 bash scripts/reproduce_linprobe.sh [b|l]
set -euo pipefail
IMAGENET=${IMAGENET:?set IMAGENET}; CKPT=${CKPT:?set CKPT}; GPUS=${GPUS:-8}
torchrun --nproc_per_node="$GPUS" "$(which addp-linprobe)" experiment=linprobe/vit_${1:-b} init.path="$CKPT" \
  data.root="$IMAGENET" train.batch_size=$((4096 / GPUS)) hydra.run.dir="outputs/linprobe_${1:-b}"
