"""sklearn's handwritten digits as a small image-classification dataset."""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

DIGITS_NUM_CLASSES = 10
_VAL_FRACTION = 0.2
_SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _split_indices() -> dict[str, np.ndarray]:
    """Fixed stratified 80/20 split of the 1,797 images (1,437 train, 360 val)."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    y = sk_load_digits().target
    train, val = train_test_split(
        np.arange(len(y)), test_size=_VAL_FRACTION, random_state=_SPLIT_SEED, stratify=y
    )
    return {"train": np.sort(train), "val": np.sort(val)}


def load_digits(split: str = "train", image_size: int = 32, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of one split.

    Args:
        split: ``"train"`` (1,437 images) or ``"val"`` (360 images); the split is fixed.
        image_size: output side length; the 8x8 originals are resized bilinearly.
        channels: 1 or 3 (the grey value repeated).

    Returns:
        ``images`` float32 (N, channels, image_size, image_size) in [0, 1], ``labels`` int64 (N,).
    """
    from sklearn.datasets import load_digits as sk_load_digits

    if split not in ("train", "val"):
        raise ValueError(f"digits split must be 'train' or 'val', got {split!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 (the originals are 8x8), got {image_size}")
    data = sk_load_digits()
    idx = _split_indices()[split]
    x = torch.from_numpy(data.images[idx].astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8)
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp_(0, 1)
    x = x.expand(-1, channels, -1, -1).contiguous()
    y = torch.from_numpy(data.target[idx].astype(np.int64))
    return x, y


class DigitsDataset(Dataset):
    """Map-style dataset over :func:`load_digits`; items are ``(image (C, H, W), label)``."""

    def __init__(self, split: str = "train", image_size: int = 32, channels: int = 3,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.images, self.labels = load_digits(split, image_size, channels)
        self.transform = transform
        self.classes = [str(i) for i in range(DIGITS_NUM_CLASSES)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[i])
