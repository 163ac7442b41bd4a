"""Build a detector and its losses from the Hydra config (``model``, ``loss``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from ..losses import PAPLoss
from .backbones import build_backbone
from .retinanet import PAPRetinaNet, retina_anchors

DETECTORS = ("retinanet", "faster_rcnn", "deformable_detr")


def build_pap(cfg: Any, head: str) -> PAPLoss:
    """PAPLoss from a config node with preset / ctrl_points / loss_form / num_topk / reg_weight / impl.

    ``params_file`` (a ``searched_params.json`` written by ``pap-search``) supplies control points and
    lambda of head ``head`` (``bbox``, ``rpn`` or ``roi``) and overrides the preset.
    """
    ctrl, lam = cfg.get("ctrl_points"), cfg.get("reg_weight")
    if cfg.get("params_file"):
        path = Path(os.path.expanduser(str(cfg.params_file)))
        if not path.is_file():
            raise FileNotFoundError(f"params_file {path} not found; it is the searched_params.json of a pap-search run")
        found = json.loads(path.read_text())
        if head not in found:
            raise ValueError(f"{path} has parameters for heads {sorted(found)}, not for {head!r}")
        ctrl, lam = found[head]["ctrl_points"], found[head]["reg_weight"]
    preset = None if cfg.get("params_file") else cfg.get("preset")
    return PAPLoss(preset=preset, ctrl_points=[list(r) for r in ctrl] if ctrl is not None else None,
                   loss_form=cfg.get("loss_form", "searched"), num_topk=float(cfg.get("num_topk", 1e5)),
                   impl=cfg.get("impl", "fast"), reg_weight=lam, den_eps=float(cfg.get("den_eps", 0.0)))


def build_detector(model_cfg: Any, loss_cfg: Any, num_classes: int) -> nn.Module:
    """RetinaNet, Faster R-CNN or Deformable DETR (PAP or baseline losses), K = ``num_classes`` classes."""
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
        pap = build_pap(loss_cfg.head, "bbox") if loss_cfg.type == "pap" else None
        return PAPRetinaNet(backbone, num_classes, anchors, loss_type=loss_cfg.type, pap=pap,
                            reg_input=loss_cfg.get("reg_input", "giou"), box_stds=tuple(model_cfg.box_stds),
                            giou_weight=float(loss_cfg.get("giou_weight", 2.0)),
                            pos_iou=float(model_cfg.assigner.pos_iou), neg_iou=float(model_cfg.assigner.neg_iou),
                            min_pos_iou=model_cfg.assigner.get("min_pos_iou"),
                            score_thresh=float(model_cfg.score_thresh), nms_thresh=float(model_cfg.nms_thresh),
                            detections_per_img=int(model_cfg.detections_per_img),
                            head_norm_groups=int(model_cfg.get("head_norm_groups", 0)), **sizes)
    if name == "deformable_detr":
        from .deformable_detr import PAPDeformableDETR

        d = model_cfg.detr
        pap = build_pap(loss_cfg.head, "bbox") if loss_cfg.type == "pap" else None
        return PAPDeformableDETR(backbone, num_classes, loss_type=loss_cfg.type, pap=pap, num_queries=int(d.num_queries),
                                 enc_layers=int(d.enc_layers), dec_layers=int(d.dec_layers), n_heads=int(d.n_heads),
                                 n_points=int(d.n_points), n_levels=int(d.n_levels), ffn_dim=int(d.ffn_dim),
                                 reg_input=loss_cfg.get("reg_input", "giou"),
                                 detections_per_img=int(model_cfg.detections_per_img), **sizes)
    from .faster_rcnn import build_faster_rcnn

    return build_faster_rcnn(backbone, num_classes, model_cfg, loss_cfg, sizes)
