"""Multi-scale feature maps from a plain (single-stride) ViT.

- :class:`SimpleFeaturePyramid`: ViTDet (Li et al. 2022, detectron2 ``SimpleFeaturePyramid``): the last
  map of stride ``p`` is deconvolved / pooled to strides ``p/4, p/2, p, 2p`` (scale factors 4, 2, 1, 0.5),
  each followed by a 1x1 and a 3x3 conv with LayerNorm, plus P6 by a stride-2 max pool of the last level.
- :class:`Feature2Pyramid`: mmseg's neck for MAE/BEiT UperNet: four maps (from four blocks) rescaled by
  4, 2, 1, 0.5 without changing their width.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

__all__ = ["SimpleFeaturePyramid", "Feature2Pyramid"]


def _rescale_layers(dim: int, scale: float, norm: Callable[[int], nn.Module], halve: bool) -> tuple[nn.Module, int]:
    """Layers that resize a stride-p map by ``scale``; with ``halve`` (ViTDet) each 2x upsampling halves the
    width, otherwise (mmseg) the width is kept. Returns ``(module, out_width)``."""
    if scale == 4.0:
        d2 = dim // 2 if halve else dim
        d4 = dim // 4 if halve else dim
        return nn.Sequential(nn.ConvTranspose2d(dim, d2, 2, 2), norm(d2), nn.GELU(), nn.ConvTranspose2d(d2, d4, 2, 2)), d4
    if scale == 2.0:
        d2 = dim // 2 if halve else dim
        return nn.ConvTranspose2d(dim, d2, 2, 2), d2
    if scale == 1.0:
        return nn.Identity(), dim
    if scale == 0.5:
        return nn.MaxPool2d(2, 2), dim
    raise ValueError(f"scale factor {scale} is not supported; use 4, 2, 1 or 0.5")


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid on a trunk that returns one stride-``p`` map; a torchvision backbone.

    Args:
        trunk: module ``images (B, 3, H, W) -> [map (B, C, H/p, W/p), ...]`` (the last map is used), e.g.
            :class:`repro_shared.dense.TimmViTTrunk`; it needs ``patch_size`` and ``embed_dim`` attributes.
        out_channels: width of every level (256).
        scale_factors: (4, 2, 1, 0.5) gives strides p/4, p/2, p, 2p (4, 8, 16, 32 for p = 16).
        top_block: add ``"pool"`` = P6 (max pool, kernel 1, stride 2 of the last level), as ViTDet.

    Forward: images -> ``OrderedDict`` ``{"0": ..., "1": ..., ..., "pool": ...}`` of ``(B, out_channels, h_i, w_i)``,
    finest first (the names torchvision's RPN / RoI heads expect). ``out_channels`` and ``strides`` are
    attributes.
    """

    def __init__(self, trunk: nn.Module, out_channels: int = 256,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5), top_block: bool = True):
        super().__init__()
        self.trunk = trunk
        dim, p = int(trunk.embed_dim), int(trunk.patch_size)
        self.out_channels = int(out_channels)
        self.strides = [p / s for s in scale_factors] + ([2 * p / min(scale_factors)] if top_block else [])
        self.top_block = bool(top_block)
        self.stages = nn.ModuleList()
        for s in scale_factors:
            rescale, width = _rescale_layers(dim, float(s), LayerNorm2d, halve=True)
            self.stages.append(nn.Sequential(
                rescale,
                nn.Conv2d(width, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels)))
        for m in self.stages.modules():
            if isinstance(m, nn.Conv2d):  # detectron2's c2_xavier_fill
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        x = self.trunk(images)[-1]
        out = OrderedDict((str(i), stage(x)) for i, stage in enumerate(self.stages))
        if self.top_block:
            out["pool"] = F.max_pool2d(next(reversed(out.values())), kernel_size=1, stride=2, padding=0)
        return out


class Feature2Pyramid(nn.Module):
    """mmseg ``Feature2Pyramid``: rescale each of ``len(rescales)`` maps by its factor, keeping the width.

    Args:
        embed_dim: ``C`` of the input maps.
        rescales: one factor per input map (4, 2, 1, 0.5).
        norm: the norm between the two deconvolutions of the 4x branch (BatchNorm2d; SyncBN under DDP after
            ``nn.SyncBatchNorm.convert_sync_batchnorm``).

    Forward: list of ``(B, C, h, w)`` -> list of ``(B, C, h*s, w*s)``.
    """

    def __init__(self, embed_dim: int, rescales: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 norm: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.ops = nn.ModuleList(_rescale_layers(embed_dim, float(s), norm, halve=False)[0] for s in rescales)

    def forward(self, maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(maps) != len(self.ops):
            raise ValueError(f"expected {len(self.ops)} feature maps, got {len(maps)}")
        return [op(m) for op, m in zip(self.ops, maps)]
