"""Training / test pipelines of a PIL image and its target (torchvision v2, boxes as ``BoundingBoxes``).

* ``ssd512``: the PAP paper's training pipeline (official ``coco500_detection_augm``, spec §3.7): mmdet
  ``PhotoMetricDistortion`` (:mod:`.photometric`), ``Expand`` (ratio 1-4, mean fill, p = 0.5),
  ``MinIoURandomCrop`` (min IoU {0.1, ..., 0.9} or no crop, min crop 0.3), resize to ``train_size`` x
  ``train_size`` without keeping the ratio, horizontal flip 0.5. The model resizes test images.
* ``detr_multiscale``: Deformable DETR's training pipeline (official ``datasets/coco.py``): flip 0.5,
  then with probability 1/2 each either a resize of the short side to one of 480, 512, ..., 800 (long side
  at most 1333), or a resize to 400 / 500 / 600, a random crop of 384-600 px per side and the multi-scale
  resize; the model does not resize in training (``model.train_size: null``) and tests at 800 / 1333.
* ``flip``: flip only (tiny runs); ``none``: tensor conversion only.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from .photometric import PhotoMetricDistortion

IMAGENET_MEAN = (0.485, 0.456, 0.406)
TRANSFORMS = ("ssd512", "detr_multiscale", "flip", "none")
DETR_SCALES = tuple(range(480, 801, 32))


class RandomSizeCrop(T.Transform):
    """DETR's ``RandomSizeCrop``: crop a random ``h x w`` region with ``h`` uniform in
    [min_size, min(H, max_size)] and ``w`` likewise (integers), at a uniform position; boxes are shifted
    and clipped (degenerate ones are removed by ``SanitizeBoundingBoxes`` after)."""

    def __init__(self, min_size: int, max_size: int):
        super().__init__()
        self.min_size, self.max_size = int(min_size), int(max_size)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        img_h, img_w = T.query_size(flat_inputs)
        w = int(torch.randint(self.min_size, max(min(img_w, self.max_size), self.min_size) + 1, ()))
        h = int(torch.randint(self.min_size, max(min(img_h, self.max_size), self.min_size) + 1, ()))
        w, h = min(w, img_w), min(h, img_h)
        top = int(torch.randint(0, img_h - h + 1, ()))
        left = int(torch.randint(0, img_w - w + 1, ()))
        return {"top": top, "left": left, "height": h, "width": w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return TF.crop(inpt, **params)


def build_transforms(kind: str, train_size: int = 512) -> T.Compose:
    """The pipeline ``kind`` (module docstring); the result maps (PIL image, {boxes, labels}) to a float
    image (3, H, W) and the transformed target.

    Raises:
        ValueError: unknown ``kind`` (lists the known ones).
    """
    to_float = [T.ToImage(), T.ToDtype(torch.float32, scale=True)]
    if kind == "none":
        return T.Compose(to_float)
    if kind == "flip":
        return T.Compose([*to_float, T.RandomHorizontalFlip(0.5)])
    if kind == "ssd512":
        return T.Compose([
            *to_float,
            PhotoMetricDistortion(brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                                  hue_delta=18),
            T.RandomZoomOut(fill={tv_tensors.Image: list(IMAGENET_MEAN), "others": 0}, side_range=(1.0, 4.0), p=0.5),
            T.RandomIoUCrop(min_scale=0.3, sampler_options=[0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]),
            T.Resize((train_size, train_size), antialias=True),
            T.RandomHorizontalFlip(0.5),
            T.SanitizeBoundingBoxes(min_size=1),
        ])
    if kind == "detr_multiscale":
        multiscale = T.RandomShortestSize(list(DETR_SCALES), max_size=1333, antialias=True)
        return T.Compose([
            *to_float,
            T.RandomHorizontalFlip(0.5),
            T.RandomChoice([multiscale, T.Compose([T.RandomShortestSize([400, 500, 600], antialias=True),
                                                   RandomSizeCrop(384, 600), multiscale])]),
            T.SanitizeBoundingBoxes(min_size=1),
        ])
    raise ValueError(f"unknown transform {kind!r}; known: {', '.join(TRANSFORMS)}")
