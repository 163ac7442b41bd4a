#!/usr/bin/env bash
# The numbers in the README measured here: simulator + deterministic/noisy oracle planners, no LLM.
# These are checks of our harness, never GITM results. ~3 min on 2 cores.
set -euo pipefail
# ObtainDiamond, exact oracle, 40 episodes (Table 2 protocol)
gitm-eval llm=oracle episodes=40
# Table 3 trend with the noisy oracle: learn its memory, then the five rows (40 episodes each)
gitm-learn
MEM=outputs/gitm-learn/run_/memory.json   # the default learn run folder (no overrides)
for row in ablation_none ablation_decomp ablation_decomp_fb ablation_decomp_fb_info ablation_full; do
  gitm-eval experiment=$row llm=noisy_oracle decomposer=oracle memory.path=$MEM episodes=40
done
# speed: simulator actions/s, 40 ObtainDiamond episodes, the full tech tree
python "$(dirname "$0")/../benchmarks/bench_sim.py" --workers 2
