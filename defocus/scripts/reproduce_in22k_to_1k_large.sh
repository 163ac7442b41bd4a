#!/usr/bin/env bash
# Paper Tab. 1 / Tab. 9-10: De-focus Mamba-Large, IN-21k pre-training (192 px, 90 ep, batch 4096 on 64 GPUs),
# then IN-1k fine-tuning at 384 px (20 ep, batch 1024) -> 85.4 (paper v1) / 85.9 (README).
set -euo pipefail
DATA22K=${DATA22K:?set DATA22K=/path/to/imagenet22k (ImageFolder train/ with 21841 classes)}
export MAP22KTO1K=${MAP22KTO1K:?set MAP22KTO1K=/path/to/map22kto1k.txt (official repo)}
DATA=${DATA:?set DATA=/path/to/imagenet}
# 1) 21k pre-training: 8 nodes x 8 GPUs x 64 images
torchrun --nnodes="${NNODES:-8}" --nproc_per_node="${GPUS:-8}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  --no-python defocus-train experiment=in22k_large data.root="$DATA22K" data.val_root="$DATA" data.class_map="$MAP22KTO1K" \
  hydra.run.dir=outputs/in22k_large
# 2) slice the 21,841-way heads of the EMA weights to IN-1k (map22kto1k.txt: 1000 indices, one per line):
python - <<'PY'
import glob, os, torch
from defocus.models.convert import slice_22k_heads_to_1k
ck = sorted(glob.glob("outputs/in22k_large/checkpoints/ckpt_*.pt"))[-1]
sd = torch.load(ck, map_location="cpu", weights_only=True)["extra"]["model_ema"]
idx = [int(l) for l in open(os.environ["MAP22KTO1K"]).read().split()]
torch.save({"model": slice_22k_heads_to_1k(sd, idx)}, "outputs/large_1k_init.pth")
PY
# 3) 1k fine-tune at 384 px (rope_scale_factor 4, delta_scale_factor 2 are in the experiment config)
torchrun --nnodes="${NNODES_FT:-4}" --nproc_per_node="${GPUS:-8}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  --no-python defocus-train experiment=in22k_to_1k_large data.root="$DATA" \
  train.init=outputs/large_1k_init.pth hydra.run.dir=outputs/in22k_to_1k_large
