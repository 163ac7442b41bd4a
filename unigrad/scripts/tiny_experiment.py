"""Tiny-data experiment (sklearn digits, CPU): UniGrad vs lambda = 0 (positive gradient only: collapse) vs the
randomly initialised encoder, 3 seeds each; kNN / logistic-probe top-1 and effective rank, mean +- std.

    python scripts/tiny_experiment.py --out tiny_results        # 9 default-sized runs (each ~1 CPU-minute)
    python scripts/tiny_experiment.py --out tiny_results/long_50ep --arms unigrad lambda0 -- train.epochs=50

Writes ``<out>/<arm>/seed<k>/`` (the runs) and ``<out>/results.json`` and prints a markdown table. These are
tiny-data numbers that show the mechanism (non-collapse, better features than random), not the paper's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

#: arm -> (folder, overrides of the default unigrad-train run)
ARMS = {
    "UniGrad (lambda = 6.25 at C = 128)": ("unigrad", []),
    "lambda = 0 (positive term only)": ("lambda0", ["loss.lambd=0"]),
    "random init (no training)": ("random_init", ["train.epochs=0"]),
}
METRICS = ["knn_top1", "probe_top1", "effective_rank", "embedding_std"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("tiny_results"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", choices=[folder for folder, _ in ARMS.values()],
                   default=[folder for folder, _ in ARMS.values()], help="run only these arms (folder names)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = p.parse_args()
    train = str(Path(sys.executable).parent / "unigrad-train")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results: dict[str, list[dict]] = {}
    for arm, (folder, extra) in ARMS.items():
        if folder not in args.arms:
            continue
        for seed in args.seeds:
            run_dir = args.out / folder / f"seed{seed}"
            if not (run_dir / "metrics.json").is_file():
                subprocess.run([train, f"seed={seed}", "device=cpu", *extra, *args.overrides, f"hydra.run.dir={run_dir}"],
                               env=env, check=True, stdout=subprocess.DEVNULL)
            results.setdefault(arm, []).append(json.loads((run_dir / "metrics.json").read_text()))
    summary = {arm: {m: (statistics.mean(r[m] for r in runs),
                         statistics.stdev(r[m] for r in runs) if len(runs) > 1 else None) for m in METRICS}
               for arm, runs in results.items()}
    (args.out / "results.json").write_text(json.dumps({"runs": results, "mean_std": summary}, indent=2))
    print("| arm | kNN top-1 (%) | probe top-1 (%) | effective rank | embedding std x sqrt(C) |")
    print("| --- | --- | --- | --- | --- |")
    for arm, s in summary.items():
        print(f"| {arm} | " + " | ".join(f"{s[m][0]:.2f}" + ("" if s[m][1] is None else f" ± {s[m][1]:.2f}")
                                          for m in METRICS) + " |")


if __name__ == "__main__":
    main()
