"""mmseg-style train/test pipelines for VOC and Cityscapes (spec §3.6), on PIL images / tensors.

Train: RandomResize(img_scale, ratio 0.5-2.0, keep ratio) -> RandomCrop(crop, cat_max_ratio 0.75)
-> RandomFlip(0.5) -> PhotoMetricDistortion -> Normalize(ImageNet mean/std, RGB) -> Pad(crop, seg 255).
Test: Resize to fit img_scale keeping the ratio -> Normalize; the label keeps its original size and the
logits are resized to it (mmseg whole-image inference).
Search reward (official proxy evaluation): resize the short side to 128 keeping the ratio, centre-crop
128x128, image and label alike (:class:`ShortSideCenterCropPipeline`).
PhotoMetricDistortion uses torchvision's colour ops (brightness delta 32, contrast and saturation 0.5-1.5,
hue delta 18/360), each with probability 0.5, contrast before or after the others at random: the same
recipe as mmseg, with torchvision's HSV arithmetic instead of OpenCV's.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def rescale_size(w: int, h: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv keep-ratio rescale: factor = min(long_target / long_edge, short_target / short_edge)."""
    long_t, short_t = max(scale), min(scale)
    f = min(long_t / max(w, h), short_t / min(w, h))
    return int(w * f + 0.5), int(h * f + 0.5)


def _normalize(img: Image.Image) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)
    return (x - MEAN) / STD


def photometric_distortion(img: torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8 -> uint8, mmseg PhotoMetricDistortion with torchvision ops."""
    def contrast(z):
        return TF.adjust_contrast(z, random.uniform(0.5, 1.5)) if random.random() < 0.5 else z

    if random.random() < 0.5:
        img = (img.float() + random.uniform(-32, 32)).clamp(0, 255).to(torch.uint8)
    first = random.random() < 0.5
    if first:
        img = contrast(img)
    if random.random() < 0.5:
        img = TF.adjust_saturation(img, random.uniform(0.5, 1.5))
    if random.random() < 0.5:
        img = TF.adjust_hue(img, random.uniform(-18, 18) / 360.0)
    if not first:
        img = contrast(img)
    return img


class TrainPipeline:
    def __init__(self, img_scale=(2048, 512), ratio_range=(0.5, 2.0), crop_size=(512, 512), cat_max_ratio=0.75,
                 flip_prob=0.5, ignore_index=255):
        self.img_scale, self.ratio_range = tuple(img_scale), tuple(ratio_range)
        self.crop_h, self.crop_w = crop_size
        self.cat_max_ratio, self.flip_prob, self.ignore_index = cat_max_ratio, flip_prob, ignore_index

    def _crop_box(self, lab: np.ndarray):
        h, w = lab.shape
        mh, mw = max(h - self.crop_h, 0), max(w - self.crop_w, 0)
        for _ in range(10):
            y0, x0 = random.randint(0, mh), random.randint(0, mw)
            crop = lab[y0:y0 + self.crop_h, x0:x0 + self.crop_w]
            _, cnt = np.unique(crop[crop != self.ignore_index], return_counts=True)
            if self.cat_max_ratio >= 1 or (len(cnt) > 1 and cnt.max() / cnt.sum() < self.cat_max_ratio):
                break
        return y0, x0

    def __call__(self, img: Image.Image, lab: Image.Image):
        r = random.uniform(*self.ratio_range)
        size = rescale_size(*img.size, (int(self.img_scale[0] * r), int(self.img_scale[1] * r)))
        img, lab = img.resize(size, Image.BILINEAR), lab.resize(size, Image.NEAREST)
        lab_np = np.asarray(lab)
        y0, x0 = self._crop_box(lab_np)
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[:, y0:y0 + self.crop_h, x0:x0 + self.crop_w]
        y = torch.from_numpy(lab_np.astype(np.int64))[y0:y0 + self.crop_h, x0:x0 + self.crop_w]
        if random.random() < self.flip_prob:
            x, y = x.flip(-1), y.flip(-1)
        x = (photometric_distortion(x).float() - MEAN) / STD
        ph, pw = self.crop_h - x.shape[1], self.crop_w - x.shape[2]
        if ph > 0 or pw > 0:
            x = torch.nn.functional.pad(x, (0, pw, 0, ph), value=0.0)
            y = torch.nn.functional.pad(y, (0, pw, 0, ph), value=self.ignore_index)
        return x, y


class EvalPipeline:
    def __init__(self, img_scale=(2048, 512)):
        self.img_scale = tuple(img_scale)

    def __call__(self, img: Image.Image, lab: Image.Image):
        img = img.resize(rescale_size(*img.size, self.img_scale), Image.BILINEAR)
        return _normalize(img), torch.from_numpy(np.asarray(lab).astype(np.int64))


class ShortSideCenterCropPipeline:
    """Resize so the short side is ``size`` (keep ratio; label nearest), centre-crop ``size`` x ``size``."""

    def __init__(self, size: int = 128):
        self.size = int(size)

    def __call__(self, img: Image.Image, lab: Image.Image):
        w, h = img.size
        f = self.size / min(w, h)
        nw, nh = max(self.size, int(w * f + 0.5)), max(self.size, int(h * f + 0.5))
        img, lab = img.resize((nw, nh), Image.BILINEAR), lab.resize((nw, nh), Image.NEAREST)
        x0, y0 = (nw - self.size) // 2, (nh - self.size) // 2
        box = (x0, y0, x0 + self.size, y0 + self.size)
        return _normalize(img.crop(box)), torch.from_numpy(np.asarray(lab.crop(box)).astype(np.int64))
