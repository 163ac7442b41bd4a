"""Carve the search split out of COCO train2017 (official: cocosplit, 5k val images, split unpublished).

    python scripts/make_search_split.py data/coco/annotations/instances_train2017.json data/coco/annotations \
        --num-val 5000 --seed 0
writes search_train2017.json (~113k images) and search_val2017.json (5k images); deterministic in --seed.
"""

import argparse

from param_ap_loss.data.coco import make_search_split

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("train_ann")
    ap.add_argument("out_dir")
    ap.add_argument("--num-val", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    for p in make_search_split(a.train_ann, a.out_dir, a.num_val, a.seed):
        print(p)
