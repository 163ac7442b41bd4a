#!/usr/bin/env bash
# Paper Fig. 6 analogue (learning efficiency): ObtainDiamond success with the memory as it stood after
# S environment steps of learning. gitm-learn writes snapshots/memory_step{S}.json; each is evaluated.
# Needs an endpoint (GITM_BASE_URL, GITM_MODEL, OPENAI_API_KEY). Plot: python scripts/plot_fig6.py outputs/gitm-eval
set -euo pipefail
BASE_URL=${GITM_BASE_URL:-https://api.openai.com/v1}
MODEL=${GITM_MODEL:-gpt-3.5-turbo}
ENV=${ENV:-minedojo}
WORKERS=${WORKERS:-8}
gitm-learn llm=openai llm.base_url=$BASE_URL llm.model=$MODEL env=$ENV decomposer=llm goals='[diamond]' \
  workers=$WORKERS 'snapshot_steps=[1000,5000,20000,50000,120000]'
RUN=$(ls -d outputs/gitm-learn/run_*/ | tail -1)
gitm-eval experiment=ablation_decomp_fb_info llm=openai llm.base_url=$BASE_URL llm.model=$MODEL env=$ENV workers=$WORKERS
for snap in "$RUN"snapshots/memory_step*.json; do
  gitm-eval experiment=ablation_full llm=openai llm.base_url=$BASE_URL llm.model=$MODEL env=$ENV \
    memory.path=$snap workers=$WORKERS
done
