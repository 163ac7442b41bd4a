"""Small adapters shared by the detectors: mmdet-style matcher, train/test resize, coder weights."""

from __future__ import annotations

import torch
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.transform import GeneralizedRCNNTransform


def stds_to_weights(stds) -> tuple[float, float, float, float]:
    """mmdet delta-coder stds (0.1, 0.1, 0.2, 0.2) -> torchvision BoxCoder weights (10, 10, 5, 5)."""
    return tuple(1.0 / float(s) for s in stds)


class MaxIoUMatcher(Matcher):
    """mmdet ``MaxIoUAssigner``: positive at IoU >= ``pos``, negative below ``neg``, ignored between
    (index -2); with ``min_pos_iou`` not None, each GT's best anchors (ties included) become positive
    if that best IoU is >= ``min_pos_iou`` and > 0 (low-quality matches)."""

    def __init__(self, pos: float, neg: float, min_pos_iou: float | None = None):
        super().__init__(pos, neg, allow_low_quality_matches=min_pos_iou is not None)
        self.min_pos_iou = min_pos_iou

    def set_low_quality_matches_(self, matches, all_matches, match_quality_matrix):
        best, _ = match_quality_matrix.max(dim=1)
        keep = (best >= self.min_pos_iou) & (best > 0)
        gt_idx, pred_idx = torch.where((match_quality_matrix == best[:, None]) & keep[:, None])
        matches[pred_idx] = all_matches[pred_idx]


class SizedTransform(GeneralizedRCNNTransform):
    """Normalise with ImageNet statistics; resize to ``train_size`` in training (``None``: keep the size
    the data pipeline produced, e.g. DETR's multi-scale augmentation) and to fit (``test_max_size`` x
    ``test_min_size``) keeping the aspect ratio at test; pad to /32."""

    def __init__(self, train_size: int | None, test_min_size: int, test_max_size: int):
        super().__init__(test_min_size, test_max_size, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225],
                         size_divisible=32)
        self.train_size = train_size
        self.sizes = {True: ((train_size or test_min_size,), train_size or test_max_size),
                      False: ((test_min_size,), test_max_size)}

    def forward(self, images, targets=None):
        self.min_size, self.max_size = self.sizes[self.training]
        return super().forward(images, targets)

    def resize(self, image, target=None):
        if self.training and self.train_size is None:
            return image, target
        return super().resize(image, target)
