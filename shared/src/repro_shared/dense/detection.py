"""torchvision Mask R-CNN over ViTDet's simple feature pyramid (ViTDet's ``mask_rcnn_vitdet_b_100ep`` heads)."""

from __future__ import annotations

from typing import Sequence

from timm.layers import LayerNorm2d
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from .pyramid import SimpleFeaturePyramid

__all__ = ["build_vitdet_maskrcnn"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_vitdet_maskrcnn(trunk: nn.Module, num_classes: int, *, out_channels: int = 256,
                          scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5), min_size: int = 1024,
                          max_size: int = 1024, image_mean: Sequence[float] = IMAGENET_MEAN,
                          image_std: Sequence[float] = IMAGENET_STD,
                          anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
                          head_channels: int = 256, head_convs: int = 4, fc_dim: int = 1024,
                          box_detections_per_img: int = 100, box_score_thresh: float = 0.05,
                          **maskrcnn_kwargs) -> MaskRCNN:
    """Mask R-CNN with a ViT trunk, ViTDet-style.

    Pieces (detectron2 ``mask_rcnn_vitdet_b_100ep``): :class:`SimpleFeaturePyramid` (256 channels, LN, P6),
    anchors of ``anchor_sizes`` (one per level) x aspect ratios (0.5, 1, 2), RPN head with 2 convs, box head
    4 conv (256) + 1 fc (1024) with LayerNorm, mask head 4 conv (256) with LayerNorm, RoIAlign 7x7 / 14x14
    on the four finest levels. Everything else is torchvision's ``MaskRCNN`` (its sampling, losses, NMS and
    post-processing).

    Args:
        trunk: images ``(B, 3, H, W)`` -> list of maps whose last is ``(B, C, H/p, W/p)``; needs
            ``patch_size`` and ``embed_dim`` (e.g. :class:`repro_shared.dense.TimmViTTrunk`). Every size the
            transform produces must be divisible by ``p``: torchvision pads batches to multiples of 32.
        num_classes: number of object classes **plus one** for the background (torchvision's convention;
            COCO: 81, LVIS: 1204, the procedural shapes: 4).
        out_channels: pyramid width (256); head_channels, head_convs, fc_dim: the box head's
            ``head_convs`` convs of ``head_channels`` + one fc of ``fc_dim``, and the mask head's ``head_convs``
            convs (ViTDet: 256, 4, 1024; smaller only for CPU tests, the heads dominate the cost there).
        min_size, max_size: torchvision's resize (shorter side to ``min_size``, longer at most ``max_size``);
            ViTDet trains at 1024 with large-scale jitter done in the data pipeline.
        image_mean, image_std: normalisation applied inside the model to images in [0, 1].
        maskrcnn_kwargs: any other ``torchvision.models.detection.MaskRCNN`` argument (e.g. RPN/RoI sample
            sizes, ``box_nms_thresh``).

    Returns:
        ``MaskRCNN``: ``model(images, targets)`` -> loss dict in training; ``model(images)`` -> list of
        ``{boxes (K, 4) xyxy, labels (K,), scores (K,), masks (K, 1, H, W)}`` in evaluation.

    Raises:
        ValueError: ``num_classes < 2``.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background too and must be >= 2, got {num_classes}")
    backbone = SimpleFeaturePyramid(trunk, out_channels, scale_factors, top_block=True)
    n_levels = len(scale_factors) + 1
    if len(anchor_sizes) != n_levels:
        raise ValueError(f"need one anchor size per pyramid level ({n_levels}), got {tuple(anchor_sizes)}")
    anchors = AnchorGenerator(tuple((int(s),) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * n_levels)
    levels = [str(i) for i in range(len(scale_factors))]
    return MaskRCNN(
        backbone, num_classes=None, min_size=min_size, max_size=max_size, image_mean=list(image_mean),
        image_std=list(image_std), rpn_anchor_generator=anchors,
        rpn_head=RPNHead(out_channels, anchors.num_anchors_per_location()[0], conv_depth=2),
        box_roi_pool=MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=0),
        box_head=FastRCNNConvFCHead((out_channels, 7, 7), [head_channels] * head_convs, [fc_dim],
                                    norm_layer=LayerNorm2d),
        mask_roi_pool=MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=0),
        box_predictor=FastRCNNPredictor(fc_dim, num_classes),
        mask_head=MaskRCNNHeads(out_channels, [head_channels] * head_convs, 1, norm_layer=LayerNorm2d),
        mask_predictor=MaskRCNNPredictor(head_channels, head_channels, num_classes),
        box_detections_per_img=box_detections_per_img, box_score_thresh=box_score_thresh, **maskrcnn_kwargs)
