"""Datasets of the three uses -- pre-training (two views), evaluation (kNN bank / probe), linear evaluation --
for ImageNet (ImageFolder ``root/train``, ``root/val``) and the embedded sklearn digits.

Config node ``data`` (``configs/data/*.yaml``): ``name`` (``digits`` | ``imagenet``), ``image_size``,
``root`` (ImageNet), ``skip_corrupt``, ``num_workers``, ``subset`` (digits: pre-train on the first N images only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from omegaconf import OmegaConf

from repro_shared.data import ImageFolder, SkipNoneCollate, require_dir
from repro_shared.toydata import DigitsDataset

from . import transforms as T

__all__ = ["DATASETS", "IMAGENET_LAYOUT", "pretrain_dataset", "eval_datasets", "lineval_datasets", "eval_loader"]

DATASETS = ("digits", "imagenet")
IMAGENET_LAYOUT = "<data.root>/train/<class>/<image>.JPEG and <data.root>/val/<class>/<image>.JPEG (ImageFolder)"


def _check_name(data: Any) -> str:
    if data.name not in DATASETS:
        raise ValueError(f"unknown data.name {data.name!r}; known: {', '.join(DATASETS)}")
    return data.name


def _imagenet_split(data: Any, split: str, transform) -> ImageFolder:
    if (OmegaConf.is_config(data) and OmegaConf.is_missing(data, "root")) or data.get("root") is None:
        raise ValueError(f"data.root is not set: pass data.root=/path/to/imagenet with the layout {IMAGENET_LAYOUT}")
    root = require_dir(data.root, IMAGENET_LAYOUT, "data.root")
    return ImageFolder(Path(root) / split, transform, skip_corrupt=bool(data.get("skip_corrupt", False)),
                       key=f"data.root (split folder {split}/)")


def pretrain_dataset(data: Any) -> Dataset:
    """Items ``([view1, view2], label)``, each view (3, S, S); the label is unused in pre-training.

    Raises:
        ValueError: unknown ``data.name``. FileNotFoundError: ImageNet folder missing (names path and layout).
    """
    if _check_name(data) == "digits":
        ds = DigitsDataset("train", int(data.image_size), 3, transform=T.TwoViews(T.digits_view(int(data.image_size))))
        subset = data.get("subset")
        return ds if subset is None else Subset(ds, range(min(int(subset), len(ds))))
    return _imagenet_split(data, "train", T.TwoViews(T.mocov2_view(int(data.image_size))))


def eval_datasets(data: Any) -> tuple[Dataset, Dataset]:
    """``(bank, queries)`` with the deterministic evaluation transform: train split (the kNN bank / probe
    training set) and the val split (digits: the fixed 360-image split)."""
    s = int(data.image_size)
    if _check_name(data) == "digits":
        return DigitsDataset("train", s, 3, transform=T.digits_eval(s)), DigitsDataset("val", s, 3, transform=T.digits_eval(s))
    return _imagenet_split(data, "train", T.imagenet_eval(s)), _imagenet_split(data, "val", T.imagenet_eval(s))


def lineval_datasets(data: Any) -> tuple[Dataset, Dataset]:
    """``(train with the linear-eval augmentation, val with the evaluation transform)``."""
    s = int(data.image_size)
    if _check_name(data) == "digits":
        return (DigitsDataset("train", s, 3, transform=T.digits_lineval_train(s)),
                DigitsDataset("val", s, 3, transform=T.digits_eval(s)))
    return _imagenet_split(data, "train", T.imagenet_lineval_train(s)), _imagenet_split(data, "val", T.imagenet_eval(s))


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Ordered loader over this rank's shard (``DistributedSampler`` without shuffling under a process group;
    it pads with repeated samples so that every shard has the same size, as the official kNN loaders).
    Samples a ``skip_corrupt`` dataset returns as ``None`` (unreadable files, already warned about) are dropped
    with their labels (``SkipNoneCollate``); a batch of only unreadable files raises ``DataError``."""
    sampler = None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        sampler = DistributedSampler(dataset, shuffle=False)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=num_workers,
                      collate_fn=SkipNoneCollate())
