"""The asymmetric BYOL / MoCo-v3 colour augmentations of SiameseIM's two views (spec sim.md section 2.4).

=========  ==========================================  =========  ===========================  ==============
view       ColorJitter(0.4, 0.4, 0.2, 0.1)              Grayscale  GaussianBlur sigma~U(0.1, 2)  Solarize (128)
=========  ==========================================  =========  ===========================  ==============
view 1     p = 0.8                                      p = 0.2    p = 1.0                      none
view 2     p = 0.8                                      p = 0.2    p = 0.1                      p = 0.2
=========  ==========================================  =========  ===========================  ==============

PIL operations as the official code (blur radius = sigma, drawn with Python's ``random``; solarize through
torchvision's ``RandomSolarize``, which calls ``PIL.ImageOps.solarize`` and draws one ``torch.rand`` like
``RandomApply``).
"""

from __future__ import annotations

import random
from typing import Any

from torchvision import transforms as T

__all__ = ["GaussianBlurPIL", "byol_color_transform"]


class GaussianBlurPIL:
    """PIL Gaussian blur with radius ``sigma ~ U(sigma_min, sigma_max)`` (Python ``random.uniform``)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)):
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __repr__(self) -> str:
        return f"GaussianBlurPIL(sigma={self.sigma})"

    def __call__(self, img: Any) -> Any:
        from PIL import ImageFilter

        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def byol_color_transform(blur_p: float, solarize_p: float, *, jitter_p: float = 0.8,
                         grayscale_p: float = 0.2) -> T.Compose:
    """Colour jitter, grayscale, blur and (when ``solarize_p > 0``) solarize on a PIL image.

    SiameseIM: view 1 ``byol_color_transform(1.0, 0.0)``, view 2 ``byol_color_transform(0.1, 0.2)``.
    """
    ops: list[Any] = [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=jitter_p),
                      T.RandomGrayscale(p=grayscale_p),
                      T.RandomApply([GaussianBlurPIL()], p=blur_p)]
    if solarize_p > 0:
        ops.append(T.RandomSolarize(threshold=128, p=solarize_p))
    return T.Compose(ops)
