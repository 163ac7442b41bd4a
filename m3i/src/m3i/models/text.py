"""The text target encoder ``f_phi^txt`` of M3I: a small CLIP-style text transformer, trained jointly (spec m3i.md
section 2.1, [R]; the paper's text tower is not known).

``tokens (B, L)`` int64 (0 = padding, the last non-padding token is the end-of-text token)::

    x = token_embedding(tokens) + positional_embedding          (B, L, W)
    x = causal transformer blocks (timm ``Block``, pre-norm)     is_causal=True
    out = ln_final(x)[b, eot_b] @ text_projection                (B, D_out)

as CLIP's text encoder, with the end-of-text position found as the last non-padding token (no host sync).
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

__all__ = ["TextTower"]


class TextTower(nn.Module):
    """CLIP-style causal text transformer.

    Args:
        vocab_size: number of token ids (0 is padding); context_length: ``L``.
        width, depth, heads: the transformer; out_dim: the joint embedding width (the image global width).

    Init (CLIP): token embedding N(0, 0.02), positional N(0, 0.01), projection N(0, width^-0.5).
    """

    def __init__(self, vocab_size: int, context_length: int, width: int = 64, depth: int = 2, heads: int = 2,
                 out_dim: int = 64):
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.blocks = nn.ModuleList(Block(width, heads, qkv_bias=True) for _ in range(depth))
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, out_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` token ids -> ``(B, out_dim)`` (not normalised).

        Raises:
            ValueError: sequences longer than ``context_length``.
        """
        if tokens.shape[1] > self.context_length:
            raise ValueError(f"text of {tokens.shape[1]} tokens exceeds the context length {self.context_length}")
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        for blk in self.blocks:
            x = blk(x, is_causal=True)
        x = self.ln_final(x)
        eot = ((tokens != 0).sum(1) - 1).clamp(min=0)
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection
