#!/usr/bin/env bash
# Paper Table 1: ADDP pre-training on ImageNet-1k (ViT-B/16 1600 epochs, ViT-L/16 800 epochs), 4096 images per step.
# Needs the frozen MAGE tokenizer and token predictor (MAGE README, Google Drive links):
#   vqgan_jax_strongaug.ckpt, mage-vitb-1600.pth, mage-vitl-1600.pth
# Usage: IMAGENET=/data/imagenet WEIGHTS=/data/weights GPUS=8 bash scripts/reproduce_pretrain.sh [b|l]
set -euo pipefail
IMAGENET=${IMAGENET:?set IMAGENET to the ImageFolder root (train/<class>/*.JPEG)}
WEIGHTS=${WEIGHTS:?set WEIGHTS to the folder with the MAGE files}
GPUS=${GPUS:-8}
case "${1:-b}" in
  b) exp=pretrain/addp_vit_b_1600ep; teacher=mage-vitb-1600.pth ;;
  l) exp=pretrain/addp_vit_l_800ep; teacher=mage-vitl-1600.pth ;;
  *) echo "usage: $0 [b|l]"; exit 2 ;;
esac
# per-process batch = 4096 / GPUS; a relaunch with the same hydra.run.dir resumes from the last checkpoint
torchrun --nproc_per_node="$GPUS" "$(which addp-train)" experiment=$exp data.root="$IMAGENET" \
  train.batch_size=$((4096 / GPUS)) tokenizer.init.path="$WEIGHTS/vqgan_jax_strongaug.ckpt" \
  teacher.init.path="$WEIGHTS/$teacher" hydra.run.dir="outputs/$exp"
