"""Deformable DETR trained with the PAP loss — OUR ADAPTATION (the official repository has no DETR code).

Deformable DETR (Zhu et al. 2021) with its three official variants: single-stage queries, iterative
box refinement (``box_refine``) and the two-stage variant (``two_stage``, used with box refinement as
officially): multi-scale deformable attention in an encoder and a decoder, sigmoid classification (no
background), boxes as (cx, cy, w, h) in [0, 1] relative to the padded input.

Multi-scale input: ``neck="input_proj"`` is the official one (C3..C5 of the ResNet through 1x1 conv +
GroupNorm(32), a fourth level by a 3x3 stride-2 conv + GroupNorm on C5); ``neck="fpn"`` takes the first
``n_levels`` FPN outputs (the tiny CPU configs).

PAP for DETR (decisions of this package, spec §2.3 open questions):
* every decoder layer is supervised (auxiliary losses, as Deformable DETR does) with its own Hungarian
  matching; the matching cost is Deformable DETR's (focal class cost 2, L1 5, GIoU 2); in the two-stage
  variant the encoder proposals are supervised too, class-agnostically (all targets of class 0), as officially;
* positives = matched (query, class) pairs; all other (query, class) pairs of the batch are negatives;
  nothing is ignored; one ranking per decoder layer over the whole batch;
* IoU input u = (GIoU(matched box, GT) + 1) / 2; ``GradScale`` lambda on the box output;
* the baseline (``focal_l1_giou``) is Deformable DETR's loss: focal x 2 + L1 x 5 + GIoU x 2.

Coordinates are normalised by the padded batch size (officially by each image's valid size); the
two-stage proposals use the same convention.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

from repro_shared.guards import check_finite_inputs
from repro_shared.ops.msda import multi_scale_deformable_attn

from ..losses import PAPLoss, grad_scale, sigmoid_focal_loss_sum
from ..ops.boxes import giou_aligned, localisation_quality
from .backbones import ResNetBody
from .common import SizedTransform

LOSS_TYPES = ("pap", "focal_l1_giou")


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """logit of ``x`` clamped to [eps, 1 - eps] (Deformable DETR's ``inverse_sigmoid``)."""
    return torch.logit(x.clamp(eps, 1 - eps))


class MSDeformAttn(nn.Module):
    """Deformable attention module: queries (B, Lq, d), reference points (B, Lq, levels, 2) in [0, 1] or
    reference boxes (B, Lq, levels, 4) (cx, cy, w, h), flattened multi-scale input (B, sum H_l W_l, d) with
    its level shapes and padding mask (B, sum H_l W_l) -> (B, Lq, d).

    Sampling locations: ``ref + offset / (W_l, H_l)`` for points; ``ref_xy + offset / n_points * ref_wh / 2``
    for boxes (as officially). The sampling itself is :func:`repro_shared.ops.msda.multi_scale_deformable_attn`
    (``grid_sample`` reference on CPU, Triton kernels on CUDA).
    """

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
        v = v.view(b, v.shape[1], self.n_heads, self.d // self.n_heads)  # (B, S, heads, Dh)
        off = self.sampling_offsets(query).view(b, lq, self.n_heads, self.n_levels, self.n_points, 2)
        attn = self.attention_weights(query).view(b, lq, self.n_heads, self.n_levels * self.n_points)
        attn = attn.softmax(-1).view(b, lq, self.n_heads, self.n_levels, self.n_points)
        if ref.shape[-1] == 2:
            norm = torch.tensor([[w_, h_] for h_, w_ in shapes], dtype=query.dtype, device=query.device)
            loc = ref[:, :, None, :, None, :] + off / norm[None, None, None, :, None, :]
        else:
            loc = ref[:, :, None, :, None, :2] + off / self.n_points * ref[:, :, None, :, None, 2:] * 0.5
        return self.output_proj(multi_scale_deformable_attn(v, shapes, None, loc, attn))


class _FFN(nn.Module):
    def __init__(self, d: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, d),
                                 nn.Dropout(dropout))
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        return self.norm(x + self.net(x))


class EncoderLayer(nn.Module):
    """Deformable self-attention + FFN, post-norm; (B, S, d) -> (B, S, d)."""

    def __init__(self, d, n_levels, n_heads, n_points, hidden, dropout: float = 0.0):
        super().__init__()
        self.attn = MSDeformAttn(d, n_levels, n_heads, n_points)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d)
        self.ffn = _FFN(d, hidden, dropout)

    def forward(self, src, pos, ref, shapes, mask):
        return self.ffn(self.norm(src + self.drop(self.attn(src + pos, ref, src, shapes, mask))))


class DecoderLayer(nn.Module):
    """Self-attention, deformable cross-attention, FFN (post-norm, official order); (B, Q, d) -> (B, Q, d)."""

    def __init__(self, d, n_levels, n_heads, n_points, hidden, dropout: float = 0.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.drop1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d)
        self.cross = MSDeformAttn(d, n_levels, n_heads, n_points)
        self.drop2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = _FFN(d, hidden, dropout)

    def forward(self, tgt, qpos, ref, memory, shapes, mask):
        q = tgt + qpos
        tgt = self.norm1(tgt + self.drop1(self.self_attn(q, q, tgt, need_weights=False)[0]))
        tgt = self.norm2(tgt + self.drop2(self.cross(tgt + qpos, ref, memory, shapes, mask)))
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


def proposal_pos_embed(coords_unact: torch.Tensor, d: int, temperature: float = 10000.0) -> torch.Tensor:
    """Sine embedding of 4-d proposals given as logits (B, Q, 4) -> (B, Q, 2 d) (two-stage queries):
    ``d / 2`` frequencies per coordinate of ``sigmoid(coords) * 2 pi``."""
    n = d // 2
    dim_t = temperature ** (2 * (torch.arange(n, device=coords_unact.device) // 2) / n)
    pos = coords_unact.sigmoid()[..., None] * (2 * math.pi) / dim_t  # (B, Q, 4, n)
    return torch.stack([pos[..., 0::2].sin(), pos[..., 1::2].cos()], -1).flatten(2)


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict], cost_class=2.0, cost_l1=5.0,
                    cost_giou=2.0, what: str = "Hungarian matcher") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Deformable DETR matcher (focal class cost, L1 and GIoU box costs; ``scipy`` assignment per image).

    Args:
        logits: (B, Q, K) raw scores; boxes: (B, Q, 4) cxcywh normalised.
        targets: per image ``labels`` (n,) and ``boxes_n`` (n, 4) cxcywh normalised.
    Returns:
        per image (query indices, gt indices), long tensors on the device of ``logits``.
    Raises:
        repro_shared.guards.NonFiniteError: ``logits``, ``boxes`` or a target box holds NaN / inf (named),
            instead of scipy's "matrix contains invalid numeric entries".
    """
    check_finite_inputs(what, logits=logits, boxes=boxes)
    out = []
    p = logits.sigmoid()
    dev = logits.device
    for b, t in enumerate(targets):
        if t["labels"].numel() == 0:
            out.append((torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(0, dtype=torch.long, device=dev)))
            continue
        check_finite_inputs(what, target_boxes=t["boxes_n"])
        pb = p[b][:, t["labels"]]
        neg = 0.75 * pb ** 2 * -(1 - pb + 1e-8).log()
        pos = 0.25 * (1 - pb) ** 2 * -(pb + 1e-8).log()
        c = cost_class * (pos - neg) + cost_l1 * torch.cdist(boxes[b], t["boxes_n"], p=1) \
            - cost_giou * generalized_box_iou(box_convert(boxes[b], "cxcywh", "xyxy"),
                                              box_convert(t["boxes_n"], "cxcywh", "xyxy"))
        qi, gi = linear_sum_assignment(c.cpu().numpy())
        out.append((torch.as_tensor(qi, dtype=torch.long, device=dev), torch.as_tensor(gi, dtype=torch.long, device=dev)))
    return out


def _mlp(d: int) -> nn.Sequential:
    """Box head: Linear-ReLU-Linear-ReLU-Linear(4) (official ``MLP(d, d, 4, 3)``)."""
    return nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, 4))


class PAPDeformableDETR(nn.Module):
    """Deformable DETR (optionally with box refinement / two-stage) with PAP or its own loss.

    Args:
        backbone: a ``BackboneWithFPN`` (``neck="fpn"``: its first ``n_levels`` outputs, width
            ``out_channels``) or a :class:`ResNetBody` (official ``input_proj`` neck to ``d_model``).
        box_refine: each decoder layer refines the previous layer's boxes (own class / box heads).
        two_stage: queries from the top-``num_queries`` encoder proposals (official two-stage variant).
        dropout: transformer dropout (official 0.1).

    Train: ``model(images, targets)`` -> loss dict; eval: ``model(images)`` -> list of
    {boxes (100, 4) xyxy in input pixels, scores, labels 0..K-1}.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, loss_type: str = "pap", pap: PAPLoss | None = None,
                 num_queries: int = 100, enc_layers: int = 6, dec_layers: int = 6, n_heads: int = 8,
                 n_points: int = 4, n_levels: int = 4, ffn_dim: int = 1024, dropout: float = 0.0,
                 box_refine: bool = False, two_stage: bool = False, d_model: int = 256, reg_input: str = "giou",
                 train_size: int = 512, test_min_size: int = 500, test_max_size: int = 833,
                 detections_per_img: int = 100):
        super().__init__()
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown Deformable DETR loss_type {loss_type!r}; known: {', '.join(LOSS_TYPES)}")
        if loss_type == "pap" and pap is None:
            raise ValueError("loss_type 'pap' needs a PAPLoss")
        self.backbone, self.num_classes, self.n_levels = backbone, num_classes, n_levels
        self.num_queries, self.box_refine, self.two_stage = num_queries, box_refine, two_stage
        self.loss_type, self.pap, self.reg_input, self.detections_per_img = loss_type, pap, reg_input, detections_per_img
        self.transform = SizedTransform(train_size, test_min_size, test_max_size)
        if isinstance(backbone, ResNetBody):
            d = d_model
            chans = backbone.num_channels
            self.input_proj = nn.ModuleList(
                [nn.Sequential(nn.Conv2d(c, d, 1), nn.GroupNorm(32, d)) for c in chans[:n_levels]]
                + [nn.Sequential(nn.Conv2d(chans[-1] if k == 0 else d, d, 3, stride=2, padding=1), nn.GroupNorm(32, d))
                   for k in range(n_levels - len(chans))])
            for proj in self.input_proj:
                nn.init.xavier_uniform_(proj[0].weight)
                nn.init.zeros_(proj[0].bias)
            self.input_norm = None
        else:
            d = backbone.out_channels
            self.input_proj = None
            self.input_norm = nn.ModuleList(nn.GroupNorm(min(32, d // 2), d) for _ in range(n_levels))
        self.level_embed = nn.Parameter(torch.randn(n_levels, d) * 0.02)
        self.encoder = nn.ModuleList(EncoderLayer(d, n_levels, n_heads, n_points, ffn_dim, dropout)
                                     for _ in range(enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(d, n_levels, n_heads, n_points, ffn_dim, dropout)
                                     for _ in range(dec_layers))
        if two_stage:
            self.enc_output = nn.Linear(d, d)
            self.enc_output_norm = nn.LayerNorm(d)
            self.pos_trans = nn.Linear(2 * d, 2 * d)
            self.pos_trans_norm = nn.LayerNorm(2 * d)
        else:
            self.query_embed = nn.Embedding(num_queries, 2 * d)
            self.reference_points = nn.Linear(d, 2)
        class_embed, bbox_embed = nn.Linear(d, num_classes), _mlp(d)
        nn.init.constant_(class_embed.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.zeros_(bbox_embed[-1].weight)
        nn.init.zeros_(bbox_embed[-1].bias)
        n_pred = dec_layers + (1 if two_stage else 0)  # two-stage: the last heads score the encoder proposals
        if box_refine:  # one head per decoder layer (official ``_get_clones``); only the first starts at w, h = sigmoid(-2)
            self.class_embed = nn.ModuleList(copy.deepcopy(class_embed) for _ in range(n_pred))
            self.bbox_embed = nn.ModuleList(copy.deepcopy(bbox_embed) for _ in range(n_pred))
            nn.init.constant_(self.bbox_embed[0][-1].bias[2:], -2.0)
        else:  # shared heads
            nn.init.constant_(bbox_embed[-1].bias[2:], -2.0)
            self.class_embed = nn.ModuleList([class_embed] * n_pred)
            self.bbox_embed = nn.ModuleList([bbox_embed] * n_pred)
        if two_stage:
            for box in self.bbox_embed:
                nn.init.zeros_(box[-1].bias[2:])

    def _features(self, images):
        """Multi-scale maps (B, d, H_l, W_l) and padding masks (B, H_l, W_l) of the first ``n_levels`` levels."""
        x = images.tensors
        b, _, hp, wp = x.shape
        mask = torch.ones(b, hp, wp, dtype=torch.bool, device=x.device)
        for i, (h, w) in enumerate(images.image_sizes):
            mask[i, :h, :w] = False
        feats = list(self.backbone(x).values())
        if self.input_proj is None:
            srcs = [norm(f) for norm, f in zip(self.input_norm, feats[: self.n_levels])]
        else:
            srcs = [proj(f) for proj, f in zip(self.input_proj, feats)]
            for proj in self.input_proj[len(feats):]:
                srcs.append(proj(feats[-1] if len(srcs) == len(feats) else srcs[-1]))
        masks = [F.interpolate(mask[None].float(), size=f.shape[-2:])[0].bool() for f in srcs]
        return srcs, masks

    def _encode(self, srcs: list[torch.Tensor], masks: list[torch.Tensor]):
        flat, poss, pads, shapes = [], [], [], []
        for lvl, (f, m) in enumerate(zip(srcs, masks)):
            shapes.append((f.shape[2], f.shape[3]))
            flat.append(f.flatten(2).transpose(1, 2))
            poss.append(sine_pos_embed(m, f.shape[1]).flatten(1, 2) + self.level_embed[lvl])
            pads.append(m.flatten(1))
        src, pos, pad = torch.cat(flat, 1), torch.cat(poss, 1), torch.cat(pads, 1)
        refs = []
        for hh, ww in shapes:
            ys, xs = torch.meshgrid(torch.arange(hh, device=src.device) + 0.5, torch.arange(ww, device=src.device) + 0.5,
                                    indexing="ij")
            refs.append(torch.stack([xs.flatten() / ww, ys.flatten() / hh], -1))
        ref = torch.cat(refs, 0)[None, :, None, :].expand(src.shape[0], -1, len(shapes), -1)
        for layer in self.encoder:
            src = layer(src, pos, ref, shapes, pad)
        return src, shapes, pad

    def _encoder_proposals(self, memory: torch.Tensor, pad: torch.Tensor, shapes) -> tuple[torch.Tensor, torch.Tensor]:
        """Two-stage: one proposal per encoder token (cell centre, side 0.05 * 2^level) as logits, +inf where
        padded or too close to the border; the tokens projected for the proposal heads. -> (B, S, d), (B, S, 4)."""
        props = []
        for lvl, (hh, ww) in enumerate(shapes):
            ys, xs = torch.meshgrid((torch.arange(hh, device=memory.device, dtype=memory.dtype) + 0.5) / hh,
                                    (torch.arange(ww, device=memory.device, dtype=memory.dtype) + 0.5) / ww, indexing="ij")
            wh = torch.full_like(xs, 0.05 * 2.0 ** lvl)
            props.append(torch.stack([xs, ys, wh, wh], -1).reshape(-1, 4))
        props = torch.cat(props, 0)[None].expand(memory.shape[0], -1, -1)
        valid = ((props > 0.01) & (props < 0.99)).all(-1, keepdim=True) & ~pad[..., None]
        props = torch.logit(props).masked_fill(~valid, float("inf"))
        out = self.enc_output_norm(self.enc_output(memory.masked_fill(~valid, 0.0)))
        return out, props

    def _forward_heads(self, images):
        """-> list over decoder layers of (logits (B, Q, K), boxes (B, Q, 4) cxcywh), and the two-stage
        encoder outputs (logits (B, S, K), boxes (B, S, 4)) or None."""
        memory, shapes, pad = self._encode(*self._features(images))
        b, _, d = memory.shape
        enc_out = None
        if self.two_stage:
            mem, props = self._encoder_proposals(memory, pad, shapes)
            enc_logits = self.class_embed[-1](mem)
            enc_coords = self.bbox_embed[-1](mem) + props
            top = enc_logits[..., 0].topk(min(self.num_queries, enc_logits.shape[1]), dim=1).indices
            coords = enc_coords.gather(1, top[..., None].expand(-1, -1, 4)).detach()
            ref = coords.sigmoid()  # (B, Q, 4) reference boxes
            qpos, tgt = self.pos_trans_norm(self.pos_trans(proposal_pos_embed(coords, d))).split(d, dim=-1)
            enc_out = (enc_logits, enc_coords.sigmoid())
        else:
            qpos, tgt = self.query_embed.weight.split(d, dim=1)
            qpos, tgt = qpos[None].expand(b, -1, -1), tgt[None].expand(b, -1, -1)
            ref = self.reference_points(qpos).sigmoid()  # (B, Q, 2) reference points
        outs = []
        for lid, layer in enumerate(self.decoder):
            tgt = layer(tgt, qpos, ref[:, :, None, :].expand(-1, -1, len(shapes), -1), memory, shapes, pad)
            logits, delta = self.class_embed[lid](tgt), self.bbox_embed[lid](tgt)
            if ref.shape[-1] == 4:
                boxes = (delta + inverse_sigmoid(ref)).sigmoid()
            else:
                boxes = torch.cat([(delta[..., :2] + inverse_sigmoid(ref)).sigmoid(), delta[..., 2:].sigmoid()], -1)
            outs.append((logits, boxes))
            if self.box_refine:
                ref = boxes.detach()
        return outs, enc_out

    def forward(self, images, targets=None):
        sizes = [img.shape[-2:] for img in images]
        images, targets = self.transform(images, targets)
        outs, enc_out = self._forward_heads(images)
        if self.training:
            return self._loss(outs, enc_out, images, targets)
        logits, boxes = outs[-1]
        hp, wp = images.tensors.shape[-2:]
        scale = torch.tensor([wp, hp, wp, hp], dtype=boxes.dtype, device=boxes.device)
        dets = []
        for lg, bx in zip(logits, boxes):
            scores, idx = lg.sigmoid().flatten().topk(min(self.detections_per_img, lg.numel()))
            q, lab = idx // self.num_classes, idx % self.num_classes
            dets.append({"boxes": box_convert(bx[q] * scale, "cxcywh", "xyxy"), "scores": scores, "labels": lab})
        return self.transform.postprocess(dets, images.image_sizes, sizes)

    def _loss(self, outs, enc_out, images, targets):
        hp, wp = images.tensors.shape[-2:]
        scale = torch.tensor([wp, hp, wp, hp], dtype=torch.float32, device=images.tensors.device)
        tg = [{"labels": t["labels"], "boxes_n": box_convert(t["boxes"], "xyxy", "cxcywh") / scale} for t in targets]
        num_boxes = max(sum(int(t["labels"].numel()) for t in tg), 1)
        losses = {}
        for lvl, (logits, boxes) in enumerate(outs):
            losses.update(self._set_loss(logits, boxes, tg, num_boxes, str(lvl)))
        if enc_out is not None:  # class-agnostic proposals: every target is class 0
            binary = [{"labels": torch.zeros_like(t["labels"]), "boxes_n": t["boxes_n"]} for t in tg]
            losses.update(self._set_loss(*enc_out, binary, num_boxes, "enc"))
        return losses

    def _set_loss(self, logits, boxes, tg, num_boxes: int, name: str) -> dict[str, torch.Tensor]:
        """Loss of one prediction set: logits (B, Q, K), boxes (B, Q, 4) cxcywh; targets normalised."""
        match = hungarian_match(logits.detach(), boxes.detach(), tg, what=f"Hungarian matcher (outputs {name})")
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
            return {f"loss_pap_{name}": self.pap(logits.reshape(-1, k), (u[..., None] * t).reshape(-1, k),
                                                 t.reshape(-1, k))}
        return {f"loss_cls_{name}": 2.0 * sigmoid_focal_loss_sum(logits, t) / num_boxes,
                f"loss_l1_{name}": 5.0 * (boxes[b_idx, q_idx] - gt_boxes).abs().sum() / num_boxes,
                f"loss_giou_{name}": 2.0 * (1 - giou_aligned(pred, gt)).sum() / num_boxes}
