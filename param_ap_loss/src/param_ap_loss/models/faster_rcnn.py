"""Faster R-CNN-R50-FPN with PAP losses in the RPN and the RoI head (spec §2.2), or the CE baseline.

* RPN (official ``PAPLossRPNHead``): one sigmoid logit per anchor; the 256 sampled anchors per image
  (50 % positive) are ranked together, all others are ignored (T = -1); unit-anchor GIoU quality.
* RoI head (official ``PAPLossShared2FCBBoxHead``): K sigmoid logits (no background), class-specific
  deltas; *all* proposals are used (PseudoSampler, GT boxes not added); deltas decoded with the
  proposals, quality = (GIoU(pred, GT) + 1) / 2; sigmoid test scores.
* ``ce_giou`` / ``ce_l1`` baselines (mmdet 2.1 base config): RPN BCE + L1 on the deltas (coder stds 1)
  over 256 sampled anchors; RoI softmax CE with background over 512 sampled RoIs (25 % positive, GT
  added) + GIoU x 10 on decoded boxes (``ce_giou``) or L1 on the deltas (``ce_l1``), / #sampled RoIs.
* ``alrp`` (aLRP code base ``alrp_loss_faster_rcnn_r50_fpn_100e_coco500``): aLRP Loss in the RPN (all
  anchors ranked, no sampling; head weight 0.2; E = GIoU loss / 2 / (1 - 0.7)) and in the RoI head (all
  proposals, sigmoid, E = GIoU loss / 2 / (1 - 0.5)), each with its self-balancing weight.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign, batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes, roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

from repro_shared.guards import check_finite_inputs

from ..losses import PAPLoss, giou_loss_sum, grad_scale
from ..ops.boxes import decode_unit_anchor, giou_aligned, localisation_quality
from ..ranking_losses import ALRPLoss
from .common import MaxIoUMatcher, SizedTransform, stds_to_weights

LOSS_TYPES = ("pap", "ce_giou", "ce_l1", "alrp")
SIGMOID_LOSSES = ("pap", "alrp")  # K sigmoid logits, no background, all proposals (PseudoSampler)


class AlignedMultiScaleRoIAlign(MultiScaleRoIAlign):
    """FPN RoIAlign with ``aligned=True`` (mmdet 2.x); level = floor(log2(sqrt(area) / 56)) in 0..3.

    features: dict of (B, C, H_l, W_l); boxes: list of (n_i, 4) -> (sum n_i, C, 7, 7).
    """

    def forward(self, x, boxes, image_shapes):
        feats = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(feats, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)
        levels = self.map_levels(boxes)
        out = feats[0].new_zeros((rois.shape[0], feats[0].shape[1], *self.output_size))
        for lvl, (feat, scale) in enumerate(zip(feats, self.scales)):
            idx = torch.where(levels == lvl)[0]
            out[idx] = roi_align(feat, rois[idx], self.output_size, spatial_scale=scale,
                                 sampling_ratio=self.sampling_ratio, aligned=True).to(out.dtype)
        return out


class PAPRPN(RegionProposalNetwork):
    """torchvision RPN with the loss of the configured row.

    * ``pap`` given: PAP over the 256 sampled anchors, returned as ``loss_objectness`` (the whole PAP
      loss; ``loss_rpn_box_reg`` = 0: the box branch is trained through the quality input of the same loss);
    * ``alrp`` given: aLRP over all non-ignored anchors (``loss_objectness`` = L_cls, ``loss_rpn_box_reg``
      = SB x L_loc), E = (1 - GIoU) / (2 (1 - ``pos_iou``));
    * otherwise BCE + L1 on the deltas over the sampled anchors (mmdet ``L1Loss``, / #sampled).
    """

    def __init__(self, *args, pap: PAPLoss | None = None, alrp: ALRPLoss | None = None, reg_input: str = "giou",
                 box_stds=(0.1, 0.1, 0.2, 0.2), pos_iou: float = 0.7, **kwargs):
        super().__init__(*args, **kwargs)
        self.pap, self.alrp, self.reg_input, self.box_stds, self.pos_iou = pap, alrp, reg_input, tuple(box_stds), pos_iou

    def compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets):
        """objectness (N, 1), deltas (N, 4); labels (1 pos, 0 neg, -1 ignored) / targets: per-image lists.

        Raises:
            repro_shared.guards.NonFiniteError: a prediction holds NaN / inf (named).
        """
        check_finite_inputs("RPN outputs", objectness=objectness, rpn_deltas=pred_bbox_deltas)
        tgt = torch.cat(regression_targets)
        if self.pap is None and self.alrp is None:
            pos_masks, neg_masks = self.fg_bg_sampler(labels)
            pos_idx = torch.where(torch.cat(pos_masks))[0]
            sampled = torch.cat([pos_idx, torch.where(torch.cat(neg_masks))[0]])
            box_loss = (pred_bbox_deltas[pos_idx] - tgt[pos_idx]).abs().sum() / max(sampled.numel(), 1)
            obj_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], torch.cat(labels)[sampled])
            return obj_loss, box_loss
        if self.alrp is not None:
            t = torch.cat(labels).reshape(-1, 1)
            pos_idx = (t[:, 0] == 1).nonzero().squeeze(1)
            e = (1 - giou_aligned(decode_unit_anchor(pred_bbox_deltas[pos_idx], self.box_stds),
                                  decode_unit_anchor(tgt[pos_idx], self.box_stds))) / (2 * (1 - self.pos_iou))
            out = self.alrp(objectness.reshape(-1, 1), t, e)
            return out["loss_cls"], out["loss_bbox"]
        objectness, pred_bbox_deltas = grad_scale(objectness, pred_bbox_deltas, self.pap.reg_weight)
        pos_masks, neg_masks = self.fg_bg_sampler(labels)
        pos = torch.cat(pos_masks).bool()
        neg = torch.cat(neg_masks).bool()
        t = torch.full_like(objectness.reshape(-1, 1), -1.0)
        t[pos] = 1.0
        t[neg] = 0.0
        pos_idx = pos.nonzero().squeeze(1)
        if pos_idx.numel() == 0:
            return objectness.sum() * 0 + pred_bbox_deltas.sum() * 0, objectness.new_zeros(())
        q = localisation_quality(decode_unit_anchor(pred_bbox_deltas[pos_idx], self.box_stds),
                                 decode_unit_anchor(tgt[pos_idx], self.box_stds), self.reg_input)
        ious = objectness.new_zeros(t.shape[0]).index_put((pos_idx,), q)
        logits = objectness.reshape(-1, 1)
        return self.pap(logits, ious[:, None] * t.clamp(min=0), t), objectness.new_zeros(())


class PAPRoIHeads(RoIHeads):
    """Box-only RoI heads: PAP or aLRP (sigmoid, K classes, all proposals) or the CE baselines (K + 1)."""

    def __init__(self, *args, loss_type: str = "pap", pap: PAPLoss | None = None, alrp: ALRPLoss | None = None,
                 reg_input: str = "giou", giou_weight: float = 10.0, **kwargs):
        super().__init__(*args, **kwargs)
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown Faster R-CNN loss_type {loss_type!r}; known: {', '.join(LOSS_TYPES)}")
        self.loss_type, self.pap, self.alrp = loss_type, pap, alrp
        self.reg_input, self.giou_weight = reg_input, giou_weight

    def _assign_all(self, proposals, targets):
        """PseudoSampler: every proposal, labels 0..K-1 for positives and -1 for negatives."""
        labels, gts = [], []
        for props, tgt in zip(proposals, targets):
            if tgt["boxes"].numel() == 0:
                labels.append(torch.full((props.shape[0],), -1, dtype=torch.long, device=props.device))
                gts.append(torch.zeros_like(props))
                continue
            m = self.proposal_matcher(box_iou(tgt["boxes"], props))
            lab = tgt["labels"][m.clamp(min=0)].clone()
            lab[m < 0] = -1
            labels.append(lab)
            gts.append(tgt["boxes"][m.clamp(min=0)])
        return proposals, labels, gts

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            if self.loss_type in SIGMOID_LOSSES:
                proposals, labels, gts = self._assign_all(proposals, targets)
            else:
                shifted = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
                proposals, _, labels, reg_t = self.select_training_samples(proposals, shifted)
                gts = [self.box_coder.decode_single(r, p) for r, p in zip(reg_t, proposals)]
        feats = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        cls, reg = self.box_predictor(feats)
        if self.training:
            return [], self._loss(cls, reg, torch.cat(proposals), torch.cat(labels), torch.cat(gts))
        boxes, scores, labels = self._postprocess(cls, reg, proposals, image_shapes)
        return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(boxes, scores, labels)], {}

    def _loss(self, cls, reg, props, labels, gts):
        """cls (R, K[+1]), reg (R, (K[+1]) 4), proposals (R, 4), labels (R,), matched GT boxes (R, 4).

        Raises:
            repro_shared.guards.NonFiniteError: a prediction holds NaN / inf (named).
        """
        check_finite_inputs("RoI head outputs", class_logits=cls, box_regression=reg)
        r, k = cls.shape
        if self.loss_type in SIGMOID_LOSSES:
            if self.loss_type == "pap":
                cls, reg = grad_scale(cls, reg, self.pap.reg_weight)
            pos_idx = (labels >= 0).nonzero().squeeze(1)
            t = torch.zeros_like(cls)
            t[pos_idx, labels[pos_idx]] = 1.0
            if pos_idx.numel() == 0:
                zero = cls.sum() * 0 + reg.sum() * 0
                return {"loss": zero} if self.loss_type == "pap" else {"loss_cls": zero, "loss_bbox": zero}
            deltas = reg.reshape(r, k, 4)[pos_idx, labels[pos_idx]]
            pred = self.box_coder.decode_single(deltas, props[pos_idx])
            if self.loss_type == "alrp":  # E = GIoU loss / 2 / (1 - 0.5)
                return self.alrp(cls, t, 1 - giou_aligned(pred, gts[pos_idx]))
            q = localisation_quality(pred, gts[pos_idx], self.reg_input)
            ious = cls.new_zeros(r).index_put((pos_idx,), q)
            return {"loss": self.pap(cls, ious[:, None] * t, t)}
        loss_cls = F.cross_entropy(cls, labels)
        pos_idx = (labels > 0).nonzero().squeeze(1)
        deltas = reg.reshape(r, k, 4)[pos_idx, labels[pos_idx]]
        if self.loss_type == "ce_l1":  # mmdet L1Loss on the deltas, avg_factor = #sampled RoIs
            tgt = self.box_coder.encode_single(gts[pos_idx], props[pos_idx])
            loss_box = (deltas - tgt).abs().sum() / max(labels.numel(), 1)
        else:
            loss_box = self.giou_weight * giou_loss_sum(self.box_coder.decode_single(deltas, props[pos_idx]),
                                                        gts[pos_idx]) / max(labels.numel(), 1)
        return {"loss_classifier": loss_cls, "loss_box_reg": loss_box}

    def _postprocess(self, cls, reg, proposals, image_shapes):
        """Per class: score > thresh, NMS, top ``detections_per_img``; labels 0..K-1."""
        if self.loss_type in SIGMOID_LOSSES:
            scores_all = torch.sigmoid(cls)
        else:
            scores_all = F.softmax(cls, -1)[:, 1:]
            reg = reg.reshape(reg.shape[0], -1, 4)[:, 1:].reshape(reg.shape[0], -1)
        k = scores_all.shape[1]
        boxes_all = self.box_coder.decode(reg, proposals).reshape(-1, k, 4)
        out_b, out_s, out_l = [], [], []
        for boxes, scores, shape in zip(boxes_all.split([len(p) for p in proposals]),
                                        scores_all.split([len(p) for p in proposals]), image_shapes):
            boxes = clip_boxes_to_image(boxes, shape)
            labels = torch.arange(k, device=cls.device).expand_as(scores)
            boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = remove_small_boxes(boxes, 1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            out_b.append(boxes[keep])
            out_s.append(scores[keep])
            out_l.append(labels[keep])
        return out_b, out_s, out_l


def build_faster_rcnn(backbone: nn.Module, num_classes: int, model_cfg: Any, loss_type: str, sizes: dict,
                      rpn_loss: PAPLoss | ALRPLoss | None = None, roi_loss: PAPLoss | ALRPLoss | None = None,
                      reg_input: str = "giou", giou_weight: float = 10.0) -> nn.Module:
    """Faster R-CNN from the ``model`` config node (``configs/model/faster_rcnn_*.yaml``) and the loss of
    the row: ``rpn_loss`` / ``roi_loss`` are the PAP or aLRP modules of the two heads (None for CE).

    Raises:
        ValueError: unknown ``loss_type`` (lists the known ones) or a missing loss module.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss {loss_type!r} does not fit Faster R-CNN; use one of {', '.join(LOSS_TYPES)}")
    sigmoid = loss_type in SIGMOID_LOSSES
    if sigmoid and (rpn_loss is None or roi_loss is None):
        raise ValueError(f"loss_type {loss_type!r} needs its RPN and RoI loss modules")
    rc = model_cfg.rpn
    anchors = AnchorGenerator(sizes=tuple((int(s),) for s in rc.anchor_sizes),
                              aspect_ratios=(tuple(rc.ratios),) * len(rc.anchor_sizes))
    c = backbone.out_channels
    rpn_head = RPNHead(c, anchors.num_anchors_per_location()[0])
    rpn = PAPRPN(anchors, rpn_head, fg_iou_thresh=float(rc.assigner.pos_iou), bg_iou_thresh=float(rc.assigner.neg_iou),
                 batch_size_per_image=int(rc.sampler.num), positive_fraction=float(rc.sampler.pos_fraction),
                 pre_nms_top_n={"training": int(rc.pre_nms_top_n.train), "testing": int(rc.pre_nms_top_n.test)},
                 post_nms_top_n={"training": int(rc.post_nms_top_n.train), "testing": int(rc.post_nms_top_n.test)},
                 nms_thresh=float(rc.nms_thresh), pap=rpn_loss if loss_type == "pap" else None,
                 alrp=rpn_loss if loss_type == "alrp" else None, reg_input=reg_input, box_stds=tuple(rc.box_stds),
                 pos_iou=float(rc.assigner.pos_iou))
    rpn.proposal_matcher = MaxIoUMatcher(float(rc.assigner.pos_iou), float(rc.assigner.neg_iou),
                                         rc.assigner.get("min_pos_iou"))
    if sigmoid:  # PAP / aLRP RPN coder stds (0.1, 0.1, 0.2, 0.2); the CE baselines keep mmdet's base 1.0
        rpn.box_coder = BoxCoder(stds_to_weights(rc.box_stds))
    roi = model_cfg.roi
    rep = int(roi.representation_size)
    n_levels = len(backbone.body.return_layers) if hasattr(backbone, "body") else 4
    pool = AlignedMultiScaleRoIAlign([str(i) for i in range(min(n_levels, 4))], 7, 0)
    box_head = TwoMLPHead(c * 7 * 7, rep)
    for m in box_head.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    predictor = FastRCNNPredictor(rep, num_classes if sigmoid else num_classes + 1)
    nn.init.normal_(predictor.cls_score.weight, std=0.01)
    nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
    nn.init.zeros_(predictor.cls_score.bias)
    nn.init.zeros_(predictor.bbox_pred.bias)
    heads = PAPRoIHeads(pool, box_head, predictor, float(roi.assigner.pos_iou), float(roi.assigner.neg_iou),
                        int(roi.sampler.num), float(roi.sampler.pos_fraction),
                        stds_to_weights(roi.box_stds), float(model_cfg.score_thresh), float(model_cfg.nms_thresh),
                        int(model_cfg.detections_per_img), loss_type=loss_type,
                        pap=roi_loss if loss_type == "pap" else None, alrp=roi_loss if loss_type == "alrp" else None,
                        reg_input=reg_input, giou_weight=giou_weight)
    heads.fg_bg_sampler = BalancedPositiveNegativeSampler(int(roi.sampler.num), float(roi.sampler.pos_fraction))
    transform = SizedTransform(sizes["train_size"], sizes["test_min_size"], sizes["test_max_size"])
    return GeneralizedRCNN(backbone, rpn, heads, transform)
