#!/usr/bin/env bash
# ImageNet-1k rows of the README table (ViT-B/16, 1600 ep): fine-tuning (84.1), linear probing (78.0), 1 % (65.1),
# and the evaluation of the released fine-tuned model (84.118 / 96.766).
# Usage: DATA=/data/imagenet PRETRAIN=sim_base_1600ep_pretrain.pth FINETUNED=sim_base_1600ep_finetune.pth \
#        SUBSET=1percent.txt bash scripts/reproduce_finetune.sh [finetune|linprobe|fewshot|fewshot_l|eval]
set -euo pipefail
case "${1:-finetune}" in
  finetune)  torchrun --nproc_per_node 8 "$(which sim-finetune)" experiment=finetune/vit_b init.path="$PRETRAIN" \
               data.root="$DATA" hydra.run.dir=outputs/finetune_vit_b ;;
  linprobe)  torchrun --nnodes 4 --nproc_per_node 8 --node_rank "${NODE_RANK:-0}" --master_addr "${MASTER_ADDR:-127.0.0.1}" \
               "$(which sim-linprobe)" experiment=linprobe/vit_b init.path="$PRETRAIN" data.root="$DATA" \
               hydra.run.dir=outputs/linprobe_vit_b ;;
  fewshot)   sim-fewshot experiment=fewshot/vit_b_1pct init.path="$PRETRAIN" data.root="$DATA" \
               fewshot.subset_file="$SUBSET" hydra.run.dir=outputs/fewshot_vit_b ;;
  fewshot_l) sim-fewshot experiment=fewshot/vit_l_1pct init.path="$PRETRAIN" data.root="$DATA" \
               fewshot.subset_file="$SUBSET" hydra.run.dir=outputs/fewshot_vit_l ;;
  eval)      torchrun --nproc_per_node 8 "$(which sim-eval)" experiment=eval/in1k_vit_b init.path="$FINETUNED" \
               data.root="$DATA" hydra.run.dir=outputs/eval_in1k_vit_b ;;
  *) echo "unknown row $1; use finetune, linprobe, fewshot, fewshot_l or eval" >&2; exit 2 ;;
esac
