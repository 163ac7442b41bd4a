"""Objectives: every method as its gradient (:mod:`.gradient_forms`), the original losses (:mod:`.originals`),
the shared surrogate and helpers (:mod:`.common`) and literal references of the formulas (:mod:`.reference`).

Configs pick one with Hydra's ``_target_`` (``configs/loss/*.yaml``).
"""

from .common import TARGETS, SiameseLoss, grad_as_loss, normalize, positive_similarity, symmetric_grad_loss
from .gradient_forms import (BarlowTwinsGradLoss, BYOLDirectPredGradLoss, CorrelationEMALoss, GradientLoss, MixInfo,
                             MoCoGradLoss, SimCLRGradLoss, UniGradLoss, VICRegGradLoss)
from .originals import BarlowTwinsLoss, BYOLLoss, InfoNCELoss, VICRegLoss

__all__ = ["TARGETS", "SiameseLoss", "grad_as_loss", "normalize", "positive_similarity", "symmetric_grad_loss",
           "GradientLoss", "CorrelationEMALoss", "UniGradLoss", "BYOLDirectPredGradLoss", "SimCLRGradLoss",
           "MoCoGradLoss", "BarlowTwinsGradLoss", "VICRegGradLoss", "MixInfo", "InfoNCELoss", "BYOLLoss",
           "BarlowTwinsLoss", "VICRegLoss"]
