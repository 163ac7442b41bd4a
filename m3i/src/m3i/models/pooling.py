"""Attention pooling of InternImage-H/G's ``clip_projector`` (official ``AttentionPoolingBlock``), with an
optional key mask so that each of the two images of an M3I mix is pooled from its own patches only.

For tokens ``x (B, N, D)`` and a key mask ``keep (B, N)`` (True = this image's token)::

    query = mean of the kept tokens                                   (official: the mean over all tokens)
    q = LN_q(query) Wq + bq,   k = LN_k(x) Wk + bk,   v = LN_v(x) Wv + bv      (h heads, scale d_h^-1/2)
    out = proj(softmax(q k^T + log keep) v)                           Linear(D, D_out)

Parameter names follow the official module: ``norm1_q.0``, ``norm1_k.0``, ``norm1_v.0`` (LayerNorm eps 1e-6),
``cross_dcn.{q,k,v}.weight`` (no bias), ``cross_dcn.{q,k,v}_bias`` and ``cross_dcn.proj``. The position
embeddings of the official forward are 0 for pooling and are left out. With ``keep=None`` the output equals
the official block's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import build_norm_layer

__all__ = ["CrossAttention", "AttentionPoolingBlock"]


class CrossAttention(nn.Module):
    """Multi-head cross-attention with separate q/k/v Linears and separate learnable biases (official names).

    Args:
        dim: width of queries and keys; out_dim: width after ``proj`` (default ``dim``).
        num_heads: ``dim`` must be divisible by it.
        qkv_bias: learnable ``q_bias``/``k_bias``/``v_bias`` (zero-initialised).

    Raises:
        ValueError: ``dim`` not divisible by ``num_heads``.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, out_dim: int | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.k_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.k_bias = self.v_bias = None
        self.proj = nn.Linear(dim, out_dim or dim)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, Nq, D)``, ``k``/``v (B, Nk, D)``, ``attn_mask`` bool ``(B, 1, Nq, Nk)`` (True = attend)
        -> ``(B, Nq, D_out)``."""
        b, nq, d = x.shape
        h = self.num_heads

        def heads(t, lin, bias):
            return F.linear(t, lin.weight, bias).reshape(b, t.shape[1], h, d // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(x, self.q, self.q_bias), heads(k, self.k, self.k_bias),
                                             heads(v, self.v, self.v_bias), attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, nq, d))


class AttentionPoolingBlock(nn.Module):
    """Pools ``(B, N, D)`` tokens into ``(B, D_out)`` (module docstring), optionally over a subset per sample.

    Args:
        dim: token width (1024 in InternImage-H/G); num_heads: 16 there; out_dim: 768 there.
        qkv_bias: official True; norm_layer: ``"LN"`` (eps 1e-6).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, norm_layer: str = "LN",
                 out_dim: int | None = None):
        super().__init__()
        self.norm1_q = build_norm_layer(dim, norm_layer, eps=1e-6)
        self.norm1_k = build_norm_layer(dim, norm_layer, eps=1e-6)
        self.norm1_v = build_norm_layer(dim, norm_layer, eps=1e-6)
        self.cross_dcn = CrossAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias, out_dim=out_dim)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, N, D)``, ``keep`` bool ``(B, N)`` or None -> ``(B, D_out)``.

        No host sync: a sample whose ``keep`` row is all False has nothing to pool and comes out NaN, which the
        training loop's non-finite check reports (M3I's mix masks keep a fixed, positive count per image).
        """
        if keep is None:
            query, attn_mask = x.mean(1, keepdim=True), None
        else:
            w = keep.to(x.dtype)
            query = (x * w[..., None]).sum(1, keepdim=True) / w.sum(1)[:, None, None]
            attn_mask = keep[:, None, None, :]
        out = self.cross_dcn(self.norm1_q(query), k=self.norm1_k(x), v=self.norm1_v(x), attn_mask=attn_mask)
        return out.squeeze(1)
