"""Exact evaluator of the six metrics Auto Seg-Loss relaxes (spec §3.1, official ``metrics_fast``).

All statistics are accumulated over the whole evaluation set (dataset-level), never averaged per image:

* confusion matrix M (K x K, rows = ground truth, cols = prediction) over valid pixels (GT in 0..K-1);
* mIoU = nanmean_c M_cc / (row_c + col_c - M_cc);  mAcc = nanmean_c M_cc / row_c;  gAcc = tr(M) / sum(M);
* FWIoU = sum_c freq_c IoU_c with freq_c = row_c / sum(M) (classes with undefined IoU have freq 0);
* BIoU: IoU computed from a second confusion matrix restricted to valid pixels inside the trimap
  T = max_c D_r(B(y_c)) (background channel excluded from T when ``drop_bg``), nanmean over all K classes;
* BF1: per class, predicted boundary B(pred_c) and GT boundary B(y_c) (ignore pixels count as "not c"),
  precision = sum B(pred_c) D_tol(B(y_c)) / (sum B(pred_c) + 1e-8), recall = sum D_tol(B(pred_c)) B(y_c) /
  sum B(y_c), F1 = 2PR / (P + R + 1e-8), nanmean over classes (class 0 dropped when ``drop_bg``).
  The predicted boundary is taken on the full prediction, ignore pixels included (as the official code).

Official FWIoU is printed as ``nanmean(freq * IoU) * K``, which equals the sum above whenever every class
occurs in the ground truth or the prediction (always the case on VOC/Cityscapes val); it overestimates
otherwise, so we report the plain sum.
"""

from __future__ import annotations

import torch

from .labels import check_label_map, one_hot
from .ops.morphology import binary_boundary, dilate

METRICS = ("mIoU", "FWIoU", "mAcc", "gAcc", "BIoU", "BF1")


def _nanmean(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else float("nan")


class SegEvaluator:
    """Dataset-level accumulator of the six metrics.

    Args:
        num_classes: K.
        ignore_index: GT value excluded from every statistic (255 for VOC/Cityscapes).
        drop_bg: exclude class 0 from the BIoU trimap and the BF1 mean (VOC: True, Cityscapes: False).
        tol: BF1 matching tolerance in pixels (5).
        radius: BIoU trimap radius in pixels (5).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, drop_bg: bool = False, tol: int = 5, radius: int = 5):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.drop_bg = bool(drop_bg)
        self.tol = int(tol)
        self.radius = int(radius)
        self.reset()

    def reset(self) -> None:
        k = self.num_classes
        self.confusion = torch.zeros(k, k, dtype=torch.long)
        self.confusion_boundary = torch.zeros(k, k, dtype=torch.long)
        self.n_fg = torch.zeros(k, dtype=torch.float64)
        self.n_gt = torch.zeros(k, dtype=torch.float64)
        self.match_fg = torch.zeros(k, dtype=torch.float64)
        self.match_gt = torch.zeros(k, dtype=torch.float64)

    @torch.no_grad()
    def add_batch(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Accumulate one batch. ``pred``: (N, H, W) class indices 0..K-1; ``gt``: (N, H, W) with ignore."""
        if pred.shape != gt.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} != label shape {tuple(gt.shape)}; resize the logits "
                "to the label size before the argmax"
            )
        k = self.num_classes
        check_label_map(gt, k, self.ignore_index, "ground-truth labels")
        check_label_map(pred, k, ignore_index=None, name="predictions")
        pred, gt = pred.cpu().long(), gt.cpu().long()
        valid = gt != self.ignore_index
        self.confusion += torch.bincount(k * gt[valid] + pred[valid], minlength=k * k).view(k, k)

        gt_1h = one_hot(gt, k)
        gt_edge = binary_boundary(gt_1h)
        # BIoU trimap: GT boundaries dilated by `radius` (spec §3.1)
        trimap_src = gt_edge[:, 1:] if self.drop_bg else gt_edge
        trimap = dilate(trimap_src, self.radius).amax(dim=1) > 0.5 if trimap_src.shape[1] else torch.zeros_like(valid)
        m = valid & trimap
        self.confusion_boundary += torch.bincount(k * gt[m] + pred[m], minlength=k * k).view(k, k)

        # BF1 counts (prediction boundary over all pixels, as the official evaluator)
        pred_edge = binary_boundary(one_hot(pred, k))
        gt_dil = dilate(gt_edge, self.tol)
        pred_dil = dilate(pred_edge, self.tol)
        self.n_fg += pred_edge.sum((0, 2, 3)).double()
        self.n_gt += gt_edge.sum((0, 2, 3)).double()
        self.match_fg += (pred_edge * gt_dil).sum((0, 2, 3)).double()
        self.match_gt += (pred_dil * gt_edge).sum((0, 2, 3)).double()

    def per_class(self) -> dict[str, torch.Tensor]:
        """Per-class IoU, freq, Acc, BIoU, BF1 (K,) float64 (NaN where undefined)."""
        cm = self.confusion.double()
        diag, rows, cols = cm.diag(), cm.sum(1), cm.sum(0)
        iou = diag / (rows + cols - diag)
        acc = diag / rows
        freq = rows / cm.sum()
        cb = self.confusion_boundary.double()
        biou = cb.diag() / (cb.sum(1) + cb.sum(0) - cb.diag())
        p = self.match_fg / (self.n_fg + 1e-8)
        r = self.match_gt / self.n_gt
        bf1 = 2 * p * r / (p + r + 1e-8)
        return {"IoU": iou, "freq": freq, "Acc": acc, "BIoU": biou, "BF1": bf1}

    def compute(self) -> dict[str, float]:
        """The six metrics as fractions in [0, 1] (NaN if nothing was accumulated)."""
        pc = self.per_class()
        cm = self.confusion.double()
        fw = pc["freq"] * pc["IoU"]
        bf1 = pc["BF1"][1:] if self.drop_bg else pc["BF1"]
        return {
            "mIoU": _nanmean(pc["IoU"]),
            "FWIoU": float(torch.nansum(fw)) if cm.sum() > 0 else float("nan"),
            "mAcc": _nanmean(pc["Acc"]),
            "gAcc": float(cm.diag().sum() / cm.sum()) if cm.sum() > 0 else float("nan"),
            "BIoU": _nanmean(pc["BIoU"]),
            "BF1": _nanmean(bf1),
        }


def evaluate_maps(pred: torch.Tensor, gt: torch.Tensor, num_classes: int, **kwargs) -> dict[str, float]:
    """One-shot evaluation of (N, H, W) prediction and label maps (see :class:`SegEvaluator`)."""
    ev = SegEvaluator(num_classes, **kwargs)
    ev.add_batch(pred, gt)
    return ev.compute()
