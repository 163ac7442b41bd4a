"""Embedded default data: sklearn digits pasted at a random place of a larger noisy canvas (spec §8.1).

The position of the evidence in the 1D raster sequence varies from image to image, which is what a
causal model with a CLS token at the end has to cope with. Train placements are re-drawn every epoch;
validation placements are fixed by a seed. The training placement and noise come from the global torch
RNG, which the resumable loader seeds per sample by ``(seed, epoch, index)`` (exact resume).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset

from repro_shared import toydata

__all__ = ["DigitsCanvas", "build_digits_datasets"]


class DigitsCanvas(Dataset):
    """Items: image (3, canvas, canvas) float in [0, 1], label int.

    Args: digit_size (digits resized from 8x8), canvas (side), noise (std of the background noise),
    random_place (train: new position per access; val: fixed positions from ``seed``).
    """

    def __init__(self, split: str, canvas: int = 32, digit_size: int = 16, noise: float = 0.1,
                 random_place: bool | None = None, seed: int = 0):
        if digit_size > canvas:
            raise ValueError(f"digit_size {digit_size} must not exceed canvas {canvas}")
        self.images, self.labels = toydata.load_digits(split, image_size=digit_size, channels=3)
        self.canvas, self.digit_size, self.noise = canvas, digit_size, noise
        self.random_place = (split == "train") if random_place is None else random_place
        g = torch.Generator().manual_seed(seed + 1)
        n, span = len(self.labels), canvas - digit_size + 1
        self.fixed_pos = torch.randint(0, span, (n, 2), generator=g)
        self.fixed_noise_seed = torch.randint(0, 2**31 - 1, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        span = self.canvas - self.digit_size + 1
        if self.random_place:
            r, c = torch.randint(0, span, (2,)).tolist()
            noise = torch.randn(3, self.canvas, self.canvas)
        else:
            r, c = self.fixed_pos[i].tolist()
            g = torch.Generator().manual_seed(int(self.fixed_noise_seed[i]))
            noise = torch.randn(3, self.canvas, self.canvas, generator=g)
        img = (noise * self.noise).clamp_(0, 1)
        d = self.digit_size
        img[:, r:r + d, c:c + d] = torch.maximum(img[:, r:r + d, c:c + d], self.images[i])
        return img, int(self.labels[i])


def build_digits_datasets(canvas: int, digit_size: int, noise: float, seed: int, train_subset: int | None = None):
    """(train, val) datasets; ``train_subset`` keeps the first N training images (quick checks)."""
    train = DigitsCanvas("train", canvas, digit_size, noise, seed=seed)
    if train_subset:
        train = Subset(train, range(min(train_subset, len(train))))
    return train, DigitsCanvas("val", canvas, digit_size, noise, seed=seed)
