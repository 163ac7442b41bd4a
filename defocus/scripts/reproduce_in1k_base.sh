#!/usr/bin/env bash
# Paper Tab. 1 / Tab. 7: De-focus Mamba-Base, ImageNet-1k from scratch, 224 px (paper 82.0 top-1).
# 32 GPUs x 32 images = 1024 (paper). Example: 4 nodes x 8 GPUs with torchrun; set MASTER_ADDR, NODE_RANK.
# DATA: ImageFolder (train/<class>/*.JPEG, val/<class>/*.JPEG) or the official meta/{train,val}.txt lists.
# EXPERIMENT=in1k_base_paper_droppath runs the paper text's drop path 0.1 -> 0.7 instead of the official 0.1 -> 0.75.
# Preempted? Run the same command again: train.resume=auto continues exactly from the newest step checkpoint.
set -euo pipefail
DATA=${DATA:?set DATA=/path/to/imagenet}
EXPERIMENT=${EXPERIMENT:-in1k_base}
torchrun --nnodes="${NNODES:-4}" --nproc_per_node="${GPUS:-8}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  --no-python defocus-train experiment="$EXPERIMENT" data.root="$DATA" hydra.run.dir="${OUT:-outputs/$EXPERIMENT}"
# Evaluate (reports the raw and the EMA model's top-1/top-5):
#   defocus-eval experiment=in1k_base data.root=$DATA eval.checkpoint=outputs/in1k_base/checkpoints/ckpt_<step>.pt
# Official released checkpoint:
#   defocus-eval experiment=in1k_base data.root=$DATA eval.official=true eval.checkpoint=defocus_mamba_base_cls.pth
# Resolution transfer 224 -> 336 (test only, paper 81.6): scripts/reproduce_in1k_base_res336.sh
