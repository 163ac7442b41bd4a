"""Data: the embedded tinted digits (default) and ImageNet folders."""

from .embedded import TintedDigits
from .imagenet import eval_transform, imagenet_folder, pretrain_transform

__all__ = ["TintedDigits", "eval_transform", "imagenet_folder", "pretrain_transform"]
