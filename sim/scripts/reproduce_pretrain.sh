#!/usr/bin/env bash
# Pre-training rows (spec sim.md 3.4): ViT-B/16 1600 ep (released), 400 ep, ViT-L/16 1600 ep.
# Global batch 4096 = 4 nodes x 8 GPUs x 128. Run on every node with its NODE_RANK and the first node's address.
# Usage: DATA=/data/imagenet MASTER_ADDR=node0 NODE_RANK=0 bash scripts/reproduce_pretrain.sh [vit_b_1600ep|vit_b_400ep|vit_l_1600ep]
set -euo pipefail
ROW=${1:-vit_b_1600ep}
torchrun --nnodes 4 --nproc_per_node 8 --node_rank "${NODE_RANK:-0}" --master_addr "${MASTER_ADDR:-127.0.0.1}" \
  --master_port 29500 "$(which sim-pretrain)" experiment=pretrain/$ROW data.root="$DATA" \
  hydra.run.dir=outputs/pretrain_$ROW
