"""Transformer pieces shared by the ADDP network and the MAGE token predictor (spec §2.2, §2.3).

Parameter names follow the official code (timm style: ``norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
mlp.fc2``; ``mlm_layer.{fc, ln, bias}``) so that released weights load key by key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

__all__ = ["ATTN_IMPLS", "Attention", "Block", "MlmLayer", "init_official_"]

ATTN_IMPLS = ("sdpa", "math")


class Attention(nn.Module):
    """Multi-head self-attention with scale ``head_dim ** -0.5`` and dropout on the probabilities.

    ``attn_impl="math"`` is the official computation: logits in fp32 with autocast disabled, row max
    subtracted, softmax, dropout, then ``@ v``. ``"sdpa"`` calls ``F.scaled_dot_product_attention``
    (flash / memory-efficient kernels on GPU) in the input dtype; in fp32 the two agree to ~1e-6 and
    the attention dropout matches in distribution, not bitwise (spec §6).

    Shapes: ``x`` (B, L, C) -> (B, L, C).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, attn_impl: str = "sdpa"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"unknown attn_impl {attn_impl!r}; known: {', '.join(ATTN_IMPLS)}")
        self.num_heads, self.attn_impl = num_heads, attn_impl
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(x).reshape(B, L, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.attn_impl == "sdpa":
            p = self.attn_drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=self.scale)
        else:
            with torch.autocast(device_type=x.device.type, enabled=False):
                logits = (q.float() @ k.float().transpose(-2, -1)) * self.scale
            logits = logits - logits.amax(dim=-1, keepdim=True)
            out = self.attn_drop(logits.softmax(dim=-1)).to(v.dtype) @ v
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, L, C)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))`` (GELU MLP).

    ``drop`` is the dropout of the attention projection and of both MLP linears; ``attn_drop`` the one
    on the attention probabilities (both 0.1 in ADDP / MAGE pre-training, spec §2.3).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, eps: float = 1e-6, attn_impl: str = "sdpa"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, attn_impl)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MlmLayer(nn.Module):
    """Token logits from decoder features: ``LN(GELU(fc(h))) @ Wᵀ + bias`` (spec §2.3 step 6).

    ``W`` (V, D) is the token-embedding table, passed in already detached: the output projection is
    weight-tied to the input embedding but gets no gradient through this path. ``ln`` uses
    LayerNorm's default eps 1e-5 as the official code.

    Shapes: ``h`` (B, L, Dd), ``word_embeddings`` (V, D) -> logits (B, L, V).
    """

    def __init__(self, feat_dim: int, word_dim: int, vocab_size: int):
        super().__init__()
        self.fc = nn.Linear(feat_dim, word_dim)
        self.gelu = nn.GELU()
        self.ln = nn.LayerNorm(word_dim)
        self.bias = nn.Parameter(torch.zeros(1, 1, vocab_size))

    def forward(self, h: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return self.ln(self.gelu(self.fc(h))) @ word_embeddings.t() + self.bias


def init_official_(module: nn.Module) -> None:
    """The official initialisation of every Linear (xavier-uniform, zero bias) and LayerNorm (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
