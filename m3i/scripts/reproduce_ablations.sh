#!/usr/bin/env bash
# The paper's ablation axes on ViT-B / IN-1k (numbers not retrieved: expected null): intra-view only (MAE-like input),
# inter-view only, mixed dense targets, + category (= full M3I on IN-1k), + text (an image-text source mixed in), and
# the multi-stage baseline (dense 800 ep -> category 800 ep) against the single-stage run at the same budget.
# Each pre-training is followed by the MAE fine-tuning protocol (scripts/reproduce_vit.sh shows the lines).
set -euo pipefail
DATA=${DATA:?set DATA=/path/to/imagenet}
CC12M=${CC12M:-}
run() { torchrun --nnodes="${NNODES:-8}" --nproc_per_node="${GPUS:-8}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" --no-python "$@"; }
for row in intra_only inter_only mixed_dense plus_category; do
  run m3i-pretrain experiment=pretrain/ablation_$row data.sources.0.root="$DATA/train" hydra.run.dir="outputs/ablation/$row"
done
if [ -n "$CC12M" ]; then
  run m3i-pretrain experiment=pretrain/ablation_plus_text data.sources.0.root="$DATA/train" "data.sources.1.shards=['$CC12M']" \
    hydra.run.dir=outputs/ablation/plus_text
fi
run m3i-pretrain experiment=pretrain/ablation_multistage_stage1 data.sources.0.root="$DATA/train" hydra.run.dir=outputs/ablation/stage1
S1=$(ls outputs/ablation/stage1/checkpoints/ckpt_*.pt | sort | tail -n 1)
run m3i-pretrain experiment=pretrain/ablation_multistage_stage2 data.sources.0.root="$DATA/train" init.path="$S1" \
  hydra.run.dir=outputs/ablation/stage2
