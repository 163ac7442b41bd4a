"""mmseg's ADE20K training pipeline on tensors, and ImageNet normalisation of (image, label) pairs.

Both take and return ``(image (3, H, W) float in [0, 1] or normalised, label (H, W) int64)`` so that they plug
into :class:`repro_shared.dense.SegmentationFolder` as its ``transform``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SegTrainTransform", "normalize_pair"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_pair(image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``((image - mean) / std, label)`` with the ImageNet mean / std per channel; the label is untouched."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device)[:, None, None]
    return (image - mean) / std, label


class SegTrainTransform:
    """mmseg's training pipeline without photometric distortion (the ViT UperNet ADE20K recipes):

    1. ``Resize(img_scale=scale, ratio_range=ratio_range, keep_ratio=True)``: a ratio ``r ~ U(ratio_range)``, then
       the largest rescale with long side <= ``max(scale) * r`` and short side <= ``min(scale) * r`` (bilinear for
       the image, nearest for the label);
    2. ``RandomCrop(crop)`` after padding to at least ``crop`` (image with 0, label with ``ignore_index``; mmseg
       pads after the crop, which gives the same crop positions' contents);
    3. horizontal flip with p 0.5; 4. ImageNet normalisation (``normalize=True``).

    Randomness comes from the torch global RNG (seeded per sample by ``repro_shared.data`` loaders).
    """

    def __init__(self, scale: tuple[int, int], ratio_range: tuple[float, float], crop: int, ignore_index: int = 255,
                 normalize: bool = True):
        self.scale, self.ratio, self.crop = tuple(scale), tuple(ratio_range), int(crop)
        self.ignore, self.normalize = int(ignore_index), bool(normalize)

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = image.shape[-2:]
        r = float(torch.empty(1).uniform_(*self.ratio))
        s = min(max(self.scale) * r / max(h, w), min(self.scale) * r / min(h, w))
        nh, nw = max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        label = F.interpolate(label[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
        ph, pw = max(self.crop - nh, 0), max(self.crop - nw, 0)
        image = F.pad(image, (0, pw, 0, ph))
        label = F.pad(label, (0, pw, 0, ph), value=self.ignore)
        y = int(torch.randint(0, image.shape[-2] - self.crop + 1, (1,)))
        x = int(torch.randint(0, image.shape[-1] - self.crop + 1, (1,)))
        image, label = image[:, y:y + self.crop, x:x + self.crop], label[y:y + self.crop, x:x + self.crop]
        if bool(torch.rand(1) < 0.5):
            image, label = image.flip(-1), label.flip(-1)
        return normalize_pair(image, label) if self.normalize else (image, label)
