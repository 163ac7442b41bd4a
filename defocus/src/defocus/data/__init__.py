"""Datasets: the embedded digits-on-canvas default and ImageNet readers (ImageFolder or list files)."""

from .digits import DigitsCanvas, build_digits_loaders

__all__ = ["DigitsCanvas", "build_digits_loaders"]
