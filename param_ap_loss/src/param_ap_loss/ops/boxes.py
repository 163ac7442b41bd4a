"""Box helpers of the PAP heads: elementwise (G)IoU and unit-anchor delta decoding (spec §3.5)."""

from __future__ import annotations

import math

import torch

DEFAULT_STDS = (0.1, 0.1, 0.2, 0.2)
WH_RATIO_CLIP = 16 / 1000


def giou_aligned(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """GIoU of matching rows, boxes ``(x1, y1, x2, y2)``; (N, 4), (N, 4) -> (N,) in [-1, 1].

    ``eps`` is added to the union and the enclosing area (official ``giou``).
    """
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    union = area_a + area_b - inter + eps
    iou = inter / union
    elt, erb = torch.min(a[:, :2], b[:, :2]), torch.max(a[:, 2:], b[:, 2:])
    enclose = (erb - elt).clamp(min=0).prod(1) + eps
    return iou - (enclose - union) / enclose


def iou_aligned(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """IoU of matching rows; (N, 4), (N, 4) -> (N,)."""
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    return inter / (area_a + area_b - inter + eps)


def decode_unit_anchor(deltas: torch.Tensor, stds: tuple[float, ...] = DEFAULT_STDS) -> torch.Tensor:
    """Decode ``(dx, dy, dw, dh)`` around a unit anchor centred at 0; (N, 4) -> (N, 4) boxes.

    x = dx * std_x, w = exp(clamp(dw * std_w, +-|ln(16/1000)|)) (official ``delta2bbox`` of the PAP heads).
    IoU/GIoU are invariant to the per-axis affine map between this unit box and the real anchor.
    """
    clip = abs(math.log(WH_RATIO_CLIP))
    cx, cy = deltas[:, 0] * stds[0], deltas[:, 1] * stds[1]
    w = torch.exp((deltas[:, 2] * stds[2]).clamp(-clip, clip))
    h = torch.exp((deltas[:, 3] * stds[3]).clamp(-clip, clip))
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def localisation_quality(pred: torch.Tensor, target: torch.Tensor, reg_input: str = "giou") -> torch.Tensor:
    """Quality ``u`` in [0, 1] of predicted vs target boxes (official ``reg_input``); (N, 4), (N, 4) -> (N,)."""
    if reg_input == "giou":
        return (giou_aligned(pred, target) + 1) / 2
    if reg_input == "iou":
        return iou_aligned(pred, target)
    if reg_input == "l1":
        return (1 - (pred - target).abs().sum(-1)).clamp(0, 1)
    raise ValueError(f"unknown reg_input {reg_input!r}; use 'giou', 'iou' or 'l1'")
