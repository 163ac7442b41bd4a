"""Label-map checks and one-hot encoding shared by the evaluator and the losses."""

from __future__ import annotations

import torch


def check_label_map(labels: torch.Tensor, num_classes: int, ignore_index: int | None = 255, name: str = "labels") -> None:
    """Raise ``ValueError`` unless (N, H, W) integer ``labels`` hold only 0..K-1 or ``ignore_index`` (None: no ignore)."""
    if labels.dim() != 3:
        raise ValueError(f"{name} must be an (N, H, W) label map, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of class indices, got dtype {labels.dtype}")
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bool(bad.any()):
        values = torch.unique(labels[bad])[:10].tolist()
        raise ValueError(
            f"{name} hold values {values} outside 0..{num_classes - 1}"
            + (f" that are not the ignore label {ignore_index}; remap them (e.g. to {ignore_index}) or set "
               "num_classes/ignore_index correctly" if ignore_index is not None else "; predictions must be class indices")
        )


def one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, H, W) labels -> (N, K, H, W) one-hot; pixels outside 0..K-1 (ignore) get an all-zero column."""
    valid = (labels >= 0) & (labels < num_classes)
    idx = torch.where(valid, labels, torch.zeros_like(labels)).long().unsqueeze(1)
    out = torch.zeros(labels.shape[0], num_classes, *labels.shape[1:], dtype=dtype, device=labels.device)
    out.scatter_(1, idx, valid.unsqueeze(1).to(dtype))
    return out
