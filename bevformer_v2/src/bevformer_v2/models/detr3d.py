"""DETR3D as the perspective head (paper Tab. 5 'DETR3D + Deformable DETR / Group DETR').

BEVFormer v2's Tab. 5 swaps the dense DD3D perspective head for DETR3D (Wang et al., CoRL 2021): sparse object
queries whose 3D reference points are projected into every camera and read the image features there, i.e.
3D detection supervised directly on the perspective-view features. The paper gives no details; we follow the
official DETR3D head (``WangYueFt/detr3d``: ``Detr3DHead``, ``Detr3DTransformerDecoder``, ``Detr3DCrossAtten``)
at its released settings: 900 queries, 6 post-norm layers (self-attention 8 heads -> DETR3D cross-attention ->
FFN 512), one sampling point per (camera, level) on the 4 FPN levels the BEV encoder uses, box refinement, focal
classification (weight 2) and L1 box loss (weight 0.25) with the same Hungarian matching. Like DD3D in the
released code, it is a training-only auxiliary loss (``pers.*`` terms, weighted by lambda_pers).

Parameter names follow the official DETR3D state dict under the prefix ``detr3d_head.``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .box_branches import build_branches, predict_layers
from .transformer import FFN, GroupMultiheadAttention, inverse_sigmoid, refine_reference


class Detr3DCrossAtten(nn.Module):
    """DETR3D cross-attention: project each query's 3D reference point into the N cameras, sample the L feature
    levels bilinearly there (zeros outside), weight by sigmoid(Linear(query + pos)) x visibility, sum, project,
    add the residual and an MLP encoding of the reference point."""

    def __init__(self, embed_dims: int = 256, num_cams: int = 6, num_levels: int = 4, num_points: int = 1,
                 dropout: float = 0.1, pc_range=None):
        super().__init__()
        self.num_cams, self.num_levels, self.num_points, self.pc_range = num_cams, num_levels, num_points, pc_range
        self.attention_weights = nn.Linear(embed_dims, num_cams * num_levels * num_points)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.position_encoder = nn.Sequential(
            nn.Linear(3, embed_dims), nn.LayerNorm(embed_dims), nn.ReLU(inplace=True),
            nn.Linear(embed_dims, embed_dims), nn.LayerNorm(embed_dims), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def sample(self, feats: list, reference_points: torch.Tensor, lidar2img: torch.Tensor, img_shape):
        """feats: L maps (B, N, C, h, w); reference_points (B, Q, 3) in [0, 1] of pc_range; lidar2img (B, N, 4, 4);
        img_shape (H, W) of the padded images. Returns features (B, C, Q, N, L) and visibility (B, Q, N)."""
        r = self.pc_range
        lo, hi = reference_points.new_tensor(r[:3]), reference_points.new_tensor(r[3:])
        pts = lo + reference_points.float() * (hi - lo)
        pts = torch.cat([pts, torch.ones_like(pts[..., :1])], -1)  # (B, Q, 4)
        cam = torch.einsum("bnij,bqj->bnqi", lidar2img.float(), pts)  # (B, N, Q, 4)
        eps = 1e-5
        uv = cam[..., :2] / cam[..., 2:3].clamp(min=eps)
        grid = torch.stack([uv[..., 0] / img_shape[1], uv[..., 1] / img_shape[0]], -1) * 2 - 1  # [-1, 1]
        visible = (cam[..., 2] > eps) & (grid.abs() < 1).all(-1)  # (B, N, Q)
        B, N, Q = visible.shape
        grid = grid.to(feats[0].dtype).view(B * N, Q, 1, 2)
        sampled = [F.grid_sample(f.flatten(0, 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
                   for f in feats]  # each (B*N, C, Q, 1)
        out = torch.stack(sampled, -1)[..., 0, :]  # (B*N, C, Q, L)
        C = out.shape[1]
        return out.view(B, N, C, Q, -1).permute(0, 2, 3, 1, 4), visible.permute(0, 2, 1)

    def forward(self, query, query_pos, feats, reference_points, lidar2img, img_shape):
        """query, query_pos (B, Q, C) -> (B, Q, C)."""
        B, Q, C = query.shape
        w = self.attention_weights(query + query_pos).view(B, Q, self.num_cams, self.num_points, self.num_levels)
        sampled, visible = self.sample(feats, reference_points, lidar2img, img_shape)  # (B, C, Q, N, L), (B, Q, N)
        w = w.sigmoid() * visible[..., None, None].to(w)
        out = (sampled[:, :, :, :, None, :] * w[:, None]).sum((-1, -2, -3))  # (B, C, Q)
        out = self.output_proj(out.transpose(1, 2))
        return self.dropout(out) + query + self.position_encoder(inverse_sigmoid(reference_points))


class Detr3DDecoderLayer(nn.Module):
    """self-attn -> LN -> DETR3D cross-attn -> LN -> FFN -> LN (post-norm, as DETR3D's config)."""

    def __init__(self, embed_dims, ffn_dims, num_heads, num_cams, num_levels, dropout, pc_range):
        super().__init__()
        self.attentions = nn.ModuleList([GroupMultiheadAttention(embed_dims, num_heads, dropout, 1),
                                         Detr3DCrossAtten(embed_dims, num_cams, num_levels, 1, dropout, pc_range)])
        self.ffns = nn.ModuleList([FFN(embed_dims, ffn_dims, dropout)])
        self.norms = nn.ModuleList([nn.LayerNorm(embed_dims) for _ in range(3)])

    def forward(self, query, query_pos, feats, reference_points, lidar2img, img_shape):
        query = self.norms[0](self.attentions[0](query, query_pos))
        query = self.norms[1](self.attentions[1](query, query_pos, feats, reference_points, lidar2img, img_shape))
        return self.norms[2](self.ffns[0](query))


class Detr3DDecoder(nn.Module):
    def __init__(self, num_layers, **layer):
        super().__init__()
        self.layers = nn.ModuleList([Detr3DDecoderLayer(**layer) for _ in range(num_layers)])


class Detr3DTransformer(nn.Module):
    """Reference points from the query positions + the refining decoder (official ``Detr3DTransformer``)."""

    def __init__(self, embed_dims, num_layers, **layer):
        super().__init__()
        self.reference_points = nn.Linear(embed_dims, 3)
        self.decoder = Detr3DDecoder(num_layers, embed_dims=embed_dims, **layer)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, Detr3DCrossAtten):
                m.init_weights()
        nn.init.zeros_(self.reference_points.bias)


class Detr3DHead(nn.Module):
    """DETR3D perspective head. ``forward(feats, lidar2img, img_shape)`` with feats = L FPN maps (B, N, C, h, w)
    -> all_cls (layers, B, Q, K), all_reg (layers, B, Q, 10) in the BEV head's box parametrisation."""

    def __init__(self, embed_dims: int = 256, num_classes: int = 10, num_query: int = 900, num_layers: int = 6,
                 ffn_dims: int = 512, num_heads: int = 8, num_cams: int = 6, num_levels: int = 4,
                 dropout: float = 0.1, pc_range=None):
        super().__init__()
        self.embed_dims, self.pc_range = embed_dims, tuple(pc_range)
        self.query_embedding = nn.Embedding(num_query, embed_dims * 2)
        self.transformer = Detr3DTransformer(embed_dims, num_layers, ffn_dims=ffn_dims, num_heads=num_heads,
                                             num_cams=num_cams, num_levels=num_levels, dropout=dropout,
                                             pc_range=self.pc_range)
        self.cls_branches, self.reg_branches = build_branches(num_layers, embed_dims, num_classes)

    def forward(self, feats: list, lidar2img: torch.Tensor, img_shape):
        B = feats[0].shape[0]
        pos, query = self.query_embedding.weight.split(self.embed_dims, dim=1)
        ref = self.transformer.reference_points(pos).sigmoid()
        query, pos, ref = (t[None].expand(B, -1, -1) for t in (query, pos, ref))
        states, refs = [], []
        for lid, layer in enumerate(self.transformer.decoder.layers):
            query = layer(query, pos, feats, ref, lidar2img, img_shape)
            states.append(query)
            refs.append(ref)
            ref = refine_reference(self.reg_branches[lid](query), ref)
        return predict_layers(torch.stack(states), torch.stack(refs), self.cls_branches, self.reg_branches,
                              self.pc_range)
