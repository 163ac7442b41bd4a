"""Models: :class:`SiameseIM` (pre-training) and the downstream timm ViT classifiers."""

from .classifier import build_classifier, build_linear_probe
from .siameseim import ENCODER_VARIANTS, PermuteBN, SiameseIM, SiameseIMOutput, build_siameseim

__all__ = ["build_classifier", "build_linear_probe", "ENCODER_VARIANTS", "PermuteBN", "SiameseIM", "SiameseIMOutput",
           "build_siameseim"]
