"""Downstream ViT classifiers on timm's ``VisionTransformer`` (the official ``models_vit`` with global pooling).

Global average pooling over the patch tokens (CLS excluded) -> ``fc_norm`` (LayerNorm eps 1e-6) -> ``head``;
fixed sin-cos position table (row first, as the pre-training model; frozen). The encoder's parameter names are
those of :class:`sim.models.SiameseIM`'s online encoder, so pre-trained weights load with a key filter
(:func:`sim.convert.encoder_state_dict`).
"""

from __future__ import annotations

from functools import partial

import timm
import torch
from torch import nn

from repro_shared.finetune import BNLinearHead, freeze_except
from repro_shared.ssl.geometry import absolute_sincos_embedding

from .siameseim import ENCODER_VARIANTS

__all__ = ["build_classifier", "build_linear_probe"]


def build_classifier(variant: str, num_classes: int, *, img_size: int = 224, drop_path_rate: float = 0.1,
                     head_init_std: float = 2e-5, init_values: float | None = None) -> timm.models.VisionTransformer:
    """MAE fine-tuning classifier: timm ViT with ``global_pool="avg"``, ``fc_norm``, a fixed frozen sin-cos
    ``pos_embed`` and ``head`` weight ``trunc_normal(std=head_init_std)``, bias 0 (``num_classes=0``: no head,
    a feature extractor for the dense-transfer trunks and the few-shot probe).

    Raises:
        ValueError: unknown ``variant`` (lists the known ones) or ``img_size`` not divisible by the patch.
    """
    if variant not in ENCODER_VARIANTS:
        raise ValueError(f"unknown SiameseIM variant {variant!r}; known: {', '.join(ENCODER_VARIANTS)}")
    v = ENCODER_VARIANTS[variant]
    if img_size % v["patch_size"]:
        raise ValueError(f"image size {img_size} is not divisible by the patch size {v['patch_size']}")
    model = timm.models.VisionTransformer(
        img_size=img_size, patch_size=v["patch_size"], embed_dim=v["embed_dim"], depth=v["depth"],
        num_heads=v["num_heads"], mlp_ratio=4.0, qkv_bias=True, num_classes=num_classes, global_pool="avg",
        fc_norm=True, class_token=True, init_values=init_values, drop_path_rate=drop_path_rate,
        norm_layer=partial(nn.LayerNorm, eps=1e-6))
    grid = img_size // v["patch_size"]
    with torch.no_grad():
        model.pos_embed.copy_(absolute_sincos_embedding(v["embed_dim"], grid)[None])
    model.pos_embed.requires_grad_(False)
    if num_classes > 0:
        nn.init.trunc_normal_(model.head.weight, std=head_init_std)
        nn.init.zeros_(model.head.bias)
    return model


def build_linear_probe(variant: str, num_classes: int, *, img_size: int = 224) -> timm.models.VisionTransformer:
    """MAE linear probe: the classifier without drop path, ``head = BN(affine=False) + Linear(std 0.01)``, and
    every parameter frozen except the head (``fc_norm`` stays at weight 1, bias 0: a plain normalisation)."""
    model = build_classifier(variant, num_classes, img_size=img_size, drop_path_rate=0.0)
    model.head = BNLinearHead(model.embed_dim, num_classes)
    freeze_except(model, ["head."])
    return model
