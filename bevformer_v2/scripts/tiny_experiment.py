"""Tiny CPU experiment (spec §8): perspective supervision on/off and two-frame temporal fusion on/off on the
synthetic nuScenes set, several seeds, mean +- std. Tiny-data results: they test the mechanism, not the paper.

python scripts/tiny_experiment.py --iters 100 --seeds 0 1 2 --out outputs/tiny_exp
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# bev_only is also the single-frame (t1) arm of the temporal comparison: both are the same run.
ARMS = {
    "bev_only": ["model.perspective=false", "train.lambda_pers=0"],
    "persp_bev": [],
    "t2": ["model.perspective=false", "train.lambda_pers=0", "data.frames=[-1,0]"],
    "persp_bev_two_stage": ["model.head.two_stage=true", "model.head.num_proposals=50"],
}
KEYS = ("NDS", "mAP", "mATE", "mAOE", "mAVE", "matched_center_err", "matched_vel_err", "matched_cls_prob",
        "train_loss_bev")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS))  # runs already in --out are reused
    p.add_argument("--out", default="outputs/tiny_exp")
    a = p.parse_args()
    out = Path(a.out)
    binary = str(Path(sys.executable).parent / "bevformer-v2-train")
    results = {}
    for arm in a.arms:
        for seed in a.seeds:
            run = out / f"{arm}_s{seed}"
            if not (run / "metrics.json").exists():
                t = time.time()
                cmd = [binary, f"hydra.run.dir={run}", f"seed={seed}", f"train.iters={a.iters}", "device=cpu",
                       *ARMS[arm]]
                subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                print(f"{arm} seed {seed}: {time.time() - t:.0f} s", flush=True)
            results.setdefault(arm, []).append(json.loads((run / "metrics.json").read_text()))
    lines = ["| arm | " + " | ".join(KEYS) + " |", "|---" * (len(KEYS) + 1) + "|"]
    summary = {}
    for arm, ms in results.items():
        cells = []
        for k in KEYS:
            vals = [m[k] for m in ms]
            mu, sd = statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)
            summary.setdefault(arm, {})[k] = dict(mean=mu, std=sd, values=vals)
            cells.append(f"{mu:.4f} ± {sd:.4f}")
        lines.append(f"| {arm} (n={len(ms)}) | " + " | ".join(cells) + " |")
    (out / "summary.json").write_text(json.dumps(dict(iters=a.iters, seeds=a.seeds, summary=summary), indent=2))
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
