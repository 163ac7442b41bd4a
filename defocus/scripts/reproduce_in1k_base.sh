#!/usr/bin/env bash
# Paper Tab. 1 / Tab. 7: De-focus Mamba-Base, ImageNet-1k from scratch, 224 px (paper 82.0 top-1).
# 32 GPUs x 32 images = 1024 (paper). Example: 4 nodes x 8 GPUs with torchrun; set MASTER_ADDR, NODE_RANK.
# DATA: ImageFolder (train/<class>/*.JPEG, val/<class>/*.JPEG) or the official meta/{train,val}.txt lists.
set -euo pipefail
DATA=${DATA:?set DATA=/path/to/imagenet}
torchrun --nnodes="${NNODES:-4}" --nproc_per_node="${GPUS:-8}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  --no-python defocus-train experiment=in1k_base data.root="$DATA" hydra.run.dir="${OUT:-outputs/in1k_base}"
# Evaluate (raw or EMA weights):
#   defocus-eval experiment=in1k_base data.root=$DATA eval.checkpoint=outputs/in1k_base/checkpoints/ckpt_<step>.pt [eval.use_ema=true]
# Official released checkpoint:
#   defocus-eval experiment=in1k_base data.root=$DATA eval.official=true eval.checkpoint=defocus_mamba_base_cls.pth
