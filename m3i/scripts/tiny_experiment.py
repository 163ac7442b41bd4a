"""Tiny-data pilot of spec m3i.md section 8: each objective alone vs combined, 3 seeds, frozen-feature probes.

Runs ``m3i-pretrain`` (the default tiny config on the embedded captioned shapes) for five objectives and each
seed, skipping runs whose ``metrics.json`` exists (the script can be re-run to finish an interrupted pilot),
then writes ``summary.json`` and prints a markdown table of mean +- std over seeds::

    python scripts/tiny_experiment.py --out outputs/tiny_experiment --seeds 0 1 2 --jobs 1

The variants (``experiment=tiny/<variant>``; the same mixed two-image input for all, only the targets differ):
    sup        category CE only
    clip       caption InfoNCE only
    dense      intra + inter dense targets
    sup_dense  two-term M3I (category + dense)
    m3i        full M3I (category + caption + dense)
``init``: the random initialisation of the full model (``probe.at_init=true`` of the m3i runs).

TINY DATA: 2000 32-px images, 10 epochs; the numbers show whether the mechanism works, not the paper's results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

VARIANTS = {  # m3i-pretrain overrides of each variant (configs/experiment/tiny/)
    "sup": ["experiment=tiny/sup"],
    "clip": ["experiment=tiny/clip"],
    "dense": ["experiment=tiny/dense"],
    "sup_dense": ["experiment=tiny/sup_dense"],
    "m3i": ["experiment=tiny/m3i", "probe.at_init=true"],
}
METRICS = ["probe_class_top1", "probe_attr_top1", "probe_dense_miou", "probe_seg_miou", "probe_mean", "probe_mean4",
           "retrieval_r1",
           "probe_attr_size_top1", "probe_attr_quadrant_top1", "probe_attr_background_top1"]


def run_one(out: Path, variant: str, seed: int, extra: list[str]) -> tuple[str, int, float]:
    run_dir = out / f"{variant}_seed{seed}"
    if (run_dir / "metrics.json").is_file():
        return variant, seed, 0.0
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["m3i-pretrain", f"seed={seed}", *VARIANTS[variant], *extra, f"hydra.run.dir={run_dir}"]
    start = time.time()
    with open(run_dir / "stdout.log", "w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True, env=dict(os.environ))
    return variant, seed, time.time() - start


def summarise(out: Path, seeds: list[int]) -> dict:
    table: dict = {}
    for variant in [*VARIANTS, "init"]:
        src = "m3i" if variant == "init" else variant
        rows = []
        for s in seeds:
            path = out / f"{src}_seed{s}" / "metrics.json"
            if path.is_file():
                m = json.loads(path.read_text())
                row = {k: m.get(k + "_init" if variant == "init" else k) for k in METRICS}
                four = [row[k] for k in ("probe_class_top1", "probe_attr_top1", "probe_dense_miou", "probe_seg_miou")]
                row["probe_mean4"] = float(np.mean(four)) if None not in four else None
                rows.append(row)
        if not rows:
            continue
        table[variant] = {"seeds": len(rows)}
        for k in METRICS:
            vals = [r[k] for r in rows if r[k] is not None]
            if vals:
                std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
                table[variant][k] = {"mean": float(np.mean(vals)), "std": std}
    return table


def markdown(table: dict) -> str:
    cols = [("class top-1", "probe_class_top1"), ("attribute top-1", "probe_attr_top1"),
            ("dense fg/bg mIoU", "probe_dense_miou"), ("6-class seg mIoU", "probe_seg_miou"),
            ("mean class/attr/dense", "probe_mean"), ("mean of the four", "probe_mean4"), ("caption R@1", "retrieval_r1")]
    lines = ["| objective | " + " | ".join(c for c, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for v, row in table.items():
        cells = [f"{row[k]['mean']:.1f} ± {row[k]['std']:.1f}" if k in row else "–" for _, k in cols]
        lines.append(f"| {v} ({row['seeds']} seeds) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("outputs/tiny_experiment"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(v, s) for s in args.seeds for v in args.variants]
    with ThreadPoolExecutor(args.jobs) as pool:
        for variant, seed, secs in pool.map(lambda j: run_one(args.out, j[0], j[1], args.overrides), jobs):
            print(f"{variant} seed {seed}: {'done' if secs == 0 else f'{secs:.0f} s'}", flush=True)
    table = summarise(args.out, args.seeds)
    (args.out / "summary.json").write_text(json.dumps(table, indent=2) + "\n")
    print(markdown(table))


if __name__ == "__main__":
    sys.exit(main())
