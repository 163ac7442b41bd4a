"""Datasets from the ``data`` config: embedded shapes (generated on first use) or COCO files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from repro_shared import toydata

from .coco import CocoDetection
from .transforms import build_transforms

DATASETS = ("shapes", "coco")


def _shapes_split(cfg: Any, split: str, num: int):
    root = Path(os.path.expanduser(str(cfg.root)))
    return toydata.make_shapes_dataset(root, split=split, num_images=int(num), image_size=int(cfg.image_size),
                                       seed=int(cfg.get("seed", 0)), max_objects=int(cfg.get("max_objects", 5)))


def build_dataset(cfg: Any, split: str, train: bool, train_size: int = 512) -> CocoDetection:
    """``split`` is ``train`` or ``val`` (the config maps it to files/splits); ``data.skip_corrupt``
    turns unreadable images into warnings (see :class:`CocoDetection`).

    Raises:
        ValueError: unknown ``data.name`` (lists the known ones).
        FileNotFoundError: missing annotation file / image folder (names it, the expected layout and ``data.root``).
    """
    if cfg.name not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.name!r}; known: {', '.join(DATASETS)}")
    skip = bool(cfg.get("skip_corrupt", False))
    tf = build_transforms(str(cfg.train_transform) if train else "none", train_size)
    if cfg.name == "shapes":
        p = _shapes_split(cfg, str(cfg[f"{split}_split"]), cfg[f"num_{split}"])
        return CocoDetection(p.image_dir, p.ann_file, tf, train=train, skip_corrupt=skip)
    try:
        return CocoDetection(os.path.expanduser(str(cfg[f"{split}_images"])),
                             os.path.expanduser(str(cfg[f"{split}_ann"])), tf, train=train, skip_corrupt=skip)
    except FileNotFoundError as e:  # say which setting points there
        raise FileNotFoundError(f"{e}; set data.root=<your COCO folder> (now {cfg.get('root')!r}) or "
                                f"data.{split}_ann / data.{split}_images") from e
