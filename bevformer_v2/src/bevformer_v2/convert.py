"""Official checkpoints -> this package's state dict (our parameter names).

Two kinds of file:

* a trained BEVFormer v2 checkpoint (mmdet3d naming): most names are identical by construction
  (``img_backbone``, ``img_neck``, ``pts_bbox_head.*``); the DD3D towers (detectron2 ``Conv2d`` with a
  per-level norm list) and its predictor ``ModuleList``s differ, and a few non-learned entries are dropped;
* an mmdet COCO detector used as initialisation (``fcos_r50_coco_2mmdet.pth`` of the official configs'
  ``load_from``, or an mmdet FCOS R101 caffe checkpoint): ``backbone.`` -> ``img_backbone.``, ``neck.`` ->
  ``img_neck.``; its detection head (``bbox_head.``) has no counterpart here and is dropped. The ResNet names
  are mmdet's (``layer1.0.conv1``, ``downsample.0``), which our ResNets keep; the official backbone is
  caffe style, so use ``model.backbone=resnet50_caffe`` (the paper configs do).

``bevformer-v2-convert IN.pth OUT.pt [--trust-checkpoint]``; files load with ``weights_only=True`` unless
``--trust-checkpoint`` is given (only for a file whose source you trust: full unpickling can run code).
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
DROP = [r"^pts_bbox_head\.code_weights$", r"mean_depth_per_level$", r"std_depth_per_level$",
        r"^bbox_head\."]  # the COCO detector's own head (FCOS init files)

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
    p = argparse.ArgumentParser(description="convert an official BEVFormer v2 checkpoint or an mmdet COCO "
                                            "detector (FCOS init) to bevformer_v2 names")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle SRC in full (it can run code): only for a file whose source you trust")
    a = p.parse_args(argv)
    from repro_shared.checkpoint import CheckpointError, load_weights_file

    try:
        sd = convert_state_dict(load_weights_file(a.src, trust=a.trust_checkpoint))
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    torch.save(sd, a.dst)
    prefixes = sorted({k.split(".")[0] for k in sd})
    print(f"wrote {len(sd)} tensors ({', '.join(prefixes)}) to {a.dst}")


if __name__ == "__main__":
    main()
