#!/usr/bin/env bash
# Paper Table 4 protocol (tech tree; coverage and per-item success; incremental 20/50/100/200 episodes).
# Needs an endpoint (GITM_BASE_URL, GITM_MODEL, OPENAI_API_KEY). Memory: learn it over the whole tree first.
# Our item list is a reconstruction (236 items; the paper's list of 262 is not in our sources): see README.
set -euo pipefail
BASE_URL=${GITM_BASE_URL:-https://api.openai.com/v1}
MODEL=${GITM_MODEL:-gpt-3.5-turbo}
ENV=${ENV:-minedojo}
WORKERS=${WORKERS:-32}
gitm-learn experiment=learn_memory llm=openai llm.base_url=$BASE_URL llm.model=$MODEL env=$ENV workers=$WORKERS
MEM=$(ls -d outputs/gitm-learn/run_*/ | tail -1)memory.json
gitm-eval experiment=tech_tree llm=openai llm.base_url=$BASE_URL llm.model=$MODEL env=$ENV memory.path=$MEM workers=$WORKERS
