"""Deformable DETR trained with the PAP loss — OUR ADAPTATION (the official repository has no DETR code).

Single-scale-query Deformable DETR (Zhu et al. 2021) without iterative box refinement / two-stage:
multi-scale deformable attention in a small encoder and decoder, sigmoid classification (no
background), boxes as (cx, cy, w, h) in [0, 1] relative to the padded input.

PAP for DETR (decisions of this package, spec §2.3 open questions):
* every decoder layer is supervised (auxiliary losses, as Deformable DETR does) with its own Hungarian
  matching; the matching cost is Deformable DETR's (focal class cost 2, L1 5, GIoU 2);
* positives = matched (query, class) pairs; all other (query, class) pairs of the batch are negatives;
  nothing is ignored; one ranking per decoder layer over the whole batch;
* IoU input u = (GIoU(matched box, GT) + 1) / 2; ``GradScale`` lambda on the box output;
* the baseline (``focal_l1_giou``) is Deformable DETR's loss: focal x 2 + L1 x 5 + GIoU x 2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

from ..losses import PAPLoss, grad_scale, sigmoid_focal_loss_sum
from ..ops.boxes import giou_aligned, localisation_quality
from .common import SizedTransform

LOSS_TYPES = ("pap", "focal_l1_giou")


def ms_deform_attn(value: list[torch.Tensor], locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Multi-scale deformable attention, pure PyTorch (bilinear ``grid_sample``, zero padding).

    Args:
        value: per level (B * heads, Dh, H_l, W_l).
        locations: (B, Lq, heads, levels, points, 2) sampling points in [0, 1] (x, y).
        weights: (B, Lq, heads, levels, points), softmax-normalised over (levels, points).
    Returns:
        (B, Lq, heads * Dh).
    """
    b, lq, h, n_lvl, n_pts, _ = locations.shape
    grids = 2 * locations - 1
    sampled = []
    for lvl, v in enumerate(value):
        g = grids[:, :, :, lvl].permute(0, 2, 1, 3, 4).reshape(b * h, lq, n_pts, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    s = torch.stack(sampled, dim=-2)  # (B*heads, Dh, Lq, levels, points)
    w = weights.permute(0, 2, 1, 3, 4).reshape(b * h, 1, lq, n_lvl, n_pts)
    out = (s * w).sum((-1, -2))  # (B*heads, Dh, Lq)
    return out.view(b, h * out.shape[1], lq).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Deformable attention module: queries (B, Lq, d), reference points (B, Lq, levels, 2) in [0, 1],
    flattened multi-scale input (B, sum H_l W_l, d) with its level shapes -> (B, Lq, d)."""

    def __init__(self, d: int, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.d, self.n_levels, self.n_heads, self.n_points = d, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d, d)
        self.output_proj = nn.Linear(d, d)
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(n_heads, dtype=torch.float32) * (2 * math.pi / n_heads)
        grid = torch.stack([theta.cos(), theta.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(n_heads, 1, 1, 2).repeat(1, n_levels, n_points, 1)
        grid *= torch.arange(1, n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query, ref, inp, shapes, pad_mask):
        b, lq, _ = query.shape
        v = self.value_proj(inp).masked_fill(pad_mask[..., None], 0.0)
        dh = self.d // self.n_heads
        values, start = [], 0
        for hh, ww in shapes:
            lvl = v[:, start:start + hh * ww].view(b, hh, ww, self.n_heads, dh).permute(0, 3, 4, 1, 2)
            values.append(lvl.reshape(b * self.n_heads, dh, hh, ww))
            start += hh * ww
        off = self.sampling_offsets(query).view(b, lq, self.n_heads, self.n_levels, self.n_points, 2)
        attn = self.attention_weights(query).view(b, lq, self.n_heads, self.n_levels * self.n_points)
        attn = attn.softmax(-1).view(b, lq, self.n_heads, self.n_levels, self.n_points)
        norm = torch.tensor([[w_, h_] for h_, w_ in shapes], dtype=query.dtype, device=query.device)
        loc = ref[:, :, None, :, None, :] + off / norm[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn(values, loc, attn))


class _FFN(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, d))
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        return self.norm(x + self.net(x))


class EncoderLayer(nn.Module):
    def __init__(self, d, n_levels, n_heads, n_points, hidden):
        super().__init__()
        self.attn = MSDeformAttn(d, n_levels, n_heads, n_points)
        self.norm = nn.LayerNorm(d)
        self.ffn = _FFN(d, hidden)

    def forward(self, src, pos, ref, shapes, mask):
        return self.ffn(self.norm(src + self.attn(src + pos, ref, src, shapes, mask)))


class DecoderLayer(nn.Module):
    def __init__(self, d, n_levels, n_heads, n_points, hidden):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, n_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        self.cross = MSDeformAttn(d, n_levels, n_heads, n_points)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = _FFN(d, hidden)

    def forward(self, tgt, qpos, ref, memory, shapes, mask):
        q = tgt + qpos
        tgt = self.norm1(tgt + self.self_attn(q, q, tgt, need_weights=False)[0])
        tgt = self.norm2(tgt + self.cross(tgt + qpos, ref, memory, shapes, mask))
        return self.ffn(tgt)


def sine_pos_embed(mask: torch.Tensor, d: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR sine position embedding of a (B, H, W) padding mask -> (B, H, W, d)."""
    not_mask = (~mask).float()
    y = not_mask.cumsum(1) / (not_mask.cumsum(1)[:, -1:, :] + 1e-6) * 2 * math.pi
    x = not_mask.cumsum(2) / (not_mask.cumsum(2)[:, :, -1:] + 1e-6) * 2 * math.pi
    dim_t = temperature ** (2 * (torch.arange(d // 2, device=mask.device) // 2) / (d // 2))
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack([px[..., 0::2].sin(), px[..., 1::2].cos()], -1).flatten(-2)
    py = torch.stack([py[..., 0::2].sin(), py[..., 1::2].cos()], -1).flatten(-2)
    return torch.cat([py, px], -1)


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict], cost_class=2.0, cost_l1=5.0,
                    cost_giou=2.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Deformable DETR matcher. logits (B, Q, K), boxes (B, Q, 4) cxcywh normalised; targets with
    ``boxes_n`` (n, 4) cxcywh normalised and ``labels``. -> per image (query idx, gt idx)."""
    out = []
    p = logits.sigmoid()
    for b, t in enumerate(targets):
        if t["labels"].numel() == 0:
            out.append((torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))
            continue
        pb = p[b][:, t["labels"]]
        neg = 0.75 * pb ** 2 * -(1 - pb + 1e-8).log()
        pos = 0.25 * (1 - pb) ** 2 * -(pb + 1e-8).log()
        c = cost_class * (pos - neg) + cost_l1 * torch.cdist(boxes[b], t["boxes_n"], p=1) \
            - cost_giou * generalized_box_iou(box_convert(boxes[b], "cxcywh", "xyxy"),
                                              box_convert(t["boxes_n"], "cxcywh", "xyxy"))
        qi, gi = linear_sum_assignment(c.cpu().numpy())
        out.append((torch.as_tensor(qi, dtype=torch.long), torch.as_tensor(gi, dtype=torch.long)))
    return out


class PAPDeformableDETR(nn.Module):
    """Deformable DETR over the first ``n_levels`` FPN outputs of ``backbone``.

    Train: ``model(images, targets)`` -> loss dict; eval: ``model(images)`` -> list of
    {boxes (100, 4) xyxy in input pixels, scores, labels 0..K-1}.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, loss_type: str = "pap", pap: PAPLoss | None = None,
                 num_queries: int = 100, enc_layers: int = 6, dec_layers: int = 6, n_heads: int = 8,
                 n_points: int = 4, n_levels: int = 4, ffn_dim: int = 1024, reg_input: str = "giou",
                 train_size: int = 512, test_min_size: int = 500, test_max_size: int = 833,
                 detections_per_img: int = 100):
        super().__init__()
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown Deformable DETR loss_type {loss_type!r}; known: {', '.join(LOSS_TYPES)}")
        if loss_type == "pap" and pap is None:
            raise ValueError("loss_type 'pap' needs a PAPLoss")
        d = backbone.out_channels
        self.backbone, self.num_classes, self.n_levels = backbone, num_classes, n_levels
        self.loss_type, self.pap, self.reg_input, self.detections_per_img = loss_type, pap, reg_input, detections_per_img
        self.transform = SizedTransform(train_size, test_min_size, test_max_size)
        self.input_norm = nn.ModuleList(nn.GroupNorm(min(32, d // 2), d) for _ in range(n_levels))
        self.level_embed = nn.Parameter(torch.randn(n_levels, d) * 0.02)
        self.encoder = nn.ModuleList(EncoderLayer(d, n_levels, n_heads, n_points, ffn_dim) for _ in range(enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(d, n_levels, n_heads, n_points, ffn_dim) for _ in range(dec_layers))
        self.query_embed = nn.Embedding(num_queries, 2 * d)
        self.ref_point = nn.Linear(d, 2)
        self.class_embed = nn.Linear(d, num_classes)
        self.bbox_embed = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, d), nn.ReLU(inplace=True),
                                        nn.Linear(d, 4))
        nn.init.constant_(self.class_embed.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.zeros_(self.bbox_embed[-1].weight)
        nn.init.constant_(self.bbox_embed[-1].bias[2:], -2.0)

    def _encode(self, feats: list[torch.Tensor], masks: list[torch.Tensor]):
        srcs, poss, pads, shapes = [], [], [], []
        for lvl, (f, m) in enumerate(zip(feats, masks)):
            shapes.append((f.shape[2], f.shape[3]))
            srcs.append(self.input_norm[lvl](f).flatten(2).transpose(1, 2))
            poss.append(sine_pos_embed(m, f.shape[1]).flatten(1, 2) + self.level_embed[lvl])
            pads.append(m.flatten(1))
        src, pos, pad = torch.cat(srcs, 1), torch.cat(poss, 1), torch.cat(pads, 1)
        refs = []
        for hh, ww in shapes:
            ys, xs = torch.meshgrid(torch.arange(hh, device=src.device) + 0.5, torch.arange(ww, device=src.device) + 0.5,
                                    indexing="ij")
            refs.append(torch.stack([xs.flatten() / ww, ys.flatten() / hh], -1))
        ref = torch.cat(refs, 0)[None, :, None, :].expand(src.shape[0], -1, len(shapes), -1)
        for layer in self.encoder:
            src = layer(src, pos, ref, shapes, pad)
        return src, shapes, pad

    def _forward_heads(self, images):
        feats = list(self.backbone(images.tensors).values())[: self.n_levels]
        b, _, hp, wp = images.tensors.shape
        mask = torch.ones(b, hp, wp, dtype=torch.bool, device=images.tensors.device)
        for i, (h, w) in enumerate(images.image_sizes):
            mask[i, :h, :w] = False
        masks = [F.interpolate(mask[None].float(), size=f.shape[-2:])[0].bool() for f in feats]
        memory, shapes, pad = self._encode(feats, masks)
        qpos, tgt = self.query_embed.weight.split(memory.shape[-1], dim=1)
        qpos, tgt = qpos[None].expand(b, -1, -1), tgt[None].expand(b, -1, -1)
        ref = self.ref_point(qpos).sigmoid()
        outs = []
        for layer in self.decoder:
            tgt = layer(tgt, qpos, ref[:, :, None, :].expand(-1, -1, len(shapes), -1), memory, shapes, pad)
            logits = self.class_embed(tgt)
            delta = self.bbox_embed(tgt)
            xy = (delta[..., :2] + torch.logit(ref.clamp(1e-5, 1 - 1e-5))).sigmoid()
            outs.append((logits, torch.cat([xy, delta[..., 2:].sigmoid()], -1)))
        return outs

    def forward(self, images, targets=None):
        sizes = [img.shape[-2:] for img in images]
        images, targets = self.transform(images, targets)
        outs = self._forward_heads(images)
        if self.training:
            return self._loss(outs, images, targets)
        logits, boxes = outs[-1]
        hp, wp = images.tensors.shape[-2:]
        scale = torch.tensor([wp, hp, wp, hp], dtype=boxes.dtype, device=boxes.device)
        dets = []
        for lg, bx in zip(logits, boxes):
            scores, idx = lg.sigmoid().flatten().topk(min(self.detections_per_img, lg.numel()))
            q, lab = idx // self.num_classes, idx % self.num_classes
            dets.append({"boxes": box_convert(bx[q] * scale, "cxcywh", "xyxy"), "scores": scores, "labels": lab})
        return self.transform.postprocess(dets, images.image_sizes, sizes)

    def _loss(self, outs, images, targets):
        hp, wp = images.tensors.shape[-2:]
        scale = torch.tensor([wp, hp, wp, hp], dtype=torch.float32, device=images.tensors.device)
        tg = [{"labels": t["labels"], "boxes_n": box_convert(t["boxes"], "xyxy", "cxcywh") / scale} for t in targets]
        num_boxes = max(sum(int(t["labels"].numel()) for t in tg), 1)
        losses = {}
        for lvl, (logits, boxes) in enumerate(outs):
            match = hungarian_match(logits.detach(), boxes.detach(), tg)
            b_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(match)])
            q_idx = torch.cat([q for q, _ in match])
            gt_boxes = torch.cat([t["boxes_n"][g] for t, (_, g) in zip(tg, match)])
            gt_labels = torch.cat([t["labels"][g] for t, (_, g) in zip(tg, match)])
            if self.loss_type == "pap":
                logits, boxes = grad_scale(logits, boxes, self.pap.reg_weight)
            t = torch.zeros_like(logits)
            t[b_idx, q_idx, gt_labels] = 1.0
            pred = box_convert(boxes[b_idx, q_idx], "cxcywh", "xyxy")
            gt = box_convert(gt_boxes, "cxcywh", "xyxy")
            if self.loss_type == "pap":
                q = localisation_quality(pred, gt, self.reg_input)
                u = torch.zeros(logits.shape[:2], dtype=logits.dtype, device=logits.device).index_put((b_idx, q_idx), q)
                k = logits.shape[-1]
                losses[f"loss_pap_{lvl}"] = self.pap(logits.reshape(-1, k), (u[..., None] * t).reshape(-1, k),
                                                     t.reshape(-1, k))
            else:
                losses[f"loss_cls_{lvl}"] = 2.0 * sigmoid_focal_loss_sum(logits, t) / num_boxes
                losses[f"loss_l1_{lvl}"] = 5.0 * (boxes[b_idx, q_idx] - gt_boxes).abs().sum() / num_boxes
                losses[f"loss_giou_{lvl}"] = 2.0 * (1 - giou_aligned(pred, gt)).sum() / num_boxes
        return losses
