#!/usr/bin/env bash
# Paper Tab. 1: De-focus Mamba-Small, ImageNet-1k, 224 px (paper 80.3). No official config exists: Base recipe, Small dims.
# EXPERIMENT=in1k_small_paper_droppath: the paper text's drop path 0.1 -> 0.7 (default: the official Base config's 0.75).
set -euo pipefail
DATA=${DATA:?set DATA=/path/to/imagenet}
EXPERIMENT=${EXPERIMENT:-in1k_small}
torchrun --nnodes="${NNODES:-4}" --nproc_per_node="${GPUS:-8}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  --no-python defocus-train experiment="$EXPERIMENT" data.root="$DATA" hydra.run.dir="${OUT:-outputs/$EXPERIMENT}"
