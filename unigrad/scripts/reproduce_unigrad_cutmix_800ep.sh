#!/usr/bin/env bash
# README row "UniGrad + cutmix, 800 ep: 74.9". EXPERIMENTAL: the CutMix recipe is not released; ours is a
# design from the paper's description (see the README). 8 GPUs, then the linear evaluation.
#   DATA=/data/imagenet OUT=/runs/unigrad bash scripts/reproduce_unigrad_cutmix_800ep.sh
set -euo pipefail
DATA=${DATA:?set DATA to the ImageNet folder holding train/ and val/}
OUT=${OUT:-runs}
NGPU=${NGPU:-8}
row=unigrad_cutmix_r50_800ep
torchrun --nproc_per_node="$NGPU" --master_port=28500 "$(command -v unigrad-train)" \
  experiment=$row data.root="$DATA" hydra.run.dir="$OUT/$row/pretrain"
ckpt=$(ls "$OUT/$row/pretrain/checkpoints/"ckpt_*.pt | sort | tail -n 1)
torchrun --nproc_per_node="$NGPU" --master_port=28501 "$(command -v unigrad-lineval)" \
  experiment=lineval_r50_simsiam_lars data.root="$DATA" init.path="$ckpt" hydra.run.dir="$OUT/$row/lineval"
