"""Tiny-data experiment (CPU, ~10 min): every metric's released (searched) surrogate vs cross-entropy
and the identity-curve mIoU surrogate, on the embedded shapes data, 3 seeds, all six metrics.

Usage: python scripts/tiny_experiment.py [--iters 200] [--seeds 0 1 2] [--out outputs/tiny_experiment]
Writes <out>/results.json (every run) and prints the README table (mean +- std over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from auto_seg_loss.cli import compose, run_train
from auto_seg_loss.metrics import METRICS

RUNS = {
    "cross-entropy": ["loss.name=ce"],
    "ASL mIoU, identity curves": ["loss.metric=mIoU", "loss.control_points=identity"],
    **{f"ASL {m}, released curves": [f"loss.metric={m}", f"loss.drop_bg={'true' if m == 'BIoU' else 'false'}"]
       for m in METRICS},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="outputs/tiny_experiment")
    args = ap.parse_args()
    out = Path(args.out)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.is_file() else {}
    for name, over in RUNS.items():
        for seed in args.seeds:
            key = f"{name}|{seed}"
            if key in results:  # resumable: finished runs are kept
                continue
            run_dir = out / name.replace(" ", "_").replace(",", "") / f"seed{seed}"
            cfg = compose("train", over + [f"seed={seed}", f"train.iters={args.iters}", f"output_dir={run_dir}",
                                           "train.log_every=100", "train.resume=none"])
            results[key] = run_train(cfg)
            out.mkdir(parents=True, exist_ok=True)
            res_path.write_text(json.dumps(results, indent=1))
    print(f"| training loss (shapes 64x64, tiny DeepLabv3+, {args.iters} it, {len(args.seeds)} seeds) | "
          + " | ".join(METRICS) + " |")
    print("|---" * (len(METRICS) + 1) + "|")
    for name in RUNS:
        rows = [results[f"{name}|{s}"] for s in args.seeds]
        cells = []
        for m in METRICS:
            v = [r[m] for r in rows]
            cells.append(f"{statistics.mean(v):.1f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
