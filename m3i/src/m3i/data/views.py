"""The M3I pre-training sample of one image (spec m3i.md section 3.4): two views, their geometry, a mix mask.

From one PIL image: independent flips and RandomResizedCrops (:class:`repro_shared.ssl.geometry.PairedViewCrop`),
the asymmetric SiameseIM/BYOL colour augmentations (view 1: blur always; view 2: blur 0.1, solarize 0.2),
ToTensor + Normalize, and the mix mask ``M (N,)`` (True = image A visible): the complement of a BEiT block-wise
mask of ``N - K_A`` cells (:class:`repro_shared.ssl.masking.BlockMaskGenerator`), so image B shows through in
blocks. Random draws come in SiameseIM's order: torch's RNG for flips, crops and colour, then Python's for
the mask; under :class:`repro_shared.data.SeededDataset` every sample is seeded by (seed, epoch, index).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torchvision import transforms as T

from repro_shared.ssl.augment import byol_color_transform
from repro_shared.ssl.geometry import PairedViewCrop
from repro_shared.ssl.masking import BlockMaskGenerator

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "M3ITransform", "eval_transform", "count_a"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def count_a(grid_size: int, mix_ratio_a: float) -> int:
    """``K_A = round(mix_ratio_a * N)`` tokens of image A per mix.

    Raises:
        ValueError: a ratio that leaves A or B without a token.
    """
    n = grid_size * grid_size
    k = int(round(mix_ratio_a * n))
    if not 0 < k < n:
        raise ValueError(f"data.mix_ratio_a={mix_ratio_a} gives {k} of {n} tokens to image A; it must leave each "
                         "image at least one token (0 < ratio < 1)")
    return k


def eval_transform(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> T.Compose:
    """ToTensor + Normalize (probes on the embedded images, which already have the input size)."""
    return T.Compose([T.ToTensor(), T.Normalize(mean, std)])


class M3ITransform:
    """PIL image -> ``(view1, view2, geometry, mix)``.

    Args:
        input_size: view side in pixels (224); patch_size: the stride of the token grid (16).
        mix_ratio_a: fraction of the grid that shows image A (0.5 [U]; 0.4 matches SiameseIM's 118/196 masking).
        crop_min: smallest crop area (SiameseIM 0.08).
        min_mask_block: smallest block of the mask generator (SiameseIM 16).
        blur_p, solarize_p: per view (SiameseIM ``(1.0, 0.1)`` and ``(0.0, 0.2)``).
        jitter_p, grayscale_p: colour jitter / grayscale probabilities (BYOL 0.8 / 0.2).

    Returns per call: ``view1``, ``view2`` float32 ``(3, S, S)``; ``geometry`` float32 ``(6,)``; ``mix`` bool
    ``(N,)`` with exactly ``K_A`` True (row-major).

    Raises:
        ValueError: ``input_size`` not divisible by ``patch_size`` or a bad ``mix_ratio_a``.
    """

    def __init__(self, input_size: int = 224, patch_size: int = 16, mix_ratio_a: float = 0.5, *,
                 crop_min: float = 0.08, min_mask_block: int = 16, blur_p: Sequence[float] = (1.0, 0.1),
                 solarize_p: Sequence[float] = (0.0, 0.2), jitter_p: float = 0.8, grayscale_p: float = 0.2,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        if input_size % patch_size:
            raise ValueError(f"data.input_size={input_size} is not divisible by the token stride {patch_size}")
        grid = input_size // patch_size
        self.count_a = count_a(grid, mix_ratio_a)
        self.crop = PairedViewCrop(input_size, scale=(crop_min, 1.0))
        self.color1 = byol_color_transform(blur_p[0], solarize_p[0], jitter_p=jitter_p, grayscale_p=grayscale_p)
        self.color2 = byol_color_transform(blur_p[1], solarize_p[1], jitter_p=jitter_p, grayscale_p=grayscale_p)
        self.format = eval_transform(mean, std)
        self.masks = BlockMaskGenerator(grid, grid * grid - self.count_a,
                                        min_num_patches=min(min_mask_block, grid * grid - self.count_a))

    def __repr__(self) -> str:
        return f"M3ITransform({self.crop}, K_A={self.count_a}, B mask {self.masks})"

    def __call__(self, image: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        v1, v2, geometry = self.crop(image)
        x1 = self.format(self.color1(v1))
        x2 = self.format(self.color2(v2))
        mix = torch.from_numpy(self.masks()).reshape(-1) == 0
        return x1, x2, geometry, mix
