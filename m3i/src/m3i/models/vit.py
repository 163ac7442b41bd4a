"""ViT backbones of the M3I ablation rows (spec m3i.md section 2.2): timm's ``VisionTransformer`` with fixed 2-D
sin-cos position embeddings (zero for CLS, row before column as SiameseIM) and token-level mixing of two images.

Mixing at token level is exact pixel mixing at patch granularity, because the patch embedding is linear per
patch: ``tokens = where(M, embed(A), embed(B))`` with ``M (B, N)`` True where image A is visible. The backbone's
parameter names are timm's (``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.i.*``, ``norm``), so a
pre-trained trunk loads into ``timm.create_model(name)`` by dropping the global head (``clip_projector``,
``fc_norm``), which carries InternImage-H's names.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

from repro_shared.ssl.geometry import absolute_sincos_embedding

from .layers import build_norm_layer
from .pooling import AttentionPoolingBlock

__all__ = ["VIT_VARIANTS", "ViTBackbone", "build_vit"]

#: timm shapes of the paper's ViTs plus the CPU size of the tiny pilot (spec section 8)
VIT_VARIANTS: dict[str, dict] = {
    "tiny": dict(img_size=32, patch_size=4, embed_dim=96, depth=4, num_heads=3),
    "vit_base_patch16": dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch16": dict(img_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16),
}


class ViTBackbone(VisionTransformer):
    """timm ViT (no classifier) + an attention-pooling global head.

    Args:
        img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, drop_path_rate: timm's.
        global_dim: width of the global (category / text) feature; pool_heads: heads of the attention pooling
            (default ``num_heads``).
        train_patch_embed: SiameseIM keeps the patch embedding at its random init (False).

    Attributes:
        dense_dim: ``embed_dim``; global_dim; grid_size ``G`` (``N = G*G`` tokens); mixes_tokens: True.
    """

    mixes_tokens = True

    def __init__(self, *, img_size: int = 224, patch_size: int = 16, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0, global_dim: int = 768,
                 pool_heads: int | None = None, train_patch_embed: bool = False):
        super().__init__(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
                         num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, num_classes=0, global_pool="",
                         drop_path_rate=drop_path_rate)
        self.grid_size = img_size // patch_size
        self.dense_dim, self.global_dim = embed_dim, global_dim
        self.pos_embed.requires_grad_(False)
        with torch.no_grad():
            self.pos_embed.copy_(absolute_sincos_embedding(embed_dim, self.grid_size)[None])
        self.clip_projector = AttentionPoolingBlock(embed_dim, pool_heads or num_heads, qkv_bias=True,
                                                    out_dim=global_dim)
        self.fc_norm = build_norm_layer(global_dim, "LN", eps=1e-6)
        if not train_patch_embed:
            self.patch_embed.requires_grad_(False)

    def forward_dense(self, x: torch.Tensor, x_b: torch.Tensor | None = None,
                      mix: torch.Tensor | None = None) -> torch.Tensor:
        """Patch tokens after the final norm, ``(B, N, D)`` (CLS dropped).

        Args:
            x: image A ``(B, 3, S, S)``; x_b: image B (optional); mix: bool ``(B, N)``, True = token of A.
        """
        t = self.patch_embed(x)
        if x_b is not None:
            t = torch.where(mix[..., None], t, self.patch_embed(x_b))
        t = self.norm_pre(self.patch_drop(self._pos_embed(t)))
        t = self.norm(self.blocks(t))
        return t[:, self.num_prefix_tokens:]

    def forward_global(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Attention pooling (+ LN) of ``tokens (B, N, D)`` over ``keep (B, N)`` -> ``(B, global_dim)``."""
        return self.fc_norm(self.clip_projector(tokens, keep))


def build_vit(variant: str, **overrides) -> ViTBackbone:
    """A :class:`ViTBackbone` of a named size (:data:`VIT_VARIANTS`), arguments overridden.

    Raises:
        ValueError: an unknown variant (lists the known ones).
    """
    if variant not in VIT_VARIANTS:
        raise ValueError(f"unknown ViT variant {variant!r}; known: {', '.join(VIT_VARIANTS)}")
    return ViTBackbone(**{**VIT_VARIANTS[variant], **overrides})
