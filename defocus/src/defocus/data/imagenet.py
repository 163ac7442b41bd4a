"""ImageNet readers and the timm augmentation recipe (spec §3.4, §4).

Accepts the standard ImageFolder layout (``root/{train,val}/<class>/*.JPEG``) or the official list
files (``root/meta/{train,val}.txt`` with lines ``relative/path.JPEG <label>``, images under
``root/{train,val}/``). An unreadable image is an error naming the file (``repro_shared.data.load_image``);
with ``data.skip_corrupt=true`` it is skipped with a warning naming it, and the training loop reports the
count at the end of the epoch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from timm.data import Mixup, create_transform
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from repro_shared.data import DataError, ImageFolder, load_image

__all__ = ["ListFileDataset", "build_imagenet_dataset", "build_transform", "build_mixup", "build_val_loader",
           "load_class_map"]

_log = logging.getLogger("defocus.data")


def load_class_map(path) -> torch.Tensor | None:
    """Indices (one integer per line, e.g. the official map22kto1k.txt) -> (K,) long tensor; None if no path."""
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"class map {p} does not exist (expected one logit index per line)")
    return torch.tensor([int(v) for v in p.read_text().split()], dtype=torch.long)


class ListFileDataset(Dataset):
    """Official list-file layout: ``meta/<split>.txt`` lines ``path label``; items (image, label).

    ``skip_corrupt``: an unreadable image gives ``None`` (and a warning naming it) instead of a
    :class:`~repro_shared.data.DataError`; use ``SkipNoneCollate`` in the loader.
    """

    def __init__(self, root: Path, split: str, transform=None, skip_corrupt: bool = False):
        lines = (root / "meta" / f"{split}.txt").read_text().split("\n")
        self.items = [(root / split / p, int(lbl)) for p, lbl in (ln.rsplit(maxsplit=1) for ln in lines if ln.strip())]
        self.transform = transform
        self.skip_corrupt = skip_corrupt

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        try:
            img = load_image(path)
        except DataError as e:
            if not self.skip_corrupt:
                raise
            _log.warning("skipping unreadable sample %d: %s", i, e.reason)
            return None
        return (self.transform(img) if self.transform else img), label


def build_transform(is_train: bool, cfg):
    """timm ``create_transform``: RandomResizedCrop (bicubic), flip, RandAugment, jitter, erasing;
    test: resize to int(256/224 * S), centre crop S."""
    if is_train:
        return create_transform(
            input_size=cfg.img_size, is_training=True, color_jitter=cfg.color_jitter or None,
            auto_augment=cfg.auto_augment or None, re_prob=cfg.reprob, re_mode=cfg.remode,
            re_count=cfg.recount, interpolation=cfg.interpolation,
        )
    return create_transform(input_size=cfg.img_size, is_training=False, interpolation=cfg.interpolation,
                            crop_pct=224 / 256)


def build_imagenet_dataset(split: str, cfg):
    """The ``split`` ("train" | "val") dataset of ``cfg`` (``data.*``) with its transform.

    Raises:
        FileNotFoundError: neither layout exists under the root (the path and both layouts are named).
    """
    root = Path(cfg.get("val_root") or cfg.root) if split == "val" else Path(cfg.root)
    transform = build_transform(split == "train", cfg)
    skip = bool(cfg.get("skip_corrupt", False))
    if (root / "meta" / f"{split}.txt").is_file():
        return ListFileDataset(root, split, transform, skip_corrupt=skip)
    if (root / split).is_dir():
        return ImageFolder(root / split, transform=transform, skip_corrupt=skip, key="data.root")
    raise FileNotFoundError(
        f"ImageNet data not found under {root}: expected {root}/{split}/<class>/*.JPEG (ImageFolder) or "
        f"{root}/meta/{split}.txt with images under {root}/{split}/; set data.root=/path/to/imagenet"
    )


def build_mixup(cfg, num_classes: int):
    """timm Mixup/CutMix with label smoothing (None when both alphas are 0)."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                 switch_prob=cfg.mixup_switch_prob, mode=cfg.mixup_mode,
                 label_smoothing=cfg.label_smoothing, num_classes=num_classes)


def build_val_loader(val: Dataset, batch_size: int, num_workers: int, world_size: int = 1, rank: int = 0,
                     collate_fn=None) -> DataLoader:
    """Validation loader: each rank a strided share, in order (DistributedSampler without shuffle)."""
    sampler = DistributedSampler(val, num_replicas=world_size, rank=rank, shuffle=False) if world_size > 1 else None
    return DataLoader(val, batch_size=batch_size, sampler=sampler, drop_last=False, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available(), collate_fn=collate_fn)
