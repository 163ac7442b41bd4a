"""Build a detector and its losses from the Hydra config (``model``, ``loss``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from ..losses import PAPLoss
from ..ranking_losses import ALRPLoss
from .backbones import ResNetBody, build_backbone, load_backbone_weights
from .retinanet import PAPRetinaNet, retina_anchors

DETECTORS = ("retinanet", "faster_rcnn", "deformable_detr")


def build_pap(cfg: Any, head: str) -> PAPLoss:
    """PAPLoss from a config node with preset / ctrl_points / loss_form / num_topk / reg_weight / impl.

    ``params_file`` (a ``searched_params.json`` written by ``pap-search``) supplies control points and
    lambda of head ``head`` (``bbox``, ``rpn`` or ``roi``) and overrides the preset.

    Raises:
        FileNotFoundError: ``params_file`` does not exist.
        ValueError: ``params_file`` is not JSON, or has no ``ctrl_points`` / ``reg_weight`` for ``head``;
            invalid control points (see :class:`PAPLoss`).
    """
    ctrl, lam = cfg.get("ctrl_points"), cfg.get("reg_weight")
    if cfg.get("params_file"):
        path = Path(os.path.expanduser(str(cfg.params_file)))
        if not path.is_file():
            raise FileNotFoundError(f"params_file {path} not found; it is the searched_params.json of a pap-search run")
        try:
            found = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"params_file {path} is not valid JSON ({e}); it is the searched_params.json of a "
                             "pap-search run") from e
        if not isinstance(found, dict) or head not in found:
            heads = sorted(found) if isinstance(found, dict) else "none"
            raise ValueError(f"{path} has parameters for heads {heads}, not for {head!r}")
        entry = found[head]
        if not isinstance(entry, dict) or not {"ctrl_points", "reg_weight"} <= set(entry):
            raise ValueError(f"{path}: head {head!r} needs 'ctrl_points' and 'reg_weight' as pap-search writes them, "
                             f"got {str(entry)[:80]}")
        ctrl, lam = entry["ctrl_points"], entry["reg_weight"]
    preset = None if cfg.get("params_file") else cfg.get("preset")
    return PAPLoss(preset=preset, ctrl_points=[list(r) for r in ctrl] if ctrl is not None else None,
                   loss_form=cfg.get("loss_form", "searched"), num_topk=float(cfg.get("num_topk", 1e5)),
                   impl=cfg.get("impl", "fast"), reg_weight=lam, den_eps=float(cfg.get("den_eps", 0.0)))


def build_alrp(loss_cfg: Any, head: str) -> ALRPLoss:
    """aLRP loss module of head ``head`` (``bbox``, ``rpn``, ``roi``) from ``loss.{head}_weight`` /
    ``loss.sb_period`` (official: RPN weight 0.2, period 3665 = one COCO epoch at batch 32)."""
    return ALRPLoss(head_weight=float(loss_cfg.get(f"{head}_weight", 1.0)), period=int(loss_cfg.get("sb_period", 3665)),
                    sb_init=float(loss_cfg.get("sb_init", 50.0)))


def build_detector(model_cfg: Any, loss_cfg: Any, num_classes: int, init_path: str | Path | None = None,
                   log=None) -> nn.Module:
    """RetinaNet, Faster R-CNN or Deformable DETR with the loss of ``loss_cfg`` (PAP or a baseline row),
    K = ``num_classes`` classes. ``init_path``: ImageNet weights of the ResNet trunk (a torchvision
    state dict, see :func:`~param_ap_loss.models.backbones.load_backbone_weights`); None = random init.

    Raises:
        ValueError: unknown detector / backbone / loss type (lists the known ones).
    """
    name = model_cfg.name
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    bb = model_cfg.backbone
    if name == "deformable_detr" and model_cfg.get("neck", "fpn") == "input_proj":
        backbone = ResNetBody(bb.name, int(bb.get("trainable_layers", 3)), tuple(bb.returned_layers),
                              int(bb.get("width", 16)))
    else:
        backbone = build_backbone(bb.name, int(bb.get("trainable_layers", 3)), tuple(bb.returned_layers),
                                  int(model_cfg.fpn_channels), bb.get("extra_blocks"), int(bb.get("width", 16)))
    if init_path is not None:
        load_backbone_weights(backbone, init_path, log)
    train_size = model_cfg.train_size  # null: no resize in training (the data pipeline sets the size)
    sizes = dict(train_size=None if train_size is None else int(train_size), test_min_size=int(model_cfg.test_min_size),
                 test_max_size=int(model_cfg.test_max_size))
    kind, reg_input = loss_cfg.type, loss_cfg.get("reg_input", "giou")
    if name == "retinanet":
        a = model_cfg.anchors
        anchors = retina_anchors(tuple(a.strides), float(a.octave_base_scale), int(a.scales_per_octave),
                                 tuple(a.ratios))
        return PAPRetinaNet(backbone, num_classes, anchors, loss_type=kind,
                            pap=build_pap(loss_cfg.head, "bbox") if kind == "pap" else None,
                            alrp=build_alrp(loss_cfg, "bbox") if kind == "alrp" else None,
                            reg_input=reg_input, box_stds=tuple(model_cfg.box_stds),
                            giou_weight=float(loss_cfg.get("giou_weight", 2.0)),
                            pos_iou=float(model_cfg.assigner.pos_iou), neg_iou=float(model_cfg.assigner.neg_iou),
                            min_pos_iou=model_cfg.assigner.get("min_pos_iou"),
                            score_thresh=float(model_cfg.score_thresh), nms_thresh=float(model_cfg.nms_thresh),
                            detections_per_img=int(model_cfg.detections_per_img),
                            head_norm_groups=int(model_cfg.get("head_norm_groups", 0)), **sizes)
    if name == "deformable_detr":
        from .deformable_detr import PAPDeformableDETR

        d = model_cfg.detr
        pap = build_pap(loss_cfg.head, "bbox") if kind == "pap" else None
        return PAPDeformableDETR(backbone, num_classes, loss_type=kind, pap=pap, num_queries=int(d.num_queries),
                                 enc_layers=int(d.enc_layers), dec_layers=int(d.dec_layers), n_heads=int(d.n_heads),
                                 n_points=int(d.n_points), n_levels=int(d.n_levels), ffn_dim=int(d.ffn_dim),
                                 dropout=float(d.get("dropout", 0.0)), box_refine=bool(d.get("box_refine", False)),
                                 two_stage=bool(d.get("two_stage", False)), d_model=int(model_cfg.fpn_channels),
                                 reg_input=reg_input, detections_per_img=int(model_cfg.detections_per_img), **sizes)
    from .faster_rcnn import build_faster_rcnn

    rpn_loss = roi_loss = None
    if kind == "pap":
        rpn_loss, roi_loss = build_pap(loss_cfg.rpn, "rpn"), build_pap(loss_cfg.roi, "roi")
    elif kind == "alrp":
        rpn_loss, roi_loss = build_alrp(loss_cfg, "rpn"), build_alrp(loss_cfg, "roi")
    return build_faster_rcnn(backbone, num_classes, model_cfg, kind, sizes, rpn_loss, roi_loss, reg_input,
                             float(loss_cfg.get("giou_weight", 10.0)))
