"""The embedded default data set: sklearn digits as 32x32 RGB images with a fixed colour tint (spec §8).

Each digit (1,437 train / 360 val, the fixed split of ``repro_shared.toydata``) is upsampled
bilinearly to ``img_size`` and drawn in a colour on a darker background colour, both drawn once per
image from a generator seeded by (split, index): the data set is a fixed set of images (no augmentation),
so its token ids can be cached and a run is reproducible. Items are ``(image (3, H, W) in [0, 1], label)``.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from repro_shared.toydata import load_digits

__all__ = ["TintedDigits"]

_SPLIT_SALT = {"train": 11, "val": 12}


class TintedDigits(Dataset):
    """sklearn digits, RGB, tinted foreground on a tinted background.

    Args:
        split: ``"train"`` or ``"val"``.
        img_size: output side (>= 8).
        limit: keep only the first ``limit`` images (tests).
    """

    def __init__(self, split: str = "train", img_size: int = 32, limit: int | None = None):
        gray, labels = load_digits(split, image_size=img_size, channels=1)          # (N, 1, H, W) in [0, 1]
        if limit is not None:
            gray, labels = gray[:limit], labels[:limit]
        g = torch.Generator().manual_seed(_SPLIT_SALT[split])
        fg = 0.55 + 0.45 * torch.rand(len(gray), 3, 1, 1, generator=g)
        bg = 0.25 * torch.rand(len(gray), 3, 1, 1, generator=g)
        self.images = (gray * fg + (1 - gray) * bg).contiguous()
        self.labels = labels
        self.num_classes = 10

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])
