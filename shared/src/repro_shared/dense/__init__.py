"""Dense-prediction transfer of ViT backbones (COCO / LVIS detection, ADE20K segmentation).

Built from the field's libraries, with only the adapters written here:

- :mod:`.vit_trunk`: :class:`TimmViTTrunk` runs a timm-structured ViT (``patch_embed.proj``, ``cls_token``,
  ``pos_embed``, ``blocks``) on any image size divisible by the patch (bicubic-resized position table, as
  ViTDet) and returns patch-token maps ``(B, C, H/p, W/p)`` of chosen blocks.
- :mod:`.pyramid`: ViTDet's :class:`SimpleFeaturePyramid` (one map -> strides p/4..2p plus P6) and mmseg's
  :class:`Feature2Pyramid` (four maps of four blocks -> four strides).
- :mod:`.detection`: :func:`build_vitdet_maskrcnn`, torchvision's ``MaskRCNN`` over the simple feature
  pyramid with ViTDet's heads (2-conv RPN, 4conv1fc box head and 4-conv mask head with LayerNorm).
- :mod:`.segmentation`: :class:`UperNetSegmentor`, segmentation-models-pytorch's ``UPerNetDecoder`` over
  :class:`Feature2Pyramid` with an optional auxiliary FCN head, and :func:`segmentation_loss`.
- :mod:`.data`: :class:`CocoInstanceDataset` (pycocotools, COCO layout) and :class:`SegmentationFolder`
  (image / label-map folders), :func:`detection_collate`.
- :mod:`.transforms`: :class:`SegTrainTransform` (mmseg's resize / crop / flip pipeline on tensors) and
  :func:`normalize_pair`.
- :mod:`.metrics`: :func:`coco_evaluate` (pycocotools AP for boxes and masks), :func:`confusion_matrix`,
  :func:`miou`, :func:`evaluate_segmentation`.
"""

from .data import CocoInstanceDataset, SegmentationFolder, detection_collate
from .detection import build_vitdet_maskrcnn
from .metrics import coco_evaluate, confusion_matrix, evaluate_segmentation, miou
from .pyramid import Feature2Pyramid, SimpleFeaturePyramid
from .segmentation import UperNetSegmentor, segmentation_loss
from .transforms import IMAGENET_MEAN, IMAGENET_STD, SegTrainTransform, normalize_pair
from .vit_trunk import TimmViTTrunk

__all__ = ["CocoInstanceDataset", "SegmentationFolder", "detection_collate", "build_vitdet_maskrcnn",
           "coco_evaluate", "confusion_matrix", "evaluate_segmentation", "miou", "Feature2Pyramid",
           "SimpleFeaturePyramid", "UperNetSegmentor", "segmentation_loss", "TimmViTTrunk", "IMAGENET_MEAN",
           "IMAGENET_STD", "SegTrainTransform", "normalize_pair"]
