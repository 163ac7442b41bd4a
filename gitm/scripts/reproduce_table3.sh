#!/usr/bin/env bash
# Paper Table 3 (ablation of decomposition / feedback / external info / memory; 40 games per row).
# Needs an endpoint (GITM_BASE_URL, GITM_MODEL, OPENAI_API_KEY) and a memory file for the last row
# (MEM=<gitm-learn memory.json>, see reproduce_table2.sh). ENV=sim numbers are not the paper's.
set -euo pipefail
BASE_URL=${GITM_BASE_URL:-https://api.openai.com/v1}
MODEL=${GITM_MODEL:-gpt-3.5-turbo}
ENV=${ENV:-minedojo}
WORKERS=${WORKERS:-8}
MEM=${MEM:?set MEM to the memory.json written by gitm-learn}
for row in ablation_none ablation_decomp ablation_decomp_fb ablation_decomp_fb_info ablation_full; do
  gitm-eval experiment=$row llm=openai llm.base_url=$BASE_URL llm.model=$MODEL env=$ENV memory.path=$MEM workers=$WORKERS
done
# Table 5 rows f and g (rows a-e need VPT / DEPS controllers and are not supported)
for row in supp_f supp_g; do
  gitm-eval experiment=$row llm=openai llm.base_url=$BASE_URL llm.model=$MODEL env=$ENV memory.path=$MEM workers=$WORKERS
done
