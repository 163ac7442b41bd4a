"""Tiny-data experiment (README): De-focus recipe vs plain causal Mamba on digits-on-canvas, 3 seeds.

All arms: same model size class (defocus_toy), same data, epochs, batch, LR schedule (equal budget).
* defocus: bandpass RoPE + head-wise norm, scheduled drop path 0.1 -> 0.5, per-token aux loss (1/2).
* plain:   plain Mamba mixer (no RoPE, no head-wise norm), constant drop path 0.1, CLS loss only.
* plain+opt: the plain mixer with the De-focus optimisation only (scheduled drop path + aux loss).
Each run is followed by defocus-diagnose on its final checkpoint (blocks 1 and 2 of 4, 64 val images,
CLS-only CE for the gradient map). Writes <out>/summary.json and prints a markdown table.

    OMP_NUM_THREADS=1 python scripts/toy_experiment.py --out outputs/toy_experiment
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ARMS = {"defocus": ["experiment=toy_defocus"], "plain": ["experiment=toy_plain"],
        "plain+opt": ["experiment=toy_plain_opt"]}
KEYS = ["top1", "b2_grad_entropy", "b2_grad_top_mass", "b2_grad_front_mass", "b2_cls_rf_entropy",
        "b2_cls_rf_top_mass", "b2_cls_rf_front_mass", "b2_attn_row_entropy", "b2_attn_col_top_mass",
        "b2_kernel_row_entropy", "b2_kernel_col_top_mass", "b1_grad_entropy", "b1_grad_top_mass",
        "b1_attn_row_entropy", "b1_attn_col_top_mass"]


def run(entry, args):
    code = f"import sys; from defocus.cli import {entry}; sys.argv = ['x'] + sys.argv[1:]; {entry}()"
    subprocess.run([sys.executable, "-c", code, *args], check=True, env={**os.environ, "HYDRA_FULL_ERROR": "1"})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="outputs/toy_experiment")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--extra", nargs="*", default=[], help="extra Hydra overrides for both arms")
    p.add_argument("--aggregate-only", action="store_true", help="only summarise existing run folders")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--skip-existing", action="store_true", help="reuse finished run folders")
    a = p.parse_args()
    out = Path(a.out).resolve()
    arms = {k: ARMS[k] for k in a.arms}
    results = {arm: [] for arm in arms}
    for seed in a.seeds:
        for arm, ov in arms.items():
            rd = out / f"{arm}_s{seed}"
            common = ov + [f"seed={seed}"] + a.extra
            done = (rd / "diag" / "metrics.json").is_file()
            if a.aggregate_only or (a.skip_existing and done):
                results[arm].append({**json.loads((rd / "train" / "metrics.json").read_text()),
                                     **json.loads((rd / "diag" / "metrics.json").read_text())})
                continue
            run("train", common + [f"hydra.run.dir={rd}/train"])
            ckpt = sorted((rd / "train" / "checkpoints").glob("ckpt_*.pt"))[-1]
            run("diagnose", common + [f"diagnose.checkpoint={ckpt}", "diagnose.layers=[1,2]",
                                      f"hydra.run.dir={rd}/diag"])
            m = json.loads((rd / "train" / "metrics.json").read_text())
            m.update(json.loads((rd / "diag" / "metrics.json").read_text()))
            results[arm].append(m)
    summary = {arm: {k: (statistics.mean(r[k] for r in rs), statistics.stdev(r[k] for r in rs) if len(rs) > 1 else 0.0)
                     for k in KEYS} for arm, rs in results.items()}
    (out / "summary.json").write_text(json.dumps({"runs": results, "mean_std": summary}, indent=2))
    print("| metric | " + " | ".join(arms) + " |\n|---|" + "---|" * len(arms))
    for k in KEYS:
        print(f"| {k} | " + " | ".join(f"{summary[arm][k][0]:.3f} ± {summary[arm][k][1]:.3f}" for arm in arms) + " |")


if __name__ == "__main__":
    main()
