#!/usr/bin/env bash
# M3I ViT rows (paper's ViT-B/16 and ViT-L/16 comparisons; their numbers could not be retrieved: expected null).
# Pre-training (SiameseIM recipe + IN-1k labels, 1600 epochs, 8 nodes x 8 GPUs x 64), then MAE-protocol fine-tuning
# and linear probing of the online backbone of the last checkpoint. VARIANT=vit_l for ViT-L (IN-22k labels).
set -euo pipefail
DATA=${DATA:?set DATA=/path/to/imagenet}
VARIANT=${VARIANT:-vit_b}
PRE=pretrain/${VARIANT}_$([ "$VARIANT" = vit_b ] && echo in1k || echo in22k)_m3i
TRAIN=${TRAIN:-$DATA/train}
run() { torchrun --nnodes="${NNODES:-8}" --nproc_per_node="${GPUS:-8}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" --no-python "$@"; }
run m3i-pretrain experiment="$PRE" data.sources.0.root="$TRAIN" hydra.run.dir="outputs/$VARIANT/pretrain"
CKPT=$(ls outputs/"$VARIANT"/pretrain/checkpoints/ckpt_*.pt | sort | tail -n 1)
run m3i-finetune experiment=finetune/${VARIANT}_in1k data.root="$DATA" init.path="$CKPT" hydra.run.dir="outputs/$VARIANT/finetune"
[ "$VARIANT" = vit_b ] && run m3i-linprobe experiment=linprobe/vit_b_in1k data.root="$DATA" init.path="$CKPT" \
  hydra.run.dir="outputs/$VARIANT/linprobe"
