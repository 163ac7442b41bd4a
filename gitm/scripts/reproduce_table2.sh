#!/usr/bin/env bash
# Paper Table 2 (GITM row, ObtainDiamond: CT 100 / WP 100 / SP 100 / IP 95.0 / diamond 67.5).
# Needs an OpenAI-compatible endpoint: GITM_BASE_URL (default OpenAI), GITM_MODEL, OPENAI_API_KEY.
# ENV=minedojo for the paper's environment (JDK 8, xvfb, internet once); ENV=sim gives simulator numbers,
# which are NOT comparable to the paper's. Results: outputs/gitm-eval/run_*/results.json (model id, date, seeds).
set -euo pipefail
BASE_URL=${GITM_BASE_URL:-https://api.openai.com/v1}
MODEL=${GITM_MODEL:-gpt-3.5-turbo}
ENV=${ENV:-minedojo}
WORKERS=${WORKERS:-8}
# 1. learn the memory (curriculum over the ObtainDiamond sub-goals)
gitm-learn llm=openai llm.base_url=$BASE_URL llm.model=$MODEL env=$ENV decomposer=llm goals='[diamond]' workers=$WORKERS
MEM=$(ls -d outputs/gitm-learn/run_*/ | tail -1)memory.json
# 2. 40 episodes, 12,000 steps, 30 queries per sub-goal
gitm-eval experiment=obtain_diamond llm=openai llm.base_url=$BASE_URL llm.model=$MODEL env=$ENV \
  memory.path=$MEM workers=$WORKERS
