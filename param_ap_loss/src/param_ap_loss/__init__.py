"""Parameterized AP Loss (Tao et al., NeurIPS 2021) on torchvision detectors."""

from .losses import GradScale, PAPLoss, exact_ap_loss, pap_loss_fast, pap_loss_reference
from .presets import PRESETS, get_preset

__all__ = ["GradScale", "PAPLoss", "PRESETS", "exact_ap_loss", "get_preset", "pap_loss_fast", "pap_loss_reference"]
