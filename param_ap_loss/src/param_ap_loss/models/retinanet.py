"""RetinaNet-R50-FPN with the PAP loss (official ``PAPLossRetinaHead``, spec §2.1) or a baseline loss.

torchvision's :class:`~torchvision.models.detection.RetinaNet` supplies backbone, head, anchors and
post-processing; this module replaces the box coder (stds from the config: 0.1/0.1/0.2/0.2 for PAP,
AP-Loss and aLRP, 1.0 for the Focal baselines as in mmdet's base config), the anchors (6 per location)
and the loss. Class logits have one column per class, no background (labels 0..K-1).

Losses (``loss_type``; the paper's RetinaNet rows):

* ``pap``: one PAP ranking of all (anchor, class) pairs, quality u = (GIoU + 1) / 2 of unit-anchor
  boxes, ``GradScale`` lambda on the box branch;
* ``focal_giou``: Focal (gamma 2, alpha 0.25) + GIoU x 2 on decoded boxes, both / #positives;
* ``focal_l1``: Focal + L1 on the deltas (weight 1), / #positives (mmdet ``L1Loss``);
* ``ap_loss``: AP-Loss (interpolated, error-driven) + smooth L1 (beta 1) on the deltas, mean over the
  positives' 4 coordinates (the aLRP code base's AP-Loss config);
* ``alrp``: aLRP Loss with E = 1 - GIoU of unit-anchor boxes (GIoU loss / 2 / (1 - 0.5)) and self-balancing.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import box_iou

from repro_shared.guards import check_finite_inputs

from ..losses import PAPLoss, giou_loss_sum, grad_scale, sigmoid_focal_loss_sum
from ..ops.boxes import decode_unit_anchor, giou_aligned, localisation_quality
from ..ranking_losses import ALRPLoss, ap_loss
from .common import MaxIoUMatcher, SizedTransform, stds_to_weights

LOSS_TYPES = ("pap", "focal_giou", "focal_l1", "ap_loss", "alrp")


def retina_anchors(strides=(8, 16, 32, 64, 128), octave_base_scale: float = 4.0, scales_per_octave: int = 2,
                   ratios=(0.5, 1.0, 2.0)) -> AnchorGenerator:
    """mmdet-style anchors: sizes ``stride * octave_base_scale * 2^(i / scales_per_octave)`` x ratios."""
    sizes = tuple(tuple(s * octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave))
                  for s in strides)
    return AnchorGenerator(sizes=sizes, aspect_ratios=(tuple(ratios),) * len(strides))


class PAPRetinaNet(RetinaNet):
    """RetinaNet whose training loss is PAP (one ranking of all anchor x class pairs) or Focal + GIoU.

    Args:
        backbone: FPN backbone with ``out_channels``.
        num_classes: K (no background column).
        loss_type: one of :data:`LOSS_TYPES` (module docstring).
        pap: the :class:`PAPLoss` (its ``reg_weight`` is the GradScale lambda); required for ``pap``.
        alrp: the :class:`ALRPLoss` (self-balancing state); required for ``alrp``.
        reg_input: IoU input of the PAP loss, ``giou`` | ``iou`` | ``l1`` (spec §3.5).
        box_stds: delta coder stds.
        giou_weight, focal_alpha, focal_gamma: baseline loss settings (mmdet Focal + GIoU w2.0).
        train_size, test_min_size, test_max_size: model-side resize (train images arrive at train_size).
        head_norm_groups: > 0 adds GroupNorm to the head towers (not in the paper; for tiny runs from scratch).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, anchor_generator: AnchorGenerator,
                 loss_type: str = "pap", pap: PAPLoss | None = None, alrp: ALRPLoss | None = None,
                 reg_input: str = "giou",
                 box_stds=(0.1, 0.1, 0.2, 0.2), giou_weight: float = 2.0, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, pos_iou: float = 0.5, neg_iou: float = 0.4, min_pos_iou: float = 0.0,
                 train_size: int = 512, test_min_size: int = 500, test_max_size: int = 833,
                 score_thresh: float = 0.05, nms_thresh: float = 0.6, detections_per_img: int = 100,
                 topk_candidates: int = 1000, head_norm_groups: int = 0):
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown RetinaNet loss_type {loss_type!r}; known: {', '.join(LOSS_TYPES)}")
        if loss_type == "pap" and pap is None:
            raise ValueError("loss_type 'pap' needs a PAPLoss")
        if loss_type == "alrp" and alrp is None:
            raise ValueError("loss_type 'alrp' needs an ALRPLoss")
        head = None
        if head_norm_groups:  # GroupNorm in the head towers (tiny from-scratch runs; the paper head has none)
            head = RetinaNetHead(backbone.out_channels, anchor_generator.num_anchors_per_location()[0], num_classes,
                                 norm_layer=partial(nn.GroupNorm, head_norm_groups))
        super().__init__(backbone, num_classes, anchor_generator=anchor_generator, head=head, score_thresh=score_thresh,
                         nms_thresh=nms_thresh, detections_per_img=detections_per_img,
                         topk_candidates=topk_candidates)
        self.transform = SizedTransform(train_size, test_min_size, test_max_size)
        self.box_coder = BoxCoder(stds_to_weights(box_stds))
        self.proposal_matcher = MaxIoUMatcher(pos_iou, neg_iou, min_pos_iou)
        self.num_classes = num_classes
        self.loss_type, self.pap, self.alrp, self.reg_input = loss_type, pap, alrp, reg_input
        self.box_stds = tuple(box_stds)
        self.giou_weight, self.focal_alpha, self.focal_gamma = giou_weight, focal_alpha, focal_gamma
        # mmdet init: all head convs N(0, 0.01), classification bias = -log((1 - 0.01) / 0.01)
        for m in self.head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.head.classification_head.cls_logits.bias, -math.log((1 - 0.01) / 0.01))

    def compute_loss(self, targets, head_outputs, anchors):
        """targets: list of {boxes (n, 4) xyxy, labels (n,) in 0..K-1}; head outputs (B, HWA, K), (B, HWA, 4).

        Raises:
            repro_shared.guards.NonFiniteError: a head output holds NaN / inf (named), before any loss.
        """
        cls, reg = head_outputs["cls_logits"], head_outputs["bbox_regression"]
        check_finite_inputs("RetinaNet head outputs", cls_logits=cls, bbox_regression=reg)
        if self.loss_type == "pap":
            cls, reg = grad_scale(cls, reg, self.pap.reg_weight)
        b, n, k = cls.shape
        matched = []
        for anc, tgt in zip(anchors, targets):
            if tgt["boxes"].numel() == 0:
                matched.append(torch.full((anc.shape[0],), -1, dtype=torch.long, device=anc.device))
            else:
                matched.append(self.proposal_matcher(box_iou(tgt["boxes"], anc)))
        matched_t = torch.stack(matched)  # (B, HWA): >= 0 gt index, -1 negative, -2 ignored
        pos = matched_t >= 0
        gt_boxes = torch.cat([t["boxes"][m[p]] for t, m, p in zip(targets, matched, pos)])  # (P, 4)
        gt_labels = torch.cat([t["labels"][m[p]] for t, m, p in zip(targets, matched, pos)])  # (P,)
        pos_anchors = torch.stack(anchors)[pos]
        logits = cls.reshape(b * n, k)
        flat_pos = pos.reshape(-1)
        pos_idx = flat_pos.nonzero().squeeze(1)
        t = torch.zeros_like(logits)
        t[pos_idx, gt_labels] = 1
        t[(matched_t == -2).reshape(-1)] = -1
        pred_deltas = reg.reshape(b * n, 4)[flat_pos]
        tgt_deltas = self.box_coder.encode_single(gt_boxes, pos_anchors)
        if self.loss_type in ("pap", "alrp"):
            if pos_idx.numel() == 0:
                zero = cls.sum() * 0 + reg.sum() * 0
                return {"loss": zero} if self.loss_type == "pap" else {"loss_cls": zero, "loss_bbox": zero}
            pred_unit = decode_unit_anchor(pred_deltas, self.box_stds)
            tgt_unit = decode_unit_anchor(tgt_deltas, self.box_stds)
            if self.loss_type == "alrp":  # E = GIoU loss / 2 / (1 - 0.5)
                return self.alrp(logits, t, 1 - giou_aligned(pred_unit, tgt_unit))
            q = localisation_quality(pred_unit, tgt_unit, self.reg_input)
            ious = logits.new_zeros(b * n).index_put((pos_idx,), q)
            return {"loss": self.pap(logits, ious[:, None] * t.clamp(min=0), t)}
        valid = t[:, 0] != -1
        if self.loss_type == "ap_loss":
            loss_box = F.smooth_l1_loss(pred_deltas, tgt_deltas, beta=1.0, reduction="sum") / max(pred_deltas.numel(), 1)
            return {"loss_cls": ap_loss(logits[valid], t[valid]), "loss_bbox": loss_box}
        num_pos = max(int(pos_idx.numel()), 1)
        loss_cls = sigmoid_focal_loss_sum(logits[valid], t[valid], self.focal_alpha, self.focal_gamma) / num_pos
        if self.loss_type == "focal_l1":
            return {"loss_cls": loss_cls, "loss_bbox": (pred_deltas - tgt_deltas).abs().sum() / num_pos}
        pred_boxes = self.box_coder.decode_single(pred_deltas, pos_anchors)
        loss_box = self.giou_weight * giou_loss_sum(pred_boxes, gt_boxes) / num_pos
        return {"loss_cls": loss_cls, "loss_bbox": loss_box}
