#!/usr/bin/env bash
# M3I pre-training of InternImage-H (1.08 B) on LAION-400M + YFCC-15M + CC12M (427 M pairs), 30 epochs at 224 px,
# DeepSpeed ZeRO-1 (InternImage paper app. A, M3I README). No released raw M3I checkpoint exists to compare with:
# the released H weights went on through IN-22k fine-tuning (scripts/reproduce_internimage_h_finetune.sh).
# Data: WebDataset tar shards (img2dataset output: <key>.jpg + <key>.txt). Caption tokenizer: pip install 'm3i[clip]'.
# Few GPUs: DEEPSPEED_CFG=zero3_offload. Preempted? Run the same command again (DeepSpeed's latest tag is loaded).
set -euo pipefail
LAION=${LAION:?set LAION='/data/laion400m/*.tar' (a glob pattern)}
YFCC=${YFCC:?set YFCC=/data/yfcc15m/*.tar}
CC12M=${CC12M:?set CC12M=/data/cc12m/*.tar}
DEEPSPEED_CFG=${DEEPSPEED_CFG:-zero1}
deepspeed --num_nodes="${NNODES:-8}" --num_gpus="${GPUS:-8}" ${HOSTFILE:+--hostfile "$HOSTFILE"} \
  "$(command -v m3i-pretrain)" experiment=pretrain/internimage_h_joint427m_m3i deepspeed="$DEEPSPEED_CFG" \
  "data.sources.0.shards=['$LAION']" "data.sources.1.shards=['$YFCC']" "data.sources.2.shards=['$CC12M']" \
  data.sources.0.index_dir="${INDEX_DIR:-/data/shard_index}" data.sources.1.index_dir="${INDEX_DIR:-/data/shard_index}" \
  data.sources.2.index_dir="${INDEX_DIR:-/data/shard_index}" hydra.run.dir="${OUT:-outputs/internimage_h_joint427m_m3i}"
