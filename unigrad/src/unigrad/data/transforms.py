"""Augmentations: the MoCo-v2 two-view pipeline of the official code (torchvision transforms v2 + PIL blur),
the linear-evaluation / evaluation pipelines, and their small-image versions for the embedded digits.

Randomness comes from python ``random`` (the blur radius) and torch (all v2 transforms); both are seeded per
sample by ``repro_shared.data.SeededDataset``, so a resumed run draws the same augmentations.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import torch
from PIL import ImageFilter
from torchvision.transforms import v2

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DIGITS_MEAN", "DIGITS_STD", "PILGaussianBlur", "TwoViews",
           "mocov2_view", "imagenet_eval", "imagenet_lineval_train", "digits_view", "digits_eval", "digits_lineval_train"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: mean / std of the upsampled sklearn digits in [0, 1] (all three channels carry the same grey value)
DIGITS_MEAN, DIGITS_STD = (0.31,) * 3, (0.32,) * 3


class PILGaussianBlur:
    """The official blur: ``PIL.ImageFilter.GaussianBlur(radius=sigma)``, ``sigma ~ U[sigma_min, sigma_max]``
    (python ``random``), on a PIL image (not torchvision's fixed-kernel blur)."""

    def __init__(self, sigma: Sequence[float] = (0.1, 2.0)):
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __call__(self, img):
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


class TwoViews:
    """``x -> [first(x), second(x)]``: two independently augmented views of one image (official
    ``MultiViewDataInjector``)."""

    def __init__(self, first: Callable, second: Callable | None = None):
        self.first, self.second = first, second or first

    def __call__(self, x):
        return [self.first(x), self.second(x)]


def _to_tensor(mean, std) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def mocov2_view(size: int = 224) -> v2.Compose:
    """One view of the official pre-training augmentation (MoCo v2, spec §3.7), on a PIL image:
    RandomResizedCrop(size, scale=(0.2, 1)); ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8; RandomGrayscale p=0.2;
    PIL Gaussian blur sigma in [0.1, 2] p=0.5; horizontal flip p=0.5; to tensor; ImageNet normalisation."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.2, 1.0)),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([PILGaussianBlur((0.1, 2.0))], p=0.5),
        v2.RandomHorizontalFlip(),
        *_to_tensor(IMAGENET_MEAN, IMAGENET_STD),
    ])


def imagenet_eval(size: int = 224) -> v2.Compose:
    """Resize(256) -> CenterCrop(224) -> normalise (kNN bank/queries and linear-eval validation)."""
    return v2.Compose([v2.Resize(int(round(size * 256 / 224))), v2.CenterCrop(size), *_to_tensor(IMAGENET_MEAN, IMAGENET_STD)])


def imagenet_lineval_train(size: int = 224) -> v2.Compose:
    """Linear-evaluation training (SimSiam protocol): RandomResizedCrop(224), horizontal flip, normalise."""
    return v2.Compose([v2.RandomResizedCrop(size), v2.RandomHorizontalFlip(), *_to_tensor(IMAGENET_MEAN, IMAGENET_STD)])


def digits_view(size: int) -> v2.Compose:
    """Small-image pre-training view for the digits (spec §8; no flips, digits are not flip-invariant), on a
    (3, H, W) float tensor in [0, 1]: RandomResizedCrop(size, scale=(0.4, 1)); rotation +-10 deg; brightness /
    contrast jitter 0.4 p=0.8; Gaussian blur sigma in [0.1, 1] p=0.5; normalise."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.4, 1.0), antialias=True),
        v2.RandomAffine(degrees=10),
        v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8),
        v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.5),
        v2.Normalize(DIGITS_MEAN, DIGITS_STD),
    ])


def digits_eval(size: int) -> v2.Compose:
    """Digits evaluation: the (already ``size``-sized) image, normalised."""
    return v2.Compose([v2.Resize(size, antialias=True), v2.Normalize(DIGITS_MEAN, DIGITS_STD)])


def digits_lineval_train(size: int) -> v2.Compose:
    """Digits linear-evaluation training: a mild RandomResizedCrop(size, scale=(0.6, 1)), normalise (no flip)."""
    return v2.Compose([v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True), v2.Normalize(DIGITS_MEAN, DIGITS_STD)])
