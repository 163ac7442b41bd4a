#!/usr/bin/env bash
# The official README's main table (ImageNet-1k linear top-1, ResNet-50, 100 epochs): pre-train every row on
# 8 GPUs (global batch 1024), then linear-evaluate it (90 epochs, LARS, global batch 4096).
#   DATA=/data/imagenet OUT=/runs/unigrad bash scripts/reproduce_table_readme.sh [row ...]
# Without arguments every row runs, one after the other (38 h per 100-epoch run on 8 V100s per the README).
# A killed run resumes exactly: run the same command again (train.resume=auto).
set -euo pipefail
DATA=${DATA:?set DATA to the ImageNet folder holding train/ and val/}
OUT=${OUT:-runs}
NGPU=${NGPU:-8}
ROWS=("$@")
if [ ${#ROWS[@]} -eq 0 ]; then
  ROWS=(unigrad_r50_100ep
        moco_grad_mm_r50_100ep simclr_grad_mm_r50_100ep simsiam_grad_mm_r50_100ep byol_grad_mm_r50_100ep
        vicreg_grad_mm_r50_100ep barlow_twins_grad_mm_r50_100ep
        moco_grad_nomm_r50_100ep simclr_grad_nomm_r50_100ep simsiam_grad_nomm_r50_100ep byol_grad_nomm_r50_100ep
        vicreg_grad_nomm_r50_100ep barlow_twins_grad_nomm_r50_100ep)
fi
for row in "${ROWS[@]}"; do
  torchrun --nproc_per_node="$NGPU" --master_port=28500 "$(command -v unigrad-train)" \
    experiment="$row" data.root="$DATA" hydra.run.dir="$OUT/$row/pretrain"
  ckpt=$(ls "$OUT/$row/pretrain/checkpoints/"ckpt_*.pt | sort | tail -n 1)
  torchrun --nproc_per_node="$NGPU" --master_port=28501 "$(command -v unigrad-lineval)" \
    experiment=lineval_r50_simsiam_lars data.root="$DATA" init.path="$ckpt" hydra.run.dir="$OUT/$row/lineval"
done
