#!/usr/bin/env bash
# Paper Table 1: ImageNet-1k fine-tuning (ViT-B/16 100 epochs -> 83.9; ViT-L/16 50 epochs -> 85.9), 1024 per step.
# Usage: IMAGENET=/data/imagenet CKPT=addp-vit-base-16.pth GPUS=8 bash scripts/reproduce_finetune.sh [b|l]
set -euo pipefail
IMAGENET=${IMAGENET:?set IMAGENET}; CKPT=${CKPT:?set CKPT to addp-vit-{base,large}-16.pth or an addp-train run}
GPUS=${GPUS:-8}
case "${1:-b}" in
  b) exp=finetune/in1k_vit_b_100ep ;;
  l) exp=finetune/in1k_vit_l_50ep ;;
  *) echo "usage: $0 [b|l]"; exit 2 ;;
esac
torchrun --nproc_per_node="$GPUS" "$(which addp-finetune)" experiment=$exp init.path="$CKPT" data.root="$IMAGENET" \
  train.batch_size=$((1024 / GPUS)) hydra.run.dir="outputs/$exp"
