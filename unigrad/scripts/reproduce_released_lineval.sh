#!/usr/bin/env bash
# Linear evaluation of the three released checkpoints (README: "~70" top-1 for unigrad_pretrained.pth).
# Download them first (no network here):
#   https://github.com/fundamentalvision/UniGrad/releases/download/v1.0/{unigrad_pretrained,byol_grad_pretrained,barlow_twins_grad_mm_pretrained}.pth
#   DATA=/data/imagenet WEIGHTS=/weights OUT=/runs/unigrad bash scripts/reproduce_released_lineval.sh
set -euo pipefail
DATA=${DATA:?set DATA to the ImageNet folder holding train/ and val/}
WEIGHTS=${WEIGHTS:?set WEIGHTS to the folder with the downloaded .pth files}
OUT=${OUT:-runs}
NGPU=${NGPU:-8}
for name in unigrad_pretrained byol_grad_pretrained barlow_twins_grad_mm_pretrained; do
  torchrun --nproc_per_node="$NGPU" --master_port=28501 "$(command -v unigrad-lineval)" \
    experiment=lineval_r50_simsiam_lars data.root="$DATA" init.path="$WEIGHTS/$name.pth" \
    hydra.run.dir="$OUT/released_$name/lineval"
done
