"""Image transforms and Mixup/CutMix of the MAE fine-tuning and linear-probing recipes (timm / torchvision)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "build_train_transform", "build_eval_transform",
           "RandomResizedCropNoLoop", "build_linprobe_transform", "build_mixup"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _posterize_zero_bits_safe(img: Any, bits_to_keep: int, **_: Any) -> Any:
    """timm's posterize with Pillow < 12 semantics: keeping 0 bits gives a black image. timm's
    ``PosterizeIncreasing`` asks for 0 bits at magnitude 10 (reached by ``rand-m9-mstd0.5``'s noise), which
    Pillow >= 12 refuses with "bits must be between or equal to 1 and 8", stopping training."""
    from PIL import ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits_to_keep)


def _patch_timm_posterize() -> None:
    """Route timm's posterize ops through :func:`_posterize_zero_bits_safe` (idempotent)."""
    from timm.data import auto_augment as aa

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        aa.NAME_TO_OP[name] = _posterize_zero_bits_safe


def build_train_transform(input_size: int = 224, *, auto_augment: str | None = "rand-m9-mstd0.5-inc1",
                          re_prob: float = 0.25, re_mode: str = "pixel", re_count: int = 1,
                          color_jitter: float | None = None, scale: tuple[float, float] = (0.08, 1.0),
                          interpolation: str = "bicubic", mean: Sequence[float] = IMAGENET_MEAN,
                          std: Sequence[float] = IMAGENET_STD) -> Any:
    """MAE fine-tuning train transform: timm ``create_transform`` (RandomResizedCrop ``scale``, bicubic, hflip
    0.5, RandAugment ``auto_augment``, ToTensor, Normalize, RandomErasing ``re_prob`` / ``re_mode`` /
    ``re_count``) on a PIL image -> float ``(3, input_size, input_size)``."""
    from timm.data import create_transform

    _patch_timm_posterize()
    return create_transform(input_size=input_size, is_training=True, color_jitter=color_jitter,
                            auto_augment=auto_augment, interpolation=interpolation, re_prob=re_prob,
                            re_mode=re_mode, re_count=re_count, scale=scale, mean=tuple(mean), std=tuple(std))


def build_eval_transform(input_size: int = 224, *, crop_pct: float | None = None,
                         interpolation: InterpolationMode = InterpolationMode.BICUBIC,
                         mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> T.Compose:
    """Resize the shorter side to ``int(input_size / crop_pct)`` then CenterCrop ``input_size`` (MAE: crop_pct
    224/256 up to 224 px, 1.0 above), ToTensor, Normalize."""
    if crop_pct is None:
        crop_pct = 224 / 256 if input_size <= 224 else 1.0
    return T.Compose([T.Resize(int(input_size / crop_pct), interpolation=interpolation), T.CenterCrop(input_size),
                      T.ToTensor(), T.Normalize(mean, std)])


class RandomResizedCropNoLoop(T.RandomResizedCrop):
    """RandomResizedCrop with one draw and no retry loop (BYOL's TF crop, MAE ``util/crop.py``): the box of
    area ``U(scale) * H * W`` and log-uniform aspect is clipped to the image instead of being re-drawn."""

    @staticmethod
    def get_params(img: Any, scale: Sequence[float], ratio: Sequence[float]) -> tuple[int, int, int, int]:
        width, height = TF.get_image_size(img)
        target_area = height * width * torch.empty(1).uniform_(scale[0], scale[1]).item()
        log_ratio = torch.log(torch.tensor(ratio))
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = min(int(round(math.sqrt(target_area * aspect))), width)
        h = min(int(round(math.sqrt(target_area / aspect))), height)
        i = torch.randint(0, height - h + 1, size=(1,)).item()
        j = torch.randint(0, width - w + 1, size=(1,)).item()
        return i, j, h, w


def build_linprobe_transform(input_size: int = 224, *, scale: tuple[float, float] = (0.08, 1.0),
                             mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> T.Compose:
    """MAE linear-probe train transform: :class:`RandomResizedCropNoLoop` (bicubic, area ``scale``), hflip,
    ToTensor, Normalize."""
    return T.Compose([RandomResizedCropNoLoop(input_size, scale=scale, interpolation=InterpolationMode.BICUBIC),
                      T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])


def build_mixup(num_classes: int, *, mixup: float = 0.8, cutmix: float = 1.0, prob: float = 1.0,
                switch_prob: float = 0.5, mode: str = "batch", label_smoothing: float = 0.1) -> Any:
    """timm ``Mixup`` (MAE: mixup 0.8, cutmix 1.0, prob 1.0, switch 0.5, per batch, smoothing 0.1), or ``None``
    when both alphas are 0 (then train with label-smoothed cross-entropy). The batch size must be even."""
    if mixup <= 0 and cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, switch_prob=switch_prob, mode=mode,
                 label_smoothing=label_smoothing, num_classes=num_classes)
