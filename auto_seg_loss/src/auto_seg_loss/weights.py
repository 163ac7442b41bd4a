"""ImageNet initial weights of the backbone: the official mmcv ResNet-V1c checkpoints -> our (timm) names.

The paper rows start from ``open-mmlab://resnet{50,101}_v1c`` (mmcv model zoo:
``https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth`` and
``.../resnet101_v1c-e67eebb6.pth``). Their keys are mmcv ``ResNetV1c`` names: the deep stem is
``stem.{0,3,6}`` (3x3 convs 32-32-64) with BNs ``stem.{1,4,7}``, then ``layer{1..4}.{i}.conv{1,2,3}`` /
``bn{1,2,3}`` / ``downsample.{0,1}`` as torchvision, sometimes under a ``state_dict`` key and/or a
``backbone.`` prefix, plus an ImageNet classifier ``fc.*``. timm's ``resnet{50,101}c`` (our backbone) names
the stem ``conv1.{0,1,3,4,6}`` + ``bn1`` and uses the same names for the stages.

* :func:`convert_mmcv_resnet_v1c` maps the names (no tensor changes: same layout, stride on the 3x3 conv
  in both, "pytorch" style);
* :func:`load_backbone_weights` loads an official (or already converted) file into a segmenter,
  refusing a file that does not fit with the list of keys;
* ``asl-convert-backbone SRC DST --backbone resnet101`` (:func:`main`) converts a downloaded file once,
  checks it against the backbone and writes our names (``init.converter`` of the paper configs).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from repro_shared.checkpoint import CheckpointError, load_weights_file, remap_keys
from repro_shared.fsio import atomic_open

from .models import DeepLabV3Plus, build_segmenter

# mmcv ResNetV1c names -> timm resnet*c names (regexes, applied in order)
MMCV_RESNET_V1C_RENAMES = [
    (r"^backbone\.", ""),
    (r"^stem\.0\.", "conv1.0."), (r"^stem\.1\.", "conv1.1."), (r"^stem\.3\.", "conv1.3."),
    (r"^stem\.4\.", "conv1.4."), (r"^stem\.6\.", "conv1.6."), (r"^stem\.7\.", "bn1."),
]
# not part of the segmentation backbone: the ImageNet classifier and BN step counters
_DROP = [r"^fc\.", r"num_batches_tracked$"]


def convert_mmcv_resnet_v1c(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an mmcv ResNet-V1c state dict to timm ``resnet*c`` names (also accepts timm names: no-op)."""
    return remap_keys(state, rename=MMCV_RESNET_V1C_RENAMES, drop=_DROP)


def load_backbone_weights(model: DeepLabV3Plus, path: str | os.PathLike, *, trust: bool = False) -> int:
    """Load ImageNet weights (an official mmcv ResNet-V1c checkpoint, or one converted to our names) into
    ``model.backbone``; the file is read with ``weights_only=True`` unless ``trust``. Returns the number of
    tensors loaded.

    Raises:
        repro_shared.checkpoint.CheckpointError: the file is missing, unreadable or holds pickled code, or it
            does not fit the backbone (missing / unexpected / shape-mismatched keys are listed; nothing is loaded).
    """
    state = convert_mmcv_resnet_v1c(load_weights_file(path, trust=trust))
    own = {k: v for k, v in model.backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"backbone weights {path} do not fit: {len(missing)} missing keys (e.g. {missing[:4]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:4]}), {len(mismatched)} shape mismatches "
            f"(e.g. {mismatched[:2]}); expected an ImageNet ResNet-V1c of the same depth in mmcv or timm names")
    model.backbone.load_state_dict(state, strict=False)  # only num_batches_tracked is left out
    return len(state)


def main(argv: list[str] | None = None) -> Path:
    """``asl-convert-backbone SRC DST --backbone resnet101``: convert + check + write (atomically); a file that
    cannot be converted ends with ``error: <why>`` on stderr and exit status 1."""
    ap = argparse.ArgumentParser(description="Convert official mmcv ResNet-V1c ImageNet weights to auto_seg_loss's "
                                             "backbone names and check that they fit")
    ap.add_argument("src", help="downloaded file, e.g. resnet101_v1c-e67eebb6.pth")
    ap.add_argument("dst", help="output file (timm resnet*c names)")
    ap.add_argument("--backbone", default="resnet101", choices=["resnet50", "resnet101"])
    ap.add_argument("--trust-checkpoint", action="store_true",
                    help="unpickle SRC in full (only for a file from a source you trust)")
    args = ap.parse_args(argv)
    model = build_segmenter(2, args.backbone)
    try:
        n = load_backbone_weights(model, args.src, trust=args.trust_checkpoint)
    except CheckpointError as e:  # missing / unreadable / untrusted / wrong-depth file: one line, exit status 1
        ap.exit(1, f"error: {e}\n")
    state = {k: v for k, v in model.backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    with atomic_open(args.dst, "wb") as f:
        torch.save(state, f)
    print(f"converted {n} tensors of {args.src} ({args.backbone}) -> {args.dst}; use init.path={args.dst}")
    return Path(args.dst)
