"""Mean and std over seeds of the tiny experiment's metrics.json files (scripts/tiny_experiment.sh).

Usage: python summarize_tiny.py OUT_DIR  -> one JSON object: {arm: {metric: [mean, std, n]}, ...}
"""

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

KEYS = ("probe_top1", "probe_top1_init", "fewshot_top1", "fewshot_top1_init", "geometry_gap", "geometry_gap_init",
        "loss_true", "loss_shuffled", "effective_rank_F", "effective_rank_F_init", "pred_channel_std", "train_loss")


def main(out: Path) -> None:
    arms: dict = defaultdict(lambda: defaultdict(list))
    for f in sorted(out.glob("*/metrics.json")):
        arm = re.sub(r"_seed\d+$", "", f.parent.name)
        m = json.loads(f.read_text())
        for k in KEYS:
            if k in m:
                arms[arm][k].append(m[k])
        for k in ("probe_top1", "fewshot_top1"):
            if k in m:
                arms[arm][f"{k}_gain"].append(m[k] - m[f"{k}_init"])
    summary = {arm: {k: [round(float(np.mean(v)), 4), round(float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, 4), len(v)]
                     for k, v in sorted(ms.items())} for arm, ms in sorted(arms.items())}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
