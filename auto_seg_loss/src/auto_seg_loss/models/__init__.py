"""nn.Modules only: the DeepLabv3+ segmenter (spec §2)."""

from .deeplabv3plus import DeepLabV3Plus, build_segmenter

__all__ = ["DeepLabV3Plus", "build_segmenter"]
