"""Summarise the tiny-data experiment: mean and std over seeds of each metric, per configuration.

    python scripts/tiny_summary.py OUT_DIR docs/tiny_experiment.json
"""

import json
import statistics
import sys
from pathlib import Path

KEYS = ["tiny_fid_addp", "tiny_fid_teacher", "tiny_fid_random_tokens", "tiny_fid_vq_recon", "label_entropy_addp",
        "probe_top1_addp", "probe_top1_random_init", "probe_top1_random_init_std", "probe_top1_mage_tokens",
        "val_ce_addp", "val_ce_addp_shuffled_images", "val_ce_marginal",
        "addp_loss", "featurenet_val_top1"]


def main(out: Path, dest: Path) -> None:
    summary = {}
    for exp_dir in sorted(p for p in out.iterdir() if p.is_dir() and p.name != "cache"):
        runs = {p.name: json.loads((p / "metrics.json").read_text()) for p in sorted(exp_dir.glob("seed*"))
                if (p / "metrics.json").is_file()}
        if not runs:
            continue
        times = {s: (out / f"time_{exp_dir.name}_{s}.txt").read_text().strip()
                 for s in runs if (out / f"time_{exp_dir.name}_{s}.txt").is_file()}
        table = {}
        for k in KEYS:
            vals = [r[k] for r in runs.values() if k in r]
            if vals:
                table[k] = {"mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                            "per_seed": vals}
        table["addp_fid_below_random_tokens"] = sum(r["tiny_fid_addp"] < r["tiny_fid_random_tokens"] for r in runs.values())
        table["addp_probe_above_random_init"] = sum(r["probe_top1_addp"] > r["probe_top1_random_init"] for r in runs.values())
        summary[exp_dir.name] = {"seeds": list(runs), "metrics": table, "time": times}
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(summary, indent=2) + "\n")
    for name, s in summary.items():
        print(f"== {name} ({len(s['seeds'])} seeds)")
        for k, v in s["metrics"].items():
            print(f"  {k}: " + (f"{v['mean']:.3f} +- {v['std']:.3f}  {[round(x, 3) for x in v['per_seed']]}"
                                 if isinstance(v, dict) else f"{v} of {len(s['seeds'])}"))
        for seed, t in s["time"].items():
            print(f"  time {seed}: {t}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
