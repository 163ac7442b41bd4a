#!/usr/bin/env bash
# InternImage-H IN-1k fine-tuning from the released M3I joint -> IN-22k weights (InternImage README: 89.6 top-1 at 640).
# 1) weights: internimage_h_jointto22k_384.pth from the HF repo OpenGVLab/InternImage, converted (weights-only load):
#      m3i-convert src=internimage_h_jointto22k_384.pth variant=h out=weights/internimage_h_jointto22k_384_m3i.pth
# 2) 8 GPUs x 64 = 512 (official BASE_LR 2e-5 # 512), fp32, activation checkpointing, EMA 0.9999.
# RES=384 for the 384-px row; EXPERIMENT=finetune/internimage_g_22kto1k_512 for G (90.1) with its weights.
set -euo pipefail
DATA=${DATA:?set DATA=/path/to/imagenet (train/ and val/ ImageFolders)}
WEIGHTS=${WEIGHTS:-weights/internimage_h_jointto22k_384_m3i.pth}
EXPERIMENT=${EXPERIMENT:-finetune/internimage_h_22kto1k_${RES:-640}}
torchrun --nnodes="${NNODES:-1}" --nproc_per_node="${GPUS:-8}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  --no-python m3i-finetune experiment="$EXPERIMENT" data.root="$DATA" init.path="$WEIGHTS" \
  hydra.run.dir="${OUT:-outputs/${EXPERIMENT//\//_}}"
