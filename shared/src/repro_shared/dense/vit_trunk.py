"""A timm-structured ViT as a dense backbone: patch-token maps of chosen blocks, at any input size."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TimmViTTrunk"]


class TimmViTTrunk(nn.Module):
    """Patch-token maps of a ViT with timm's structure, for images of any size divisible by the patch.

    The ViT must have timm ``VisionTransformer``'s attributes: ``patch_embed.proj`` (a ``Conv2d``),
    ``pos_embed`` ``(1, prefix + G*G, C)`` (or ``(1, G*G, C)`` with ``no_embed_class``), ``cls_token``
    (optional), ``blocks``, ``num_prefix_tokens``. The position table's grid part is resized to the input's
    grid with bicubic interpolation (``align_corners=False``), as ViTDet's ``get_abs_pos``; prefix tokens
    keep their entries. Attention is global in every block (ViTDet's windowed blocks are not built here).

    Args:
        vit: the ViT (its weights are used as they are; build it with the drop-path rate you want).
        out_indices: blocks whose outputs are returned (negative counts from the end), e.g. ``(-1,)`` for
            ViTDet, ``(3, 5, 7, 11)`` for UperNet on ViT-B.
        final_norm: apply ``vit.norm`` to the last block's map (ViTDet and SiameseIM's encoder have none).

    Forward: images ``(B, 3, H, W)`` -> list of ``(B, C, H/p, W/p)``, one per index, in the given order.

    Raises:
        ValueError: ``H`` or ``W`` not divisible by the patch size (forward), or an index out of range.
    """

    def __init__(self, vit: nn.Module, out_indices: Sequence[int] = (-1,), final_norm: bool = False):
        super().__init__()
        self.vit = vit
        depth = len(vit.blocks)
        idx = [i % depth if -depth <= i < depth else None for i in out_indices]
        if None in idx:
            raise ValueError(f"out_indices {tuple(out_indices)} out of range for a ViT of depth {depth}")
        self.out_indices = tuple(int(i) for i in idx)
        self.final_norm = bool(final_norm)
        ps = vit.patch_embed.proj.kernel_size
        self.patch_size = int(ps[0] if isinstance(ps, tuple) else ps)
        self.embed_dim = int(vit.patch_embed.proj.out_channels)
        self.num_prefix_tokens = int(getattr(vit, "num_prefix_tokens", 1))

    def _grid_pos(self, h: int, w: int) -> torch.Tensor:
        pos = self.vit.pos_embed
        n_prefix = 0 if getattr(self.vit, "no_embed_class", False) else self.num_prefix_tokens
        grid = pos[:, n_prefix:]
        g = int(round(grid.shape[1] ** 0.5))
        if (g, g) != (h, w):
            grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
            grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return grid

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        B, _, H, W = images.shape
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} is not divisible by the patch size {p}")
        h, w = H // p, W // p
        vit = self.vit
        x = vit.patch_embed.proj(images).flatten(2).transpose(1, 2)  # (B, h*w, C)
        x = getattr(vit.patch_embed, "norm", nn.Identity())(x)
        x = x + self._grid_pos(h, w)
        prefix = []
        n_prefix_pos = 0 if getattr(vit, "no_embed_class", False) else self.num_prefix_tokens
        if getattr(vit, "cls_token", None) is not None:
            cls = vit.cls_token.expand(B, -1, -1)
            prefix.append(cls + vit.pos_embed[:, :1] if n_prefix_pos else cls)
        if getattr(vit, "reg_token", None) is not None:
            reg = vit.reg_token.expand(B, -1, -1)
            prefix.append(reg + vit.pos_embed[:, 1:n_prefix_pos] if n_prefix_pos else reg)
        x = torch.cat(prefix + [x], dim=1)
        x = getattr(vit, "pos_drop", nn.Identity())(x)
        x = getattr(vit, "norm_pre", nn.Identity())(x)
        maps: dict[int, torch.Tensor] = {}
        last = max(self.out_indices)
        for i, blk in enumerate(vit.blocks[: last + 1]):
            x = blk(x)
            if i in self.out_indices:
                y = vit.norm(x) if (self.final_norm and i == len(vit.blocks) - 1) else x
                maps[i] = y[:, self.num_prefix_tokens:].transpose(1, 2).reshape(B, -1, h, w)
        return [maps[i] for i in self.out_indices]
