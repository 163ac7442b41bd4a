"""Tiny search on shapes (CPU, a few minutes) + an honest check of its result (spec §8.4).

Runs ``asl-search`` on shapes with the README's tiny-search settings (``TINY_SEARCH``: BF1, 3 rounds x 8
samples, 60-iteration proxy trainings; larger than the one-minute ``asl-search`` default; overrides given
on the command line win), then re-scores the identity curves, the released BF1 curves and the final
searched mu with fresh proxy seeds the search never saw. Prints one JSON line per scored loss.

Usage: python scripts/tiny_search.py [--out outputs/tiny_search] [--fresh-seeds 10 11] [overrides ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from auto_seg_loss.cli import _proxy_datasets, compose, proxy_reward, run_search
from auto_seg_loss.losses import SEARCHED_CONTROL_POINTS, identity_control_points


TINY_SEARCH = ["search.rounds=3", "search.samples_per_round=8", "proxy.iters=60"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/tiny_search")
    ap.add_argument("--fresh-seeds", type=int, nargs="+", default=[10, 11])
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = compose("search", TINY_SEARCH + list(args.overrides) + [f"output_dir={args.out}"])
    history = run_search(cfg)
    print(json.dumps({"search": history}))
    found = OmegaConf.load(Path(args.out) / "searched_control_points.yaml").control_points
    train_ds, reward_ds = _proxy_datasets(cfg)
    candidates = {"identity": identity_control_points(cfg.metric).tolist(), "searched_here": list(found)}
    candidates["released_voc"] = SEARCHED_CONTROL_POINTS[cfg.metric]
    for name, cp in candidates.items():
        r = [proxy_reward(cfg, cp, train_ds, reward_ds, torch.device("cpu"), seeds=[s]) for s in args.fresh_seeds]
        print(json.dumps({"loss": name, "metric": cfg.metric, "fresh_seed_rewards": r,
                          "mean": sum(r) / len(r)}))


if __name__ == "__main__":
    main()
