"""BEV encoder, temporal fusion, BDA warp and Group-DETR decoder (spec §2.3-§2.6).

``PerceptionTransformerV2`` mirrors the official module tree (``level_embeds``, ``cams_embeds``,
``encoder.layers.i``, ``decoder.layers.i``, ``reference_points``, ``fusion``) so official weights map 1:1.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import (CustomMSDeformableAttention, SpatialCrossAttention, TemporalSelfAttention, _xavier,
                        visible_queries)


class FFN(nn.Module):
    """mmcv FFN: Linear-ReLU-Dropout-Linear-Dropout with the residual inside."""

    def __init__(self, embed_dims: int = 256, ffn_dims: int = 512, dropout: float = 0.1):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(embed_dims, ffn_dims), nn.ReLU(inplace=True),
                                                  nn.Dropout(dropout)),
                                    nn.Linear(ffn_dims, embed_dims), nn.Dropout(dropout))

    def forward(self, x):
        return x + self.layers(x)


def point_sampling(ref_3d: torch.Tensor, pc_range, lidar2img: torch.Tensor, img_shape) -> tuple:
    """Project pillar points into the cameras (spec §2.3), float32 without TF32.

    ref_3d (B, D, HW, 3) normalised; lidar2img (B, N, 4, 4); img_shape = padded (H, W).
    Returns reference_points_cam (N, B, HW, D, 2) normalised by the padded size, bev_mask (N, B, HW, D).
    """
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ref = ref_3d.float().clone()
        lo = ref.new_tensor(pc_range[:3])
        hi = ref.new_tensor(pc_range[3:])
        pts = lo + ref * (hi - lo)
        pts = torch.cat([pts, torch.ones_like(pts[..., :1])], -1)  # (B, D, HW, 4)
        cam = torch.einsum("bnij,bdqj->ndbqi", lidar2img.float(), pts)  # (N, D, B, HW, 4)
        eps = 1e-5
        mask = cam[..., 2:3] > eps
        uv = cam[..., :2] / torch.maximum(cam[..., 2:3], torch.full_like(cam[..., 2:3], eps))
        uv[..., 0] /= img_shape[1]
        uv[..., 1] /= img_shape[0]
        mask = mask & (uv[..., 1:2] > 0) & (uv[..., 1:2] < 1) & (uv[..., 0:1] < 1) & (uv[..., 0:1] > 0)
        return uv.permute(0, 2, 3, 1, 4), mask.squeeze(-1).permute(0, 2, 3, 1)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


class BEVFormerLayer(nn.Module):
    """Post-norm encoder layer: TSA -> LN -> SCA -> LN -> FFN -> LN (pos only in TSA)."""

    def __init__(self, embed_dims, ffn_dims, num_heads, num_levels, num_cams, sca_points, tsa_points, dropout,
                 msda_impl):
        super().__init__()
        self.attentions = nn.ModuleList([
            TemporalSelfAttention(embed_dims, num_heads, 1, tsa_points, 2, dropout, msda_impl),
            SpatialCrossAttention(embed_dims, num_cams, num_levels, sca_points, num_heads, dropout, msda_impl)])
        self.ffns = nn.ModuleList([FFN(embed_dims, ffn_dims, dropout)])
        self.norms = nn.ModuleList([nn.LayerNorm(embed_dims) for _ in range(3)])

    def forward(self, query, bev_pos, ref_2d, feats, visible, bev_hw, spatial_shapes, level_start):
        query = self.norms[0](self.attentions[0](query, bev_pos, ref_2d, (bev_hw,), (0,)))
        query = self.norms[1](self.attentions[1](query, feats, visible, spatial_shapes, level_start))
        return self.norms[2](self.ffns[0](query))


class BEVFormerEncoder(nn.Module):
    """Stack of ``BEVFormerLayer`` with the 2D/3D reference points (spec §2.3)."""

    def __init__(self, num_layers=6, embed_dims=256, ffn_dims=512, num_heads=8, num_levels=4, num_cams=6,
                 num_points_in_pillar=4, sca_points=8, tsa_points=4, dropout=0.1, pc_range=None, msda_impl="auto"):
        super().__init__()
        self.num_points_in_pillar, self.pc_range = num_points_in_pillar, tuple(pc_range)
        self.layers = nn.ModuleList([BEVFormerLayer(embed_dims, ffn_dims, num_heads, num_levels, num_cams,
                                                    sca_points, tsa_points, dropout, msda_impl)
                                     for _ in range(num_layers)])

    def reference_points(self, H: int, W: int, B: int, device):
        """ref_3d (B, D, HW, 3) pillar points, ref_2d (B, HW, 1, 2) cell centres; row <-> y, col <-> x."""
        Z = self.pc_range[5] - self.pc_range[2]
        D = self.num_points_in_pillar
        zs = torch.linspace(0.5, Z - 0.5, D, device=device).view(D, 1, 1).expand(D, H, W) / Z
        ys = torch.linspace(0.5, H - 0.5, H, device=device).view(1, H, 1).expand(D, H, W) / H
        xs = torch.linspace(0.5, W - 0.5, W, device=device).view(1, 1, W).expand(D, H, W) / W
        ref_3d = torch.stack([xs, ys, zs], -1).flatten(1, 2)[None].expand(B, -1, -1, -1)
        ref_2d = torch.stack([xs[0], ys[0]], -1).reshape(1, H * W, 1, 2).expand(B, -1, -1, -1)
        return ref_3d, ref_2d

    def forward(self, bev_query, feats, bev_pos, H, W, spatial_shapes, level_start, lidar2img, img_shape):
        """bev_query, bev_pos (B, HW, C); feats (N, S, B, C); spatial_shapes / level_start: host ints of the
        image levels -> (B, HW, C)."""
        B = bev_query.shape[0]
        ref_3d, ref_2d = self.reference_points(H, W, B, bev_query.device)
        ref_cam, bev_mask = point_sampling(ref_3d, self.pc_range, lidar2img, img_shape)
        visible = visible_queries(ref_cam.to(bev_query.dtype), bev_mask)  # once for all layers
        x = bev_query
        for layer in self.layers:
            x = layer(x, bev_pos, ref_2d, feats, visible, (H, W), spatial_shapes, level_start)
        return x


class BasicBlock(nn.Module):
    """mmdet BasicBlock (3x3 conv-BN-ReLU-3x3 conv-BN + shortcut, ReLU)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
                           if cin != cout else None)

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + idt)


class ResNetFusion(nn.Module):
    """Temporal fusion (spec §2.5): concat_t BEV_t -> 3 BasicBlocks -> Linear(inter, C) -> LayerNorm."""

    def __init__(self, in_channels: int, out_channels: int, inter_channels: int, num_layer: int = 3):
        super().__init__()
        self.layers = nn.Sequential(*[BasicBlock(in_channels if i == 0 else inter_channels, inter_channels)
                                      for i in range(num_layer)])
        self.layer_norm = nn.Sequential(nn.Linear(inter_channels, out_channels), nn.LayerNorm(out_channels))

    def forward(self, bevs: list) -> torch.Tensor:
        """bevs: T tensors (B, C, H, W), oldest first -> (B, HW, C)."""
        x = self.layers(torch.cat(bevs, 1))
        return self.layer_norm(x.flatten(2).transpose(1, 2))


def bda_warp(bev: torch.Tensor, bda: torch.Tensor) -> torch.Tensor:
    """Warp a BEV (B, C, H, W) from the un-augmented into the BDA-augmented frame (spec §2.4).

    bda (B, 3, 3) = F S R; grid = inverse(F S R)[:2, :2] (2 * cell_centre_norm - 1).
    """
    B, C, H, W = bev.shape
    ys = (torch.arange(H, device=bev.device, dtype=bev.dtype) + 0.5) / H
    xs = (torch.arange(W, device=bev.device, dtype=bev.dtype) + 0.5) / W
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1) * 2 - 1  # (H, W, 2) as (x, y)
    M = torch.linalg.inv(bda.to(bev.dtype))[:, :2, :2]
    grid = torch.einsum("bij,hwj->bhwi", M, grid)
    return F.grid_sample(bev, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def ego_motion_warp(bev: torch.Tensor, t_t2k: torch.Tensor, pc_range) -> torch.Tensor:
    """Paper §3.4 temporal alignment: resample a history BEV (B, C, H, W) of frame k onto the current grid.

    t_t2k (B, 4, 4) maps current-lidar points to frame-k lidar; each current cell centre p samples BEV_k at
    T_{t->k} p (bilinear, zeros outside; the BEV plane is treated as 2D: x, y rows of the transform).
    """
    B, C, H, W = bev.shape
    lo = bev.new_tensor(pc_range[:2])
    hi = bev.new_tensor(pc_range[3:5])
    ys = (torch.arange(H, device=bev.device, dtype=bev.dtype) + 0.5) / H
    xs = (torch.arange(W, device=bev.device, dtype=bev.dtype) + 0.5) / W
    cells = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1) * (hi - lo) + lo  # (H, W, 2) metric x, y
    T = t_t2k.to(bev.dtype)
    p = torch.einsum("bij,hwj->bhwi", T[:, :2, :2], cells) + T[:, None, None, :2, 3]
    grid = (p - lo) / (hi - lo) * 2 - 1
    return F.grid_sample(bev, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class GroupMultiheadAttention(nn.Module):
    """Decoder self-attention restricted to query groups in training (Group DETR, spec §2.6)."""

    def __init__(self, embed_dims: int, num_heads: int, dropout: float, group: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout, batch_first=True)
        self.proj_drop = nn.Dropout(dropout)
        self.group = group

    def forward(self, query, query_pos):
        """query, query_pos (B, Q_total, C); groups are contiguous blocks along Q in training."""
        B, Q, C = query.shape
        G = self.group if self.training else 1
        q = query.view(B * G, Q // G, C) if G > 1 else query
        p = query_pos.view(B * G, Q // G, C) if G > 1 else query_pos
        out = self.attn(q + p, q + p, q, need_weights=False)[0]
        return query + self.proj_drop(out.reshape(B, Q, C))


class DetrTransformerDecoderLayer(nn.Module):
    """self-attn -> LN -> BEV cross-attn -> LN -> FFN -> LN (post-norm)."""

    def __init__(self, embed_dims, ffn_dims, num_heads, num_points, dropout, group, msda_impl):
        super().__init__()
        self.attentions = nn.ModuleList([
            GroupMultiheadAttention(embed_dims, num_heads, dropout, group),
            CustomMSDeformableAttention(embed_dims, num_heads, 1, num_points, dropout, msda_impl)])
        self.ffns = nn.ModuleList([FFN(embed_dims, ffn_dims, dropout)])
        self.norms = nn.ModuleList([nn.LayerNorm(embed_dims) for _ in range(3)])

    def forward(self, query, query_pos, value, ref_xy, spatial_shapes, level_start):
        query = self.norms[0](self.attentions[0](query, query_pos))
        query = self.norms[1](self.attentions[1](query, query_pos, value, ref_xy, spatial_shapes, level_start))
        return self.norms[2](self.ffns[0](query))


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def refine_reference(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Box refinement (spec §2.6): regression output t (..., 10), reference (..., 3) in [0, 1] ->
    sigmoid(t[0:2] + logit(ref_xy)), sigmoid(t[4] + logit(ref_z)), detached (next layer's reference)."""
    new = torch.cat([t[..., 0:2] + inverse_sigmoid(ref[..., :2]), t[..., 4:5] + inverse_sigmoid(ref[..., 2:3])], -1)
    return new.sigmoid().detach()


class DetectionTransformerDecoder(nn.Module):
    """Decoder with reference-point refinement (spec §2.6); returns every layer's states and input refs."""

    def __init__(self, num_layers=6, embed_dims=256, ffn_dims=512, num_heads=8, num_points=4, dropout=0.1,
                 group=1, msda_impl="auto"):
        super().__init__()
        self.layers = nn.ModuleList([DetrTransformerDecoderLayer(embed_dims, ffn_dims, num_heads, num_points, dropout,
                                                                 group, msda_impl) for _ in range(num_layers)])

    def forward(self, query, query_pos, value, reference_points, reg_branches, bev_hw):
        """query, query_pos (B, Q, C); value (B, HW, C); reference_points (B, Q, 3) in [0, 1].

        Returns states (L, B, Q, C) and the reference each layer's prediction uses (L, B, Q, 3).
        """
        spatial_shapes, level_start = (tuple(bev_hw),), (0,)  # host ints: no device sync in the MSDA dispatch
        states, refs = [], []
        ref = reference_points
        for lid, layer in enumerate(self.layers):
            query = layer(query, query_pos, value, ref[..., :2], spatial_shapes, level_start)
            states.append(query)
            refs.append(ref)
            ref = refine_reference(reg_branches[lid](query), ref)
        return torch.stack(states), torch.stack(refs)


class PerceptionTransformerV2(nn.Module):
    """Encoder (+ BDA warp) + optional temporal fusion + decoder, official attribute names."""

    def __init__(self, embed_dims=256, num_feature_levels=4, num_cams=6, frames=(0,), inter_channels=None,
                 num_fusion=3, encoder: dict | None = None, decoder: dict | None = None, pc_range=None,
                 msda_impl="auto"):
        super().__init__()
        self.embed_dims, self.frames = embed_dims, tuple(frames)
        self.level_embeds = nn.Parameter(torch.empty(num_feature_levels, embed_dims))
        self.cams_embeds = nn.Parameter(torch.empty(num_cams, embed_dims))
        self.encoder = BEVFormerEncoder(embed_dims=embed_dims, num_levels=num_feature_levels, num_cams=num_cams,
                                        pc_range=pc_range, msda_impl=msda_impl, **(encoder or {}))
        self.decoder = DetectionTransformerDecoder(embed_dims=embed_dims, msda_impl=msda_impl, **(decoder or {}))
        self.reference_points = nn.Linear(embed_dims, 3)
        if len(self.frames) > 1:
            self.fusion = ResNetFusion(len(self.frames) * embed_dims, embed_dims,
                                       inter_channels or len(self.frames) * embed_dims, num_fusion)
        self.init_weights()

    def init_weights(self) -> None:
        """Official init: xavier on all dim>1 params, deformable modules re-init, embeds N(0, 1)."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if hasattr(m, "init_weights") and m is not self:
                m.init_weights()
        nn.init.normal_(self.level_embeds)
        nn.init.normal_(self.cams_embeds)
        _xavier(self.reference_points)

    def encode(self, mlvl_feats: list, bev_query, bev_pos, H, W, lidar2img, img_shape, bda=None):
        """mlvl_feats: L tensors (B, N, C, h, w) -> BEV (B, HW, C), BDA-warped when ``bda`` is given."""
        feats, shapes = [], []
        for lvl, f in enumerate(mlvl_feats):
            B, N, C, h, w = f.shape
            f = f.flatten(3).permute(1, 0, 3, 2)  # (N, B, hw, C)
            feats.append(f + self.cams_embeds[:, None, None] + self.level_embeds[None, None, lvl:lvl + 1])
            shapes.append((h, w))
        feats = torch.cat(feats, 2).permute(0, 2, 1, 3)  # (N, S, B, C)
        spatial_shapes = tuple(shapes)  # host ints (H_l, W_l)
        level_start = tuple(sum(h * w for h, w in shapes[:lvl]) for lvl in range(len(shapes)))
        bev = self.encoder(bev_query, feats, bev_pos, H, W, spatial_shapes, level_start, lidar2img, img_shape)
        if bda is not None:
            B = bev.shape[0]
            bev = bda_warp(bev.transpose(1, 2).reshape(B, -1, H, W), bda).flatten(2).transpose(1, 2)
        return bev

    def fuse(self, bevs: list, H: int, W: int) -> torch.Tensor:
        """bevs: T tensors (B, HW, C) ordered as ``frames`` -> decoder value (B, HW, C)."""
        if len(self.frames) == 1:
            return bevs[0]
        B, _, C = bevs[0].shape
        return self.fusion([b.transpose(1, 2).reshape(B, C, H, W) for b in bevs])

    def decode(self, value, query, query_pos, reference_points, reg_branches, H, W):
        return self.decoder(query, query_pos, value, reference_points, reg_branches, (H, W))
