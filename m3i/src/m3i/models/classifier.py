"""Classifiers for fine-tuning and linear probing a pre-trained backbone.

- ViT rows: timm's ``VisionTransformer`` with global average pooling + ``fc_norm`` (the MAE fine-tuning model),
  the M3I backbone's trunk names (``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks``) unchanged, the position
  table initialised to the fixed sin-cos values (then trained, as MAE's fine-tuning).
- InternImage rows: :class:`m3i.models.internimage.InternImage` itself (official classifier head).
- :class:`LinearProbe`: a frozen backbone's pooled features -> ``BNLinearHead`` (MAE linear probing).
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from repro_shared.finetune import BNLinearHead
from repro_shared.ssl.geometry import absolute_sincos_embedding

from .internimage import InternImage

__all__ = ["build_vit_classifier", "LinearProbe"]


def build_vit_classifier(num_classes: int, *, img_size: int, patch_size: int, embed_dim: int, depth: int,
                         num_heads: int, drop_path_rate: float = 0.1, **_: object) -> VisionTransformer:
    """timm ViT with average pooling and ``fc_norm`` (MAE fine-tuning), sin-cos initialised position table."""
    model = VisionTransformer(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
                              num_heads=num_heads, qkv_bias=True, num_classes=num_classes, global_pool="avg",
                              drop_path_rate=drop_path_rate)
    with torch.no_grad():
        model.pos_embed.copy_(absolute_sincos_embedding(embed_dim, img_size // patch_size)[None])
    nn.init.trunc_normal_(model.head.weight, std=2e-5)  # MAE fine-tuning head init
    return model


class LinearProbe(nn.Module):
    """Frozen backbone + MAE's ``BatchNorm1d(affine=False)`` + ``Linear`` head.

    Features: the mean of the dense tokens for an M3I ViT backbone (``forward_dense``), the official pooled
    features for InternImage (``forward_features`` for T..XL, ``forward_clip_projector`` for H/G).

    Args:
        backbone: the pre-trained network (its parameters are frozen and it stays in eval mode).
        dim: feature width; num_classes: classes of the probe.
    """

    def __init__(self, backbone: nn.Module, dim: int, num_classes: int):
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.head = BNLinearHead(dim, num_classes)

    def train(self, mode: bool = True) -> "LinearProbe":
        super().train(mode)
        self.backbone.train(False)  # frozen features: no drop path, BN statistics fixed
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S) -> (B, dim)`` frozen features."""
        with torch.no_grad():
            bb = self.backbone
            if isinstance(bb, InternImage):
                return bb.forward_clip_projector(x) if bb.use_clip_projector else bb.forward_features(x)
            return bb.forward_dense(x).mean(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
