"""The SiameseIM pre-training sample (official ``DataAugmentationForSIM`` + ``ImagenetWithMask``).

From one PIL image: independent flips, independent RandomResizedCrops (``repro_shared.ssl.geometry``),
asymmetric colour (view 1: blur always; view 2: blur 0.1, solarize 0.2), ToTensor + Normalize, then the block
mask of view 1 (``repro_shared.ssl.masking``). The random draws come in the official order: torch's RNG for
flips, crops and colour (plus Python's for the blur radius), then Python's for the mask.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torchvision import transforms as T

from repro_shared.ssl.augment import byol_color_transform
from repro_shared.ssl.geometry import PairedViewCrop
from repro_shared.ssl.masking import BlockMaskGenerator

__all__ = ["SiameseIMTransform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SiameseIMTransform:
    """PIL image -> ``(x1, x2, geometry, mask)``.

    Args:
        input_size: view side in pixels (224).
        patch_size: the model's patch (16); ``input_size`` must be a multiple.
        num_masked: masked patches of view 1 (118 of 196).
        crop_min: smallest crop area fraction (0.08).
        min_mask_block: smallest block of the mask generator (16).
        mean, std: normalisation.

    Returns per call: ``x1``, ``x2`` float32 ``(3, S, S)``; ``geometry`` float32 ``(6,)``; ``mask`` bool
    ``(G, G)`` with exactly ``num_masked`` True.

    Raises:
        ValueError: ``input_size`` not divisible by ``patch_size``.
    """

    def __init__(self, input_size: int = 224, patch_size: int = 16, num_masked: int = 118, *, crop_min: float = 0.08,
                 min_mask_block: int = 16, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        if input_size % patch_size:
            raise ValueError(f"data.input_size={input_size} is not divisible by the patch size {patch_size}")
        self.crop = PairedViewCrop(input_size, scale=(crop_min, 1.0))
        self.color1 = byol_color_transform(blur_p=1.0, solarize_p=0.0)
        self.color2 = byol_color_transform(blur_p=0.1, solarize_p=0.2)
        self.format = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
        self.masks = BlockMaskGenerator(input_size // patch_size, num_masked, min_num_patches=min_mask_block)

    def __repr__(self) -> str:
        return f"SiameseIMTransform({self.crop}, {self.masks})"

    def __call__(self, image: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        v1, v2, geometry = self.crop(image)
        x1 = self.format(self.color1(v1))
        x2 = self.format(self.color2(v2))
        mask = torch.from_numpy(self.masks()).bool()
        return x1, x2, geometry, mask
