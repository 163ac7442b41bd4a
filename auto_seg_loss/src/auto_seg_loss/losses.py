"""Metric surrogates of Auto Seg-Loss and the loss module (spec §3.2, official ``auto_seg_loss.py``).

Notation: p = softmax(logits) (N, K, H, W); y = one-hot(labels) with all-zero columns at ignore pixels;
v = valid mask (N, H, W). A learnable monotone curve h with h(0) = 0, h(1) = 1 replaces the prediction
inside each logical operation (spec §3.2):

    AND(p, y) -> h_and(p) * y            OR(p, y) -> h_or(p) + y - h_or(p) * y      (binary y)
    AND(a, b) -> h_1(a) h_2(b)           OR(a, b) -> h_3(a) + h_4(b) - h_3(a) h_4(b), XOR = OR - AND

Sums run over (n, h, w), eps = 1e-8. On one-hot p every surrogate equals the exact evaluator of
:mod:`auto_seg_loss.metrics` on that batch (truth-table property, tested), with the mean conventions noted
per function. The loss is ``loss_weight * (1 - surrogate)``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .labels import check_label_map, one_hot
from .ops.bezier import BezierCurve, identity_theta, theta_to_control_points
from .ops.morphology import binary_boundary, dilate, erode3x3

Curve = Callable[[torch.Tensor], torch.Tensor]

# number of curves and of Bezier pieces per curve (spec §3.3)
NUM_CURVES = {"mIoU": 2, "FWIoU": 2, "BIoU": 2, "mAcc": 1, "gAcc": 1, "BF1": 4}
NUM_PIECES = {"mIoU": 2, "FWIoU": 2, "BIoU": 2, "mAcc": 2, "gAcc": 2, "BF1": 1}

# Released searched control points (spec §3.4, official ASL_configs/retrain/*_bezier_10k.py at e2349db).
_FWIOU = [3.65390355e-04, 9.84171689e-01, 9.69491959e-01, 9.92340326e-01, 9.88328516e-01, 9.95552719e-01,
          3.54609758e-01, 2.67221928e-01, 5.60551465e-01, 4.35290039e-01, 5.65432191e-01, 6.01448298e-01]
_MACC = [2.1453928e-02, 7.3905742e-01, 4.1163361e-01, 7.9865617e-01, 9.1986191e-01, 9.5041156e-01]
SEARCHED_CONTROL_POINTS = {
    "mIoU": [5.69728440e-04, 6.43720450e-01, 3.38589169e-01, 7.05543360e-01, 6.25281252e-01, 7.79551927e-01,
             6.90375570e-01, 1.30628900e-02, 8.34170515e-01, 9.62431815e-01, 9.42998269e-01, 9.80038125e-01],
    "FWIoU": _FWIOU,
    "BIoU": list(_FWIOU),  # identical in the official configs (flagged in the README)
    "mAcc": _MACC,
    "gAcc": list(_MACC),  # identical in the official configs
    "BF1": [0.8113003373146057, 0.8526162505149841, 0.17164576053619385, 0.03164796531200409,
            0.20997394621372223, 0.44903290271759033, 0.07847517728805542, 0.8753038048744202],
}


def identity_control_points(metric: str) -> torch.Tensor:
    """Control points of the identity curves (h(x) = x) for ``metric``: (NUM_CURVES * 2(2n-1),)."""
    n = NUM_PIECES[metric]
    return theta_to_control_points(identity_theta(n, NUM_CURVES[metric]), n)


def _sum_nhw(z: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) -> (K,)"""
    return z.sum(dim=(0, 2, 3))


def miou_surrogate(p, y, valid, h_and: Curve, h_or: Curve, eps: float = 1e-8, per_class: bool = False):
    """mIoU~ = (1/K) sum_c I_c / (U_c + eps); I_c = sum h_and(p_c) y_c v, U_c = sum OR(p_c, y_c) v.

    Mean over all K classes (a class with neither GT nor predicted mass gives 0; the evaluator's nanmean
    skips it). p, y: (N, K, H, W); valid: (N, H, W) bool.
    """
    v = valid.unsqueeze(1).to(p.dtype)
    hi, hu = h_and(p), h_or(p)
    inter = _sum_nhw(hi * y * v)
    union = _sum_nhw((hu + y - hu * y) * v) + eps
    iou = inter / union
    return iou if per_class else iou.mean()


def fwiou_surrogate(p, y, valid, h_and: Curve, h_or: Curve, eps: float = 1e-8):
    """FWIoU~ = sum_{c: f_c > 0} f_c IoU~_c / sum f_c with f_c = sum y_c."""
    iou = miou_surrogate(p, y, valid, h_and, h_or, eps, per_class=True)
    freq = _sum_nhw(y)
    keep = freq > 0
    return (iou[keep] * freq[keep]).sum() / freq[keep].sum()


def trimap(y: torch.Tensor, valid: torch.Tensor, radius: int, drop_bg: bool) -> torch.Tensor:
    """valid & max_c D_r(B(y_c)) (class 0 excluded when ``drop_bg``): (N, H, W) bool, no grad."""
    with torch.no_grad():
        edge = binary_boundary(y[:, 1:] if drop_bg else y)
        if edge.shape[1] == 0:
            return torch.zeros_like(valid)
        return valid & (dilate(edge, radius).amax(dim=1) > 0.5)


def biou_surrogate(p, y, valid, h_and: Curve, h_or: Curve, eps: float = 1e-8, tol: int = 5, drop_bg: bool = True):
    """BIoU~: mIoU~ restricted to the GT trimap (boundaries dilated by ``tol``), mean over all K classes."""
    return miou_surrogate(p, y, trimap(y, valid, tol, drop_bg), h_and, h_or, eps)


def macc_surrogate(p, y, valid, h: Curve, eps: float = 1e-8):
    """mAcc~ = (1/K) sum_c sum h(p_c) y_c / (sum y_c + eps); classes without GT contribute 0."""
    return (_sum_nhw(h(p) * y) / (_sum_nhw(y) + eps)).mean()


def gacc_surrogate(p, y, valid, h: Curve, eps: float = 1e-8):
    """gAcc~ = sum_c sum h(p_c) y_c / (sum y + eps)."""
    return (h(p) * y).sum() / (y.sum() + eps)


def soft_boundary(p, h1: Curve, h2: Curve, h3: Curve, h4: Curve) -> torch.Tensor:
    """XOR(p, E(p)) = OR - AND with the learned curves (spec §3.2 BF1~); (N, K, H, W)."""
    e = erode3x3(p)
    h3p, h4e = h3(p), h4(e)
    return h3p + h4e - h3p * h4e - h1(p) * h2(e)


def bf1_surrogate(p, y, valid, h1: Curve, h2: Curve, h3: Curve, h4: Curve, eps: float = 1e-8, tol: int = 5,
                  drop_bg: bool = False):
    """BF1~: per-class soft boundary F1 with tolerance ``tol``, mean over classes with GT boundary pixels
    (class 0 excluded if ``drop_bg``). No valid mask (as the official loss). If no class qualifies the
    surrogate is 0 with zero gradient (the official code returns NaN)."""
    with torch.no_grad():
        gt_edge = binary_boundary(y)
        gt_dil = dilate(gt_edge, tol)
    pb = soft_boundary(p, h1, h2, h3, h4)
    n_gt = _sum_nhw(gt_edge)
    prec = _sum_nhw(pb * gt_dil) / (_sum_nhw(pb) + eps)
    rec = _sum_nhw(dilate(pb, tol) * gt_edge) / (n_gt + eps)
    f1 = 2 * prec * rec / (prec + rec + eps)
    keep = n_gt > 0
    if drop_bg:
        keep[0] = False
    if not bool(keep.any()):
        return pb.sum() * 0.0
    return f1[keep].mean()


# ---- gather forms (spec §10): sum_c h(p_c) y_c = h(p at the GT class), so the AND-side curve runs on
# (N, H, W) values instead of (N, K, H, W) and no float one-hot is built. Same values as the one-hot forms
# above up to summation order (tested); used by AutoSegLoss(reduction="gather").
def _at_gt(z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) -> (N, H, W): the entry of the GT class (idx = labels with invalid pixels set to 0)."""
    return z.gather(1, idx.unsqueeze(1)).squeeze(1)


def _per_gt_class(values: torch.Tensor, idx: torch.Tensor, v: torch.Tensor, k: int) -> torch.Tensor:
    """(N, H, W) values -> (K,) sums over the valid pixels of each GT class."""
    return values.new_zeros(k).index_add(0, idx.flatten(), (values * v).flatten())


def miou_surrogate_gather(p, labels, valid, h_and: Curve, h_or: Curve, eps: float = 1e-8, per_class: bool = False):
    """mIoU~ of :func:`miou_surrogate` from labels: I_c = sum_{GT=c} h_and(p_c),
    U_c = sum_valid h_or(p_c) + n_c - sum_{GT=c} h_or(p_c). labels: (N, H, W) with invalid pixels anywhere."""
    k = p.shape[1]
    idx = torch.where(valid, labels, torch.zeros_like(labels)).long()
    v = valid.to(p.dtype)
    hu = h_or(p)
    inter = _per_gt_class(h_and(_at_gt(p, idx)), idx, v, k)
    count = _per_gt_class(torch.ones_like(v), idx, v, k)
    union = _sum_nhw(hu * v.unsqueeze(1)) + count - _per_gt_class(_at_gt(hu, idx), idx, v, k) + eps
    iou = inter / union
    return iou if per_class else iou.mean()


def fwiou_surrogate_gather(p, labels, valid, h_and: Curve, h_or: Curve, eps: float = 1e-8):
    iou = miou_surrogate_gather(p, labels, valid, h_and, h_or, eps, per_class=True)
    freq = torch.bincount(labels[valid].long(), minlength=p.shape[1]).to(p.dtype)
    keep = freq > 0
    return (iou[keep] * freq[keep]).sum() / freq[keep].sum()


def trimap_from_labels(labels: torch.Tensor, valid: torch.Tensor, radius: int, drop_bg: bool) -> torch.Tensor:
    """Same map as :func:`trimap` from the (N, H, W) label map: a pixel of class c is on the boundary of c iff
    an 8-neighbour inside the image has another label (ignore included); the union over classes of the
    dilated boundaries is the dilation of the union, so one channel is dilated instead of K."""
    with torch.no_grad():
        lab = labels.unsqueeze(1).float()
        differs = (F.max_pool2d(lab, 3, 1, 1) != lab) | (-F.max_pool2d(-lab, 3, 1, 1) != lab)
        own = valid & (labels != 0) if drop_bg else valid
        edge = (differs.squeeze(1) & own).unsqueeze(1).float()
        return valid & (dilate(edge, radius).squeeze(1) > 0.5)


def biou_surrogate_gather(p, labels, valid, h_and: Curve, h_or: Curve, eps: float = 1e-8, tol: int = 5,
                          drop_bg: bool = True):
    return miou_surrogate_gather(p, labels, trimap_from_labels(labels, valid, tol, drop_bg), h_and, h_or, eps)


def macc_surrogate_gather(p, labels, valid, h: Curve, eps: float = 1e-8):
    k = p.shape[1]
    idx = torch.where(valid, labels, torch.zeros_like(labels)).long()
    v = valid.to(p.dtype)
    hit = _per_gt_class(h(_at_gt(p, idx)), idx, v, k)
    return (hit / (_per_gt_class(torch.ones_like(v), idx, v, k) + eps)).mean()


def gacc_surrogate_gather(p, labels, valid, h: Curve, eps: float = 1e-8):
    idx = torch.where(valid, labels, torch.zeros_like(labels)).long()
    v = valid.to(p.dtype)
    return (h(_at_gt(p, idx)) * v).sum() / (v.sum() + eps)


GATHER_SURROGATES = {
    "mIoU": miou_surrogate_gather, "FWIoU": fwiou_surrogate_gather, "BIoU": biou_surrogate_gather,
    "mAcc": macc_surrogate_gather, "gAcc": gacc_surrogate_gather,
}

SURROGATES = {
    "mIoU": miou_surrogate, "FWIoU": fwiou_surrogate, "BIoU": biou_surrogate,
    "mAcc": macc_surrogate, "gAcc": gacc_surrogate, "BF1": bf1_surrogate,
}


class AutoSegLoss(nn.Module):
    """``loss_weight * (1 - surrogate(softmax(logits), labels))`` for one target metric.

    Args:
        num_classes: K.
        metric: one of ``mIoU, FWIoU, BIoU, mAcc, gAcc, BF1``.
        control_points: ``"searched"`` (released preset, spec §3.4), ``"identity"`` (h(x) = x), or a flat
            list of the concatenated interior control points of all curves.
        drop_bg: BIoU trimap / BF1 mean without class 0 (official: BIoU True, others False).
        tol: BIoU trimap radius and BF1 tolerance (5).
        ignore_index: label of void pixels (255).
        loss_weight: 1.0 for the decode head, 0.4 for the auxiliary head.
        bezier_impl: ``"lut"`` (default, fast), ``"select"`` or ``"reference"`` (official evaluation order).
        reduction: ``"gather"`` (default: GT-class terms gathered from labels, no float one-hot; BF1 always
            uses the one-hot form) or ``"onehot"`` (the official formulation, term by term).
    Shapes: logits (N, K, H, W), labels (N, H, W) integer.
    """

    def __init__(self, num_classes: int, metric: str = "mIoU", control_points: str | Sequence[float] = "searched",
                 drop_bg: bool = False, tol: int = 5, ignore_index: int = 255, loss_weight: float = 1.0,
                 eps: float = 1e-8, bezier_impl: str = "lut", lut_bins: int = 1 << 16, reduction: str = "gather"):
        super().__init__()
        if metric not in SURROGATES:
            raise ValueError(f"unknown metric {metric!r}; choose one of {list(SURROGATES)}")
        if isinstance(control_points, str):
            if control_points == "searched":
                cp = torch.tensor(SEARCHED_CONTROL_POINTS[metric], dtype=torch.float64)
            elif control_points == "identity":
                cp = identity_control_points(metric)
            else:
                raise ValueError(f"control_points must be 'searched', 'identity' or a list, got {control_points!r}")
        else:
            cp = torch.as_tensor(list(control_points), dtype=torch.float64).flatten()
        n_curves, n_pieces = NUM_CURVES[metric], NUM_PIECES[metric]
        per_curve = 2 * (2 * n_pieces - 1)
        if cp.numel() != n_curves * per_curve:
            raise ValueError(
                f"{metric} needs {n_curves} curve(s) x {per_curve} numbers = {n_curves * per_curve} control-point "
                f"coordinates, got {cp.numel()}"
            )
        if reduction not in ("gather", "onehot"):
            raise ValueError(f"reduction must be 'gather' or 'onehot', got {reduction!r}")
        self.num_classes, self.metric, self.reduction = int(num_classes), metric, reduction
        self.drop_bg, self.tol, self.ignore_index = bool(drop_bg), int(tol), int(ignore_index)
        self.loss_weight, self.eps = float(loss_weight), float(eps)
        self.curves = nn.ModuleList(
            BezierCurve(c, bezier_impl, lut_bins) for c in cp.split(per_curve)
        )

    def extra_repr(self) -> str:
        return f"metric={self.metric}, num_classes={self.num_classes}, drop_bg={self.drop_bg}, tol={self.tol}"

    def surrogate(self, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Relaxed metric of probabilities (N, K, H, W) against labels (N, H, W); scalar in [0, 1]."""
        if probs.dim() != 4 or probs.shape[1] != self.num_classes:
            raise ValueError(f"expected (N, {self.num_classes}, H, W) scores, got shape {tuple(probs.shape)}")
        if labels.shape != (probs.shape[0], *probs.shape[2:]):
            raise ValueError(
                f"labels shape {tuple(labels.shape)} does not match scores {tuple(probs.shape)}; expected "
                f"(N, H, W) = {(probs.shape[0], *probs.shape[2:])} (resize the logits to the label size first)"
            )
        check_label_map(labels, self.num_classes, self.ignore_index)
        valid = (labels >= 0) & (labels < self.num_classes)
        kwargs = {"eps": self.eps}
        if self.metric in ("BIoU", "BF1"):
            kwargs.update(tol=self.tol, drop_bg=self.drop_bg)
        if self.reduction == "gather" and self.metric in GATHER_SURROGATES:
            return GATHER_SURROGATES[self.metric](probs, labels, valid, *self.curves, **kwargs)
        y = one_hot(labels, self.num_classes, probs.dtype)
        return SURROGATES[self.metric](probs, y, valid, *self.curves, **kwargs)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``loss_weight * (1 - surrogate)``; half-precision logits are upcast first (the loss runs in float32,
        as mmcv's ``force_fp32`` on the official heads' losses under mixed precision)."""
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        return self.loss_weight * (1.0 - self.surrogate(F.softmax(logits, dim=1), labels))
