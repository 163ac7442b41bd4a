"""Official BEVFormer v2 checkpoint (mmdet3d naming) -> this package's state dict.

Most names are identical by construction (``img_backbone``, ``img_neck``, ``pts_bbox_head.*``); the DD3D
towers (detectron2 ``Conv2d`` with a per-level norm list) and its predictor ``ModuleList``s differ, and a few
official non-learned entries are dropped. ``bevformer-v2-convert IN.pth OUT.pth``.
"""

from __future__ import annotations

import argparse
import re

import torch

TOWERS = r"fcos3d_bbox_head\.(fcos2d_head\.cls_tower|fcos2d_head\.box2d_tower|fcos3d_head\.box3d_tower)"
PREDICTORS = r"fcos3d_bbox_head\.fcos3d_head\.(box3d_quat|box3d_ctr|box3d_depth|box3d_size|box3d_conf)"

# official -> ours
RENAME = [
    (TOWERS + r"\.(\d+)\.weight$", r"fcos3d_bbox_head.\1.layers.\2.conv.weight"),
    (TOWERS + r"\.(\d+)\.norm\.", r"fcos3d_bbox_head.\1.layers.\2.norm."),
    (PREDICTORS + r"\.0\.", r"fcos3d_bbox_head.fcos3d_head.\1."),
    (r"^backbone\.", "img_backbone."),  # mmdet FCOS COCO checkpoint (official ``load_from``)
    (r"^neck\.", "img_neck."),
]
# official entries with no counterpart (constants / buffers re-created by our modules)
DROP = [r"^pts_bbox_head\.code_weights$", r"mean_depth_per_level$", r"std_depth_per_level$"]

# ours -> official (for tests and exports)
TO_OFFICIAL = [
    (TOWERS + r"\.layers\.(\d+)\.conv\.weight$", r"fcos3d_bbox_head.\1.\2.weight"),
    (TOWERS + r"\.layers\.(\d+)\.norm\.", r"fcos3d_bbox_head.\1.\2.norm."),
    (PREDICTORS + r"\.(weight|bias)$", r"fcos3d_bbox_head.fcos3d_head.\1.0.\2"),
]


def _apply(key: str, rules) -> str:
    for pat, rep in rules:
        new, n = re.subn(pat, rep, key)
        if n:
            return new
    return key


def convert_state_dict(official: dict) -> dict:
    """Map an official state dict (``state_dict`` of an mmdet3d checkpoint) to our names."""
    out = {}
    for k, v in official.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if any(re.search(p, k) for p in DROP):
            continue
        out[_apply(k, RENAME)] = v
    return out


def to_official_names(ours: dict) -> dict:
    """Inverse map (ours -> official names), adding the official-only constants."""
    out = {_apply(k, TO_OFFICIAL): v for k, v in ours.items()}
    out["pts_bbox_head.code_weights"] = torch.tensor([1.0] * 8 + [0.2, 0.2])
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="convert an official BEVFormer v2 checkpoint to bevformer_v2 names")
    p.add_argument("src")
    p.add_argument("dst")
    a = p.parse_args(argv)
    from repro_shared.checkpoint import load_weights_file

    sd = convert_state_dict(load_weights_file(a.src))
    torch.save(sd, a.dst)
    print(f"wrote {len(sd)} tensors to {a.dst}")


if __name__ == "__main__":
    main()
