"""The ViT that downstream tasks start from: the ADDP encoder as a timm ``VisionTransformer`` (spec §2.4).

Official fine-tuning model (``models_vit.py``): timm ViT at 256 px with ``qkv_bias``, LayerNorm eps 1e-6,
no LayerScale, stochastic depth linear in 0..drop_path, classification by the **mean of the patch tokens**
(cls excluded) followed by ``fc_norm`` and the head (the final ``norm`` is removed), head weights
``trunc_normal(std=2e-5)``. The pre-training LayerNorm after the embeddings (``tokenizer_norm``) is dropped
by the official loading; ``keep_tokenizer_norm=True`` keeps it as ``norm_pre``.
"""

from __future__ import annotations

from functools import partial

from timm.models.vision_transformer import VisionTransformer
from torch import nn

__all__ = ["VIT_VARIANTS", "build_vit"]

# encoder sizes of the ADDP variants (models.addp.ADDP_VARIANTS), as timm ViTs
VIT_VARIANTS: dict[str, dict] = {
    "vit_base_patch16": dict(img_size=256, patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch16": dict(img_size=256, patch_size=16, embed_dim=1024, depth=24, num_heads=16),
    "vit_tiny": dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4),
}


def build_vit(variant: str, num_classes: int, *, img_size: int | None = None, drop_path_rate: float = 0.0,
              keep_tokenizer_norm: bool = False, head_init_std: float = 2e-5) -> VisionTransformer:
    """The fine-tuning ViT (mean-pooled patch tokens -> ``fc_norm`` -> ``head``).

    Args:
        variant: a key of ``VIT_VARIANTS``.
        num_classes: head outputs (0: no head, for dense backbones).
        img_size: input size (default the variant's); the position table is resized when loading weights.
        keep_tokenizer_norm: add the pre-training embedding LayerNorm as ``norm_pre`` (the patch embedding
            keeps its bias, unlike timm's ``pre_norm=True``).

    Raises:
        ValueError: for an unknown variant, listing the known ones.
    """
    if variant not in VIT_VARIANTS:
        raise ValueError(f"unknown ViT variant {variant!r}; known: {', '.join(VIT_VARIANTS)}")
    kw = dict(VIT_VARIANTS[variant])
    if img_size is not None:
        kw["img_size"] = int(img_size)
    vit = VisionTransformer(num_classes=num_classes, global_pool="avg", qkv_bias=True, mlp_ratio=4.0,
                            norm_layer=partial(nn.LayerNorm, eps=1e-6), drop_path_rate=drop_path_rate, **kw)
    if keep_tokenizer_norm:
        vit.norm_pre = nn.LayerNorm(kw["embed_dim"], eps=1e-6)
    if num_classes:
        nn.init.trunc_normal_(vit.head.weight, std=head_init_std)
        nn.init.zeros_(vit.head.bias)
    return vit
