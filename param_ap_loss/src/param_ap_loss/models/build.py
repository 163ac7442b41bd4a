"""Build a detector and its losses from the Hydra config (``model``, ``loss``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..losses import PAPLoss
from .backbones import build_backbone
from .retinanet import PAPRetinaNet, retina_anchors

DETECTORS = ("retinanet", "faster_rcnn")


def build_pap(cfg: Any) -> PAPLoss:
    """PAPLoss from a config node with preset / ctrl_points / loss_form / num_topk / reg_weight / impl."""
    ctrl = cfg.get("ctrl_points")
    return PAPLoss(preset=cfg.get("preset"), ctrl_points=[list(r) for r in ctrl] if ctrl is not None else None,
                   loss_form=cfg.get("loss_form", "searched"), num_topk=float(cfg.get("num_topk", 1e5)),
                   impl=cfg.get("impl", "fast"), reg_weight=cfg.get("reg_weight"),
                   den_eps=float(cfg.get("den_eps", 0.0)))


def build_detector(model_cfg: Any, loss_cfg: Any, num_classes: int) -> nn.Module:
    """RetinaNet or Faster R-CNN (PAP or baseline losses) with K = ``num_classes`` foreground classes."""
    name = model_cfg.name
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    bb = model_cfg.backbone
    backbone = build_backbone(bb.name, bb.get("weights"), int(bb.get("trainable_layers", 3)),
                              tuple(bb.returned_layers), int(model_cfg.fpn_channels), bb.get("extra_blocks"),
                              int(bb.get("width", 16)))
    sizes = dict(train_size=int(model_cfg.train_size), test_min_size=int(model_cfg.test_min_size),
                 test_max_size=int(model_cfg.test_max_size))
    if name == "retinanet":
        a = model_cfg.anchors
        anchors = retina_anchors(tuple(a.strides), float(a.octave_base_scale), int(a.scales_per_octave),
                                 tuple(a.ratios))
        pap = build_pap(loss_cfg.head) if loss_cfg.type == "pap" else None
        return PAPRetinaNet(backbone, num_classes, anchors, loss_type=loss_cfg.type, pap=pap,
                            reg_input=loss_cfg.get("reg_input", "giou"), box_stds=tuple(model_cfg.box_stds),
                            giou_weight=float(loss_cfg.get("giou_weight", 2.0)),
                            pos_iou=float(model_cfg.assigner.pos_iou), neg_iou=float(model_cfg.assigner.neg_iou),
                            min_pos_iou=model_cfg.assigner.get("min_pos_iou"),
                            score_thresh=float(model_cfg.score_thresh), nms_thresh=float(model_cfg.nms_thresh),
                            detections_per_img=int(model_cfg.detections_per_img),
                            head_norm_groups=int(model_cfg.get("head_norm_groups", 0)), **sizes)
    from .faster_rcnn import build_faster_rcnn

    return build_faster_rcnn(backbone, num_classes, model_cfg, loss_cfg, sizes)
