"""Datasets: the embedded digits-on-canvas default, ImageNet readers (ImageFolder or list files), COCO-format
detection data, and the resumable training loaders."""

from .digits import DigitsCanvas, build_digits_datasets
from .sampler import RepeatAugBatchSampler, RepeatedDataset, build_train_loader

__all__ = ["DigitsCanvas", "build_digits_datasets", "RepeatAugBatchSampler", "RepeatedDataset", "build_train_loader"]
