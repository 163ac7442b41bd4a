"""Deformable attention modules of BEVFormer v2 (spec §2.3, §2.6), all on top of the MSDA core (§6.1).

* ``MSDeformableAttention3D``   SCA inner module: pillar anchors, no output projection, no residual.
* ``SpatialCrossAttention``     per-camera gather of visible BEV queries, average over cameras, out-proj, residual.
* ``TemporalSelfAttention``     v2 usage: two queue slots that both read the current BEV (fused into one MSDA call).
* ``CustomMSDeformableAttention`` decoder cross-attention on the BEV (1 level).
Parameter names follow the official state dict.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from repro_shared.ops.msda import multi_scale_deformable_attn


def _init_offsets(linear: nn.Linear, heads: int, groups: int, points: int) -> None:
    """Official init: weight 0, bias = per-head unit direction (cos, sin)/max(|cos|,|sin|) * (p + 1)."""
    nn.init.zeros_(linear.weight)
    theta = torch.arange(heads, dtype=torch.float32) * (2.0 * math.pi / heads)
    grid = torch.stack([theta.cos(), theta.sin()], -1)
    grid = grid / grid.abs().max(-1, keepdim=True)[0]
    grid = grid.view(heads, 1, 1, 2).repeat(1, groups, points, 1)
    grid = grid * torch.arange(1, points + 1, dtype=torch.float32).view(1, 1, points, 1)
    with torch.no_grad():
        linear.bias.copy_(grid.flatten())


def level_wh(spatial_shapes, like: torch.Tensor) -> torch.Tensor:
    """(L, 2) = (W_l, H_l) on ``like``'s device and dtype: the normaliser of sampling offsets given in pixels.

    ``spatial_shapes``: a sequence of (H_l, W_l) (host ints: no device sync, works on any device) or an (L, 2)
    tensor."""
    if isinstance(spatial_shapes, torch.Tensor):
        return spatial_shapes.flip(-1).to(like)
    return like.new_tensor([[w, h] for h, w in spatial_shapes])


def _xavier(linear: nn.Linear) -> None:
    nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)


class MSDeformableAttention3D(nn.Module):
    """SCA sampler (spec §2.3 step 3). ``P = (P/D offsets) x (D anchors)``, anchor index fastest."""

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 4, num_points: int = 8,
                 msda_impl: str = "auto"):
        super().__init__()
        self.embed_dims, self.num_heads, self.num_levels, self.num_points = embed_dims, num_heads, num_levels, num_points
        self.msda_impl = msda_impl
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.init_weights()

    def init_weights(self) -> None:
        _init_offsets(self.sampling_offsets, self.num_heads, self.num_levels, self.num_points)
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        _xavier(self.value_proj)

    def forward(self, query, value, reference_points, spatial_shapes, level_start_index):
        """query (B', Q, C), value (B', S, C), reference_points (B', Q, D, 2) -> (B', Q, C)."""
        Bp, Q, _ = query.shape
        M, L, P = self.num_heads, self.num_levels, self.num_points
        v = self.value_proj(value).view(Bp, value.shape[1], M, -1)
        off = self.sampling_offsets(query).view(Bp, Q, M, L, P, 2)
        attn = self.attention_weights(query).view(Bp, Q, M, L * P).softmax(-1).view(Bp, Q, M, L, P)
        D = reference_points.shape[2]
        off = off / level_wh(spatial_shapes, off)[None, None, None, :, None, :]
        off = off.view(Bp, Q, M, L, P // D, D, 2)
        loc = reference_points[:, :, None, None, None, :, :] + off  # point p = k*D + z uses anchor z
        loc = loc.view(Bp, Q, M, L, P, 2)
        return multi_scale_deformable_attn(v, spatial_shapes, level_start_index, loc, attn, self.msda_impl)


def visible_queries(reference_points_cam: torch.Tensor, bev_mask: torch.Tensor) -> dict:
    """SCA re-batching (spec §2.3 steps 1-2) computed once per encoder pass (every layer shares it).

    reference_points_cam (N, B, HW, D, 2), bev_mask (N, B, HW, D) -> dict with ``order`` (N, B, max_len)
    indices of the cells that camera n sees in sample b (padded with cells it does not see), ``keep``
    (N, B, max_len) bool (real, not padding), ``ref`` (N, B, max_len, D, 2) their reference points and
    ``count`` (B, HW) the number of cameras that see each cell (>= 1). One host sync (``max_len``); on the
    ``meta`` device (device checks without data) no compaction: ``max_len = HW``."""
    N, B, HW, D = bev_mask.shape
    visible = bev_mask.any(-1)  # (N, B, HW)
    counts = visible.sum(-1)  # (N, B)
    max_len = HW if bev_mask.is_meta else max(int(counts.max()), 1)
    order = torch.argsort((~visible).to(torch.int8), dim=-1, stable=True)[..., :max_len]
    keep = torch.arange(max_len, device=bev_mask.device)[None, None] < counts[..., None]
    ref = torch.gather(reference_points_cam, 2, order[..., None, None].expand(-1, -1, -1, D, 2))
    return dict(order=order, keep=keep, ref=ref, count=visible.sum(0).clamp(min=1))


class SpatialCrossAttention(nn.Module):
    """SCA (spec §2.3): per-sample camera visibility sets (fixes official batch-0 mask bug #123)."""

    def __init__(self, embed_dims: int = 256, num_cams: int = 6, num_levels: int = 4, num_points: int = 8,
                 num_heads: int = 8, dropout: float = 0.1, msda_impl: str = "auto"):
        super().__init__()
        self.deformable_attention = MSDeformableAttention3D(embed_dims, num_heads, num_levels, num_points, msda_impl)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        _xavier(self.output_proj)

    def forward(self, query, value, visible: dict, spatial_shapes, level_start_index):
        """query (B, HW, C); value (N, S, B, C); ``visible`` from :func:`visible_queries`; spatial_shapes:
        (H_l, W_l) pairs. Returns (B, HW, C) = Dropout(Linear(mean over the cameras that see a cell)) + query."""
        N, S, B, C = value.shape
        HW = query.shape[1]
        order, keep, ref = visible["order"], visible["keep"], visible["ref"]
        max_len, D = order.shape[-1], ref.shape[3]
        q = torch.gather(query[None].expand(N, B, HW, C), 2, order[..., None].expand(-1, -1, -1, C))
        val = value.permute(0, 2, 1, 3).reshape(N * B, S, C)
        out = self.deformable_attention(q.reshape(N * B, max_len, C), val, ref.reshape(N * B, max_len, D, 2),
                                        spatial_shapes, level_start_index).view(N, B, max_len, C)
        out = out * keep[..., None]  # padding rows are discarded
        slots = query.new_zeros(B, HW, C)
        idx = order.permute(1, 0, 2).reshape(B, N * max_len)
        slots.scatter_add_(1, idx[..., None].expand(-1, -1, C), out.permute(1, 0, 2, 3).reshape(B, N * max_len, C))
        slots = slots / visible["count"].to(slots)[..., None]
        return self.dropout(self.output_proj(slots)) + query


class TemporalSelfAttention(nn.Module):
    """TSA as used by v2 (spec §2.3): no history, both queue slots read the current queries.

    Exact fused form: one MSDA call with 2P points per head and weights A_s / 2 (the slot mean).
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 1, num_points: int = 4,
                 num_bev_queue: int = 2, dropout: float = 0.1, msda_impl: str = "auto"):
        super().__init__()
        self.embed_dims, self.num_heads, self.num_levels, self.num_points = embed_dims, num_heads, num_levels, num_points
        self.num_bev_queue, self.msda_impl = num_bev_queue, msda_impl
        Cq = embed_dims * num_bev_queue
        self.sampling_offsets = nn.Linear(Cq, num_bev_queue * num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(Cq, num_bev_queue * num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self) -> None:
        _init_offsets(self.sampling_offsets, self.num_heads, self.num_levels * self.num_bev_queue, self.num_points)
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        _xavier(self.value_proj)
        _xavier(self.output_proj)

    def forward(self, query, query_pos, reference_points, spatial_shapes, level_start_index):
        """query, query_pos (B, HW, C); reference_points (B, HW, L, 2) -> (B, HW, C)."""
        B, Q, C = query.shape
        M, L, P, T = self.num_heads, self.num_levels, self.num_points, self.num_bev_queue
        x = torch.cat([query, query + query_pos], -1)  # value slot 0 (no pos) ++ query + pos
        v = self.value_proj(query).view(B, Q, M, C // M)
        off = self.sampling_offsets(x).view(B, Q, M, T, L, P, 2)
        attn = self.attention_weights(x).view(B, Q, M, T, L * P).softmax(-1).view(B, Q, M, T, L, P) / T
        norm = level_wh(spatial_shapes, off)
        loc = reference_points[:, :, None, None, :, None, :] + off / norm[None, None, None, None, :, None, :]
        loc = loc.permute(0, 1, 2, 4, 3, 5, 6).reshape(B, Q, M, L, T * P, 2)
        attn = attn.permute(0, 1, 2, 4, 3, 5).reshape(B, Q, M, L, T * P)
        out = multi_scale_deformable_attn(v, spatial_shapes, level_start_index, loc, attn, self.msda_impl)
        return self.dropout(self.output_proj(out)) + query


class CustomMSDeformableAttention(nn.Module):
    """Decoder cross-attention on the BEV (spec §2.6): offsets/weights from query + pos, residual = query."""

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 1, num_points: int = 4,
                 dropout: float = 0.1, msda_impl: str = "auto"):
        super().__init__()
        self.embed_dims, self.num_heads, self.num_levels, self.num_points = embed_dims, num_heads, num_levels, num_points
        self.msda_impl = msda_impl
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self) -> None:
        _init_offsets(self.sampling_offsets, self.num_heads, self.num_levels, self.num_points)
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        _xavier(self.value_proj)
        _xavier(self.output_proj)

    def forward(self, query, query_pos, value, reference_points, spatial_shapes, level_start_index):
        """query, query_pos (B, Q, C); value (B, S, C); reference_points (B, Q, 2) normalised xy -> (B, Q, C)."""
        B, Q, C = query.shape
        M, L, P = self.num_heads, self.num_levels, self.num_points
        q = query + query_pos
        v = self.value_proj(value).view(B, value.shape[1], M, C // M)
        off = self.sampling_offsets(q).view(B, Q, M, L, P, 2)
        attn = self.attention_weights(q).view(B, Q, M, L * P).softmax(-1).view(B, Q, M, L, P)
        norm = level_wh(spatial_shapes, off)
        loc = reference_points[:, :, None, None, None, :] + off / norm[None, None, None, :, None, :]
        out = multi_scale_deformable_attn(v, spatial_shapes, level_start_index, loc, attn, self.msda_impl)
        return self.dropout(self.output_proj(out)) + query
