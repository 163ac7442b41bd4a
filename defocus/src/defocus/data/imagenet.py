"""ImageNet readers and the timm augmentation recipe (spec §3.4, §4).

Accepts the standard ImageFolder layout (``root/{train,val}/<class>/*.JPEG``) or the official list
files (``root/meta/{train,val}.txt`` with lines ``relative/path.JPEG <label>``, images under
``root/{train,val}/``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from timm.data import Mixup, create_transform
from timm.data.distributed_sampler import RepeatAugSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.datasets import ImageFolder

__all__ = ["ListFileDataset", "build_imagenet_dataset", "build_transform", "build_mixup", "build_imagenet_loaders",
           "load_class_map"]


def load_class_map(path) -> torch.Tensor | None:
    """Indices (one integer per line, e.g. the official map22kto1k.txt) -> (K,) long tensor; None if no path."""
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"class map {p} does not exist (expected one logit index per line)")
    return torch.tensor([int(v) for v in p.read_text().split()], dtype=torch.long)


class ListFileDataset(Dataset):
    """Official list-file layout: ``meta/<split>.txt`` lines ``path label``."""

    def __init__(self, root: Path, split: str, transform=None):
        lines = (root / "meta" / f"{split}.txt").read_text().split("\n")
        self.items = [(root / split / p, int(lbl)) for p, lbl in (ln.rsplit(maxsplit=1) for ln in lines if ln.strip())]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        img = Image.open(path).convert("RGB")
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
    root = Path(cfg.get("val_root") or cfg.root) if split == "val" else Path(cfg.root)
    transform = build_transform(split == "train", cfg)
    if (root / "meta" / f"{split}.txt").is_file():
        return ListFileDataset(root, split, transform)
    if (root / split).is_dir():
        return ImageFolder(str(root / split), transform=transform)
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


def build_imagenet_loaders(cfg, batch_size: int, world_size: int, rank: int):
    train, val = build_imagenet_dataset("train", cfg), build_imagenet_dataset("val", cfg)
    if cfg.repeated_aug:
        sampler = RepeatAugSampler(train, num_replicas=world_size, rank=rank, shuffle=True, num_repeats=3)
    else:
        sampler = DistributedSampler(train, num_replicas=world_size, rank=rank, shuffle=True)
    val_sampler = DistributedSampler(val, num_replicas=world_size, rank=rank, shuffle=False)
    kw = dict(num_workers=cfg.num_workers, pin_memory=torch.cuda.is_available())
    return (DataLoader(train, batch_size=batch_size, sampler=sampler, drop_last=True, **kw),
            DataLoader(val, batch_size=batch_size, sampler=val_sampler, drop_last=False, **kw))
