"""BEVFormer v2 detector (spec §2.1): backbone + FPN -> BEV encoder (+ history, fusion) -> Group-DETR decoder,
with the DD3D perspective head (training loss, and proposals for the two-stage hybrid queries, §2.8).

Official module names: ``img_backbone``, ``img_neck``, ``pts_bbox_head`` (``bev_embedding``,
``positional_encoding``, ``query_embedding``, ``transformer``, ``cls_branches``, ``reg_branches``),
``fcos3d_bbox_head``; ``detr3d_head`` (DETR3D perspective head of paper Tab. 5, official DETR3D names inside).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..data.constants import PC_RANGE, POST_CENTER_RANGE
from .backbone import FPN, GridMask, build_backbone
from .bev_nms import rotated_bev_nms
from .box_branches import build_branches, predict_layers
from .dd3d import NuscenesDD3D, dd3d_inference
from .detr3d import Detr3DHead
from .transformer import DetectionTransformerDecoder, PerceptionTransformerV2, bda_warp, ego_motion_warp


class LearnedPositionalEncoding(nn.Module):
    """mmdet LearnedPositionalEncoding: pos[:, :, i, j] = cat(col_embed[j], row_embed[i])."""

    def __init__(self, num_feats: int, row_num_embed: int, col_num_embed: int):
        super().__init__()
        self.row_embed = nn.Embedding(row_num_embed, num_feats)
        self.col_embed = nn.Embedding(col_num_embed, num_feats)

    def forward(self, B: int, H: int, W: int) -> torch.Tensor:
        """-> (B, H*W, 2 * num_feats), row-major."""
        x = self.col_embed.weight[:W][None].expand(H, W, -1)
        y = self.row_embed.weight[:H][:, None].expand(H, W, -1)
        return torch.cat([x, y], -1).flatten(0, 1)[None].expand(B, -1, -1)


class BEVFormerHead(nn.Module):
    """BEV queries, object queries (Group DETR), the transformer, cls/reg branches, hybrid proposal queries."""

    def __init__(self, num_classes=10, embed_dims=256, bev_h=200, bev_w=200, num_query=900, group_detr=1,
                 num_reg_fcs=2, code_size=10, transformer: dict | None = None, pc_range=PC_RANGE,
                 two_stage: bool = False, num_proposals: int = 100):
        super().__init__()
        self.num_classes, self.embed_dims, self.bev_h, self.bev_w = num_classes, embed_dims, bev_h, bev_w
        self.num_query, self.group_detr, self.pc_range = num_query, group_detr, tuple(pc_range)
        self.two_stage, self.num_proposals = two_stage, num_proposals
        self.bev_embedding = nn.Embedding(bev_h * bev_w, embed_dims)
        self.positional_encoding = LearnedPositionalEncoding(embed_dims // 2, bev_h, bev_w)
        self.query_embedding = nn.Embedding(num_query * group_detr, embed_dims * 2)
        self.transformer = PerceptionTransformerV2(embed_dims=embed_dims, pc_range=pc_range, **(transformer or {}))
        self.cls_branches, self.reg_branches = build_branches(len(self.transformer.decoder.layers), embed_dims,
                                                              num_classes, code_size, num_reg_fcs)
        if two_stage:  # spec §2.8 [design]
            self.proposal_query = nn.Embedding(num_proposals, embed_dims)
            self.proposal_pos = nn.Embedding(num_proposals, embed_dims)
            self.proposal_pos_mlp = nn.Sequential(nn.Linear(3, embed_dims), nn.ReLU(inplace=True),
                                                  nn.Linear(embed_dims, embed_dims))

    def encode(self, mlvl_feats, lidar2img, img_shape, bda=None):
        """mlvl_feats: 4 maps (B, N, C, h, w) -> BEV (B, H*W, C)."""
        B = mlvl_feats[0].shape[0]
        q = self.bev_embedding.weight[None].expand(B, -1, -1)
        pos = self.positional_encoding(B, self.bev_h, self.bev_w)
        return self.transformer.encode(mlvl_feats, q, pos, self.bev_h, self.bev_w, lidar2img, img_shape, bda)

    def _queries(self, B: int, proposals: torch.Tensor | None):
        """Learned (+ proposal) queries. proposals (B, K2, 3) normalised centres (NaN = padding) or None.

        Returns query, query_pos (B, Q_total, C), reference (B, Q_total, 3); groups contiguous.
        """
        G = self.group_detr if self.training else 1
        emb = self.query_embedding.weight[: self.num_query * G]
        pos, content = emb.split(self.embed_dims, dim=1)
        ref = self.transformer.reference_points(pos).sigmoid()
        pos, content, ref = (t[None].expand(B, -1, -1) for t in (pos, content, ref))
        if not self.two_stage:
            return content, pos, ref
        C, K2 = self.embed_dims, self.num_proposals
        learned = self.transformer.reference_points(self.proposal_pos.weight).sigmoid()[None].expand(B, -1, -1)
        p_ref = torch.where(torch.isnan(proposals), learned, proposals.detach())  # pad with learned refs
        p_pos = self.proposal_pos.weight[None] + self.proposal_pos_mlp(p_ref)
        p_q = self.proposal_query.weight[None].expand(B, -1, -1)
        per = [(content.view(B, G, -1, C), p_q), (pos.view(B, G, -1, C), p_pos), (ref.view(B, G, -1, 3), p_ref)]
        out = []
        for learned, prop in per:
            prop = prop[:, None].expand(B, G, K2, prop.shape[-1])
            out.append(torch.cat([learned, prop], 2).flatten(1, 2))
        return out

    def decode(self, value, proposals=None):
        """value (B, HW, C) -> all_cls (L, B, Q, K), all_reg (L, B, Q, 10) with metric centres (spec §2.6)."""
        B = value.shape[0]
        query, query_pos, ref = self._queries(B, proposals)
        states, refs = self.transformer.decode(value, query, query_pos, ref, self.reg_branches, self.bev_h, self.bev_w)
        return predict_layers(states, refs, self.cls_branches, self.reg_branches, self.pc_range)


class AuxBEVHead(nn.Module):
    """Second BEV detection head on the same BEV features (paper Tab. 2 'BEV & BEV' control): its own queries,
    reference points, decoder and branches; training-only auxiliary loss."""

    def __init__(self, embed_dims: int, num_classes: int, num_query: int, decoder: dict, pc_range, bev_hw):
        super().__init__()
        self.embed_dims, self.pc_range, self.bev_hw = embed_dims, tuple(pc_range), tuple(bev_hw)
        self.query_embedding = nn.Embedding(num_query, embed_dims * 2)
        self.reference_points = nn.Linear(embed_dims, 3)
        self.decoder = DetectionTransformerDecoder(embed_dims=embed_dims, **decoder)
        self.cls_branches, self.reg_branches = build_branches(len(self.decoder.layers), embed_dims, num_classes)
        for p in self.decoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.decoder.modules():
            if hasattr(m, "init_weights") and m is not self.decoder:
                m.init_weights()
        nn.init.xavier_uniform_(self.reference_points.weight)
        nn.init.zeros_(self.reference_points.bias)

    def decode(self, value):
        B = value.shape[0]
        pos, content = self.query_embedding.weight.split(self.embed_dims, dim=1)
        ref = self.reference_points(pos).sigmoid()
        pos, content, ref = (t[None].expand(B, -1, -1) for t in (pos, content, ref))
        states, refs = self.decoder(content, pos, value, ref, self.reg_branches, self.bev_hw)
        return predict_layers(states, refs, self.cls_branches, self.reg_branches, self.pc_range)


def views_to_lidar(dets: list, intrinsics: torch.Tensor, lidar2img: torch.Tensor) -> dict:
    """Camera-frame detections of the N views of one sample -> the lidar frame (concatenated over views).

    dets: N dicts (``dd3d_inference``) with centre (k, 3) and R (k, 3, 3) in the camera frame (object x axis =
    length, y = width, z = height), wlh (k, 3), score3d, speed, labels; intrinsics (N, 3, 3); lidar2img
    (N, 4, 4) = K lidar2cam. Returns centre (k, 3), BEV boxes (k, 5) = (x, y, w, l, yaw) with yaw the
    heading of the length axis in the lidar xy plane, wlh, score3d, speed, labels.
    """
    out = {k: [] for k in ("centre", "bev", "wlh", "score3d", "speed", "labels")}
    for n, d in enumerate(dets):
        K4 = torch.eye(4, device=intrinsics.device, dtype=intrinsics.dtype)
        K4[:3, :3] = intrinsics[n]
        cam2lidar = torch.linalg.inv(torch.linalg.inv(K4) @ lidar2img[n])
        c = d["centre"] @ cam2lidar[:3, :3].T + cam2lidar[:3, 3]
        R = cam2lidar[:3, :3] @ d["R"]  # object axes in the lidar frame
        yaw = torch.atan2(R[:, 1, 0], R[:, 0, 0])
        out["centre"].append(c)
        out["bev"].append(torch.stack([c[:, 0], c[:, 1], d["wlh"][:, 0], d["wlh"][:, 1], yaw], -1))
        for k in ("wlh", "score3d", "speed", "labels"):
            out[k].append(d[k])
    return {k: torch.cat(v) for k, v in out.items()}


def nms_free_decode(cls: torch.Tensor, reg: torch.Tensor, max_num: int = 300, post_center_range=POST_CENTER_RANGE):
    """NMSFreeCoder (spec §2.6) for one sample: cls (Q, K), reg (Q, 10) -> boxes (n, 9), scores, labels."""
    K = cls.shape[-1]
    scores, idx = cls.sigmoid().flatten().topk(min(max_num, cls.numel()))
    labels, q = idx % K, idx // K
    r = reg[q]
    boxes = torch.stack([r[:, 0], r[:, 1], r[:, 4], r[:, 2].exp(), r[:, 3].exp(), r[:, 5].exp(),
                         torch.atan2(r[:, 6], r[:, 7]), r[:, 8], r[:, 9]], -1)
    pcr = boxes.new_tensor(post_center_range)
    keep = ((boxes[:, :3] >= pcr[:3]) & (boxes[:, :3] <= pcr[3:])).all(-1)
    return boxes[keep], scores[keep], labels[keep]


class BEVFormerV2(nn.Module):
    """The detector. ``forward(batch)`` returns the loss dict in training, decoded boxes in eval."""

    def __init__(self, backbone: str = "tiny", pretrained: bool = False, tiny_channels=(16, 32, 64, 128),
                 embed_dims: int = 256, num_cams: int = 6, head: dict | None = None, perspective: bool = True,
                 dd3d_convs: int = 4, grid_mask: bool = True, fix_smooth_l1: bool = False,
                 bev_nms_iou: float = 0.3, num_bev_levels: int = 4, temporal_mode: str = "reencode",
                 aux_bev_head: bool = False, perspective_head: str = "dd3d", detr3d: dict | None = None):
        super().__init__()
        self.img_backbone = build_backbone(backbone, pretrained, tiny_channels)
        self.img_neck = FPN(self.img_backbone.out_channels, embed_dims, 5)
        head = dict(head or {})
        self.pts_bbox_head = BEVFormerHead(embed_dims=embed_dims, **head)
        self.perspective = perspective
        self.two_stage = self.pts_bbox_head.two_stage
        self.strides = (8, 16, 32, 64, 128)
        if perspective_head not in ("dd3d", "detr3d"):
            raise ValueError(f"unknown perspective_head {perspective_head!r}; known: dd3d, detr3d (paper Tab. 5)")
        if perspective_head == "detr3d" and self.two_stage:
            raise ValueError("the two-stage hybrid queries take their proposals from the DD3D head; use "
                             "perspective_head=dd3d with head.two_stage=true")
        self.perspective_head = perspective_head
        if (perspective and perspective_head == "dd3d") or self.two_stage:
            self.fcos3d_bbox_head = NuscenesDD3D(embed_dims, self.pts_bbox_head.num_classes, dd3d_convs, self.strides)
        if perspective and perspective_head == "detr3d":  # paper Tab. 5 DETR3D rows
            self.detr3d_head = Detr3DHead(embed_dims, self.pts_bbox_head.num_classes, num_cams=num_cams,
                                          num_levels=num_bev_levels, pc_range=self.pts_bbox_head.pc_range,
                                          **(detr3d or {}))
        self.grid_mask = GridMask() if grid_mask else None
        if aux_bev_head:  # 'BEV & BEV' control (paper Tab. 2)
            h = self.pts_bbox_head
            dec = dict((head.get("transformer") or {}).get("decoder") or {})
            self.aux_bbox_head = AuxBEVHead(embed_dims, h.num_classes, h.num_query, dec, h.pc_range, (h.bev_h, h.bev_w))
        self.fix_smooth_l1, self.bev_nms_iou, self.num_bev_levels = fix_smooth_l1, bev_nms_iou, num_bev_levels
        self.num_cams = num_cams
        if temporal_mode not in ("reencode", "warp"):
            raise ValueError(f"unknown temporal_mode {temporal_mode!r}; use 'reencode' (official code) or "
                             "'warp' (paper)")
        self.temporal_mode = temporal_mode
        self.frames = tuple(self.pts_bbox_head.transformer.frames)
        if 0 not in self.frames or list(self.frames) != sorted(set(self.frames)):
            raise ValueError(f"frames {self.frames} must be increasing key-frame offsets that include 0 (the current "
                             "frame), e.g. (-1, 0) for one past frame or (-4, 0, 4) for a past and a future one")
        self.cur = self.frames.index(0)  # position of the current frame in the batch's T axis

    def extract_feat(self, imgs: torch.Tensor, flip: torch.Tensor, use_grid_mask: bool) -> list:
        """imgs (B, N, 3, H, W) -> 5 FPN maps (B, N, C, h, w), flipped back along W for flipped samples."""
        B, N = imgs.shape[:2]
        if N != self.num_cams:
            raise ValueError(f"got {N} camera images per sample; the model was built for {self.num_cams} cameras")
        x = imgs.flatten(0, 1)
        if use_grid_mask and self.grid_mask is not None:
            x = self.grid_mask(x)
        feats = self.img_neck(self.img_backbone(x))
        out = []
        for f in feats:
            f = f.view(B, N, *f.shape[1:])
            if bool(flip.any()):  # ``flip`` stays on the host (collate): no device sync here
                f = torch.where(flip.view(B, 1, 1, 1, 1).to(f.device), f.flip(-1), f)
            out.append(f)
        return out

    def _other_bevs(self, batch) -> dict:
        """BEVs (B, HW, C) of the frames other than the current one (past, and future in bi-directional
        configs), keyed by their position in ``frames``; encoder in eval mode under no_grad (spec §2.5).

        ``reencode`` (official code): encode frame k directly on the current grid with the re-targeted lidar2img.
        ``warp`` (paper §3.4): encode frame k on its own grid, then resample it into the current frame with
        the ego motion T_{t->k}."""
        bda = self._bda(batch)  # other frames share the current frame's BDA (spec §2.4)
        head = self.pts_bbox_head
        was_training = self.training
        self.eval()
        bevs = {}
        with torch.no_grad():
            for t in range(len(self.frames)):
                if t == self.cur:
                    continue
                feats = self.extract_feat(batch["imgs"][:, t], batch["flip"], False)
                if self.temporal_mode == "reencode":
                    bevs[t] = head.encode(feats[: self.num_bev_levels], batch["lidar2img"][:, t], batch["img_shape"],
                                          bda)
                    continue
                k2t = batch["ego_k2t"][:, t]
                own = head.encode(feats[: self.num_bev_levels], batch["lidar2img"][:, t] @ k2t[:, None],
                                  batch["img_shape"])  # per-sample ego motion, all N cameras
                B, HW, C = own.shape
                bev = ego_motion_warp(own.transpose(1, 2).reshape(B, C, head.bev_h, head.bev_w),
                                      torch.linalg.inv(k2t), head.pc_range)
                if bda is not None:
                    bev = bda_warp(bev, bda)
                bevs[t] = bev.flatten(2).transpose(1, 2)
        self.train(was_training)
        return bevs

    def _bda(self, batch):
        """BDA matrices (B, 3, 3) in training (None at test time or when every sample is un-augmented; the
        host-side flag ``bda_identity`` of ``collate`` decides, so no device sync)."""
        if not self.training or batch.get("bda_identity", False):
            return None
        return batch["bda"]

    @torch.no_grad()
    def proposals(self, dd3d_out: dict, batch) -> torch.Tensor:
        """Two-stage proposals (spec §2.8): per-view DD3D detections -> lidar frame -> BEV NMS -> top-K2.

        Returns (B, K2, 3) centres normalised to pc_range; NaN rows where fewer than K2 proposals survive
        (the head fills them with learned reference points).
        """
        B, N = batch["imgs"].shape[0], batch["imgs"].shape[2]
        cur = self.cur
        K2 = self.pts_bbox_head.num_proposals
        intr = batch["intrinsics"].flatten(0, 1)  # (B*N, 3, 3)
        dets = dd3d_inference(dd3d_out, self.strides, torch.linalg.inv(intr))
        r = torch.tensor(self.pts_bbox_head.pc_range, device=intr.device)
        out = torch.full((B, K2, 3), float("nan"), device=intr.device)
        for b in range(B):
            v = views_to_lidar(dets[b * N:(b + 1) * N], batch["intrinsics"][b], batch["lidar2img"][b, cur])
            if len(v["centre"]) == 0:
                continue
            keep = rotated_bev_nms(v["bev"], v["score3d"], self.bev_nms_iou)[:K2]  # class-agnostic BEV NMS 0.3
            out[b, : len(keep)] = ((v["centre"][keep] - r[:3]) / (r[3:] - r[:3])).clamp(1e-3, 1 - 1e-3)
        return out

    def _detr3d(self, batch, feats):
        """DETR3D perspective head on the current frame's first ``num_bev_levels`` FPN maps."""
        return self.detr3d_head(feats[: self.num_bev_levels], batch["lidar2img"][:, self.cur], batch["img_shape"])

    @torch.no_grad()
    def predict_perspective(self, batch, max_num: int = 300) -> list:
        """Perspective-head-only detector (paper Tab. 2 'Perspective only'): per-view DD3D detections ->
        lidar frame, velocity = predicted speed along the heading, class-aware rotated BEV NMS across views
        (with the DETR3D head: its last layer, NMS-free decoding). Returns per sample (boxes (n, 9), scores,
        labels) like the BEV head's decoder."""
        imgs = batch["imgs"]
        N, cur = imgs.shape[2], self.cur
        feats = self.extract_feat(imgs[:, cur], batch["flip"], False)
        if self.perspective_head == "detr3d":
            cls, reg = self._detr3d(batch, feats)
            return [nms_free_decode(cls[-1, b], reg[-1, b], max_num) for b in range(imgs.shape[0])]
        dd3d_out = self.fcos3d_bbox_head([f.flatten(0, 1) for f in feats])
        dets = dd3d_inference(dd3d_out, self.strides, torch.linalg.inv(batch["intrinsics"].flatten(0, 1)))
        results = []
        for b in range(imgs.shape[0]):
            v = views_to_lidar(dets[b * N:(b + 1) * N], batch["intrinsics"][b], batch["lidar2img"][b, cur])
            keep = []
            for cls in v["labels"].unique():
                idx = (v["labels"] == cls).nonzero().flatten()
                keep.append(idx[rotated_bev_nms(v["bev"][idx], v["score3d"][idx], self.bev_nms_iou)])
            keep = torch.cat(keep) if keep else v["labels"]
            keep = keep[v["score3d"][keep].argsort(descending=True)][:max_num]
            yaw = v["bev"][keep, 4]
            sp = v["speed"][keep]
            boxes = torch.cat([v["centre"][keep], v["wlh"][keep], yaw[:, None], (sp * yaw.cos())[:, None],
                               (sp * yaw.sin())[:, None]], -1)
            results.append((boxes, v["score3d"][keep], v["labels"][keep]))
        return results

    def forward(self, batch: dict):
        """Training: dict(all_cls, all_reg, dd3d[, aux_cls, aux_reg][, detr3d_cls, detr3d_reg]); eval: per sample
        (boxes (n, 9), scores, labels)."""
        all_cls, all_reg, persp, value = self.forward_raw(batch)
        if self.training:
            out = dict(all_cls=all_cls, all_reg=all_reg, dd3d=None)
            if self.perspective_head == "detr3d" and persp is not None:
                out["detr3d_cls"], out["detr3d_reg"] = persp["cls"], persp["reg"]
            else:
                out["dd3d"] = persp
            if hasattr(self, "aux_bbox_head"):
                out["aux_cls"], out["aux_reg"] = self.aux_bbox_head.decode(value)
            return out
        Qg = self.pts_bbox_head.num_query + (self.pts_bbox_head.num_proposals if self.two_stage else 0)
        return [nms_free_decode(all_cls[-1, b, :Qg], all_reg[-1, b, :Qg]) for b in range(all_cls.shape[1])]

    def forward_raw(self, batch: dict):
        """-> all_cls (L, B, Q, K), all_reg (L, B, Q, 10), perspective-head outputs (DD3D maps, or DETR3D
        ``{cls, reg}``; None at test time unless the two-stage model needs DD3D proposals), decoder value
        (B, HW, C)."""
        imgs = batch["imgs"]  # (B, T, N, 3, H, W), T ordered as ``frames``
        others = self._other_bevs(batch) if len(self.frames) > 1 else {}
        feats = self.extract_feat(imgs[:, self.cur], batch["flip"], self.training)
        head = self.pts_bbox_head
        bev = head.encode(feats[: self.num_bev_levels], batch["lidar2img"][:, self.cur], batch["img_shape"],
                          self._bda(batch))
        bevs = [bev if t == self.cur else others[t] for t in range(len(self.frames))]
        value = head.transformer.fuse(bevs, head.bev_h, head.bev_w)
        persp = None
        if self.perspective and self.training and self.perspective_head == "detr3d":
            persp = dict(zip(("cls", "reg"), self._detr3d(batch, feats)))
        elif (self.perspective and self.training) or self.two_stage:
            persp = self.fcos3d_bbox_head([f.flatten(0, 1) for f in feats])
        props = self.proposals(persp, batch) if self.two_stage else None
        all_cls, all_reg = head.decode(value, props)
        return all_cls, all_reg, persp, value
