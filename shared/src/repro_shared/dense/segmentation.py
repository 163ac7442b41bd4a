"""UperNet semantic segmentation on a ViT (the MAE / BEiT mmseg recipe), with segmentation-models-pytorch's
``UPerNetDecoder``.

mmseg's ``upernet_mae-base`` = ViT blocks (3, 5, 7, 11) -> ``Feature2Pyramid`` (x4, x2, x1, x0.5) -> UPerHead
(768 channels, PPM scales 1, 2, 3, 6, dropout 0.1) + an auxiliary FCN head on the third level (256
channels, one conv, loss weight 0.4). Here the UPerHead is smp's ``UPerNetDecoder`` (same PPM + FPN + 3x3
fusion with BN-ReLU convs), which additionally LayerNorms each input level; the classifier is a 1x1 conv
after dropout, logits are upsampled bilinearly to the input size.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
from torch import nn

from .pyramid import Feature2Pyramid

__all__ = ["UperNetSegmentor", "segmentation_loss"]


class _FCNHead(nn.Sequential):
    """mmseg ``FCNHead`` with one conv: 3x3 conv-BN-ReLU, dropout, 1x1 classifier."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float):
        super().__init__(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=True), nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))


class UperNetSegmentor(nn.Module):
    """ViT trunk -> Feature2Pyramid -> UPerNet decoder -> per-pixel logits.

    Args:
        trunk: images ``(B, 3, H, W)`` -> four maps ``(B, C, H/p, W/p)`` (e.g.
            ``TimmViTTrunk(vit, out_indices=(3, 5, 7, 11))``); needs ``embed_dim``.
        num_classes: ``K`` (ADE20K: 150).
        rescales: the pyramid factors of the four maps.
        channels: decoder width (768 in the MAE recipe).
        aux_channels: width of the auxiliary FCN head on level ``aux_index``; 0 disables it.
        dropout: before each classifier (0.1).

    Forward: images -> ``{"out": (B, K, H, W)}`` plus ``"aux": (B, K, H, W)`` when the auxiliary head exists.
    """

    def __init__(self, trunk: nn.Module, num_classes: int, *, rescales: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 channels: int = 768, aux_channels: int = 256, aux_index: int = 2, dropout: float = 0.1):
        super().__init__()
        dim = int(trunk.embed_dim)
        self.trunk = trunk
        self.neck = Feature2Pyramid(dim, rescales)
        n = len(rescales)
        # smp's decoder takes [stride 1, stride 2, stride 4, ...] and uses the levels from index 2 on
        self.decoder = UPerNetDecoder(encoder_channels=[0, 0] + [dim] * n, encoder_depth=n + 1,
                                      decoder_channels=channels)
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))
        self.aux_index = int(aux_index)
        self.aux_head = _FCNHead(dim, aux_channels, num_classes, dropout) if aux_channels > 0 else None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        size = images.shape[-2:]
        feats = self.neck(self.trunk(images))
        x = self.decoder([images, images] + list(feats))  # the first two entries are skipped by the decoder
        out = {"out": F.interpolate(self.classifier(x), size=size, mode="bilinear", align_corners=False)}
        if self.aux_head is not None:
            out["aux"] = F.interpolate(self.aux_head(feats[self.aux_index]), size=size, mode="bilinear",
                                       align_corners=False)
        return out


def segmentation_loss(outputs: dict[str, torch.Tensor], target: torch.Tensor, *, aux_weight: float = 0.4,
                      ignore_index: int = 255) -> dict[str, torch.Tensor]:
    """Pixel cross-entropy of ``outputs["out"]`` plus ``aux_weight`` x that of ``outputs["aux"]`` when present.

    Args:
        outputs: from :class:`UperNetSegmentor`, logits ``(B, K, H, W)``.
        target: ``(B, H, W)`` int64 labels, ``ignore_index`` for unlabelled pixels.

    Returns:
        ``{"loss": total, "loss_seg": ..., "loss_aux": ...}`` (scalars; ``loss_aux`` only with an aux head).
    """
    terms = {"loss_seg": F.cross_entropy(outputs["out"].float(), target, ignore_index=ignore_index)}
    if "aux" in outputs:
        terms["loss_aux"] = aux_weight * F.cross_entropy(outputs["aux"].float(), target, ignore_index=ignore_index)
    return {"loss": sum(terms.values()), **terms}
