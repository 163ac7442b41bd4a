"""Tiny CPU experiment (spec §8.4 analogue): PAP-trained RetinaNet vs Focal + GIoU on shapes, 3 seeds.

Runs ``pap-train`` (default tiny config: shapes-128, 96 train / 48 val images, 144 iterations) for each
loss and seed, then prints mean +- std of the COCO metrics as one JSON line per loss and a Markdown
table. TINY DATA: these numbers only show that the pipeline works and compare losses at this scale.

    python scripts/tiny_experiment.py [hydra overrides ...] [--seeds 0 1 2] [--losses pap_retinanet focal_giou] [--out outputs/tiny]

(overrides go before the options: after ``--losses`` every word would be read as a loss name).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

METRICS = ("AP", "AP50", "AP75", "train_time_s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--losses", nargs="+", default=["pap_retinanet", "focal_giou"])
    ap.add_argument("--out", default="outputs/tiny_experiment")
    ap.add_argument("--tag", default="", help="suffix of the run folders (e.g. for searched parameters)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = ap.parse_args()
    bad = [name for name in args.losses if "=" in name]
    if bad:
        raise SystemExit(f"{bad} look like Hydra overrides; put overrides before --losses")
    exe = Path(sys.executable).with_name("pap-train")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    rows = {}
    for loss in args.losses:
        runs = []
        for seed in args.seeds:
            out = Path(args.out) / f"{loss}{args.tag}_seed{seed}"
            if not (out / "metrics.json").is_file():
                subprocess.run([str(exe), f"loss={loss}", f"seed={seed}", f"hydra.run.dir={out}", *args.overrides],
                               check=True, env=env, stdout=subprocess.DEVNULL)
            runs.append(json.loads((out / "metrics.json").read_text()))
        row = {"loss": loss + args.tag, "seeds": args.seeds, "overrides": args.overrides}
        for k in METRICS:
            vals = [r[k] for r in runs]
            row[k] = {"mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                      "runs": vals}
        rows[loss + args.tag] = row
        print(json.dumps(row), flush=True)
    print("\n| loss | AP | AP50 | AP75 | CPU s/run |\n|---|---|---|---|---|")
    for loss, row in rows.items():
        cells = [f"{row[k]['mean']:.1f} ± {row[k]['std']:.1f}" for k in METRICS[:3]]
        print(f"| {loss} | " + " | ".join(cells) + f" | {row['train_time_s']['mean']:.0f} |")


if __name__ == "__main__":
    main()
