"""Top-1 / top-5 evaluation of an image classifier."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..guards import check_finite_inputs

__all__ = ["evaluate_classifier"]


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: Iterable, device: torch.device, *,
                        class_subset: Sequence[int] | None = None, amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Accuracy and cross-entropy over a loader of ``(images, labels)``.

    Args:
        model: ``images (B, 3, H, W) -> logits (B, K)``; evaluated in ``eval()`` mode (restored after).
        class_subset: evaluate among these classes only (ImageNet-A / -R: the logits of the 200 classes of the
            set; labels are indices into this subset).
        amp_dtype: autocast dtype on CUDA (e.g. ``torch.float16``); None runs in float32.

    Returns:
        ``{"top1", "top5", "loss", "num_samples"}``, accuracies in percent (timm ``accuracy``), summed over
        the ranks of an initialised process group (each rank passes its shard).

    Raises:
        NonFiniteError: the model produced a non-finite logit.
    """
    from timm.utils import accuracy

    was_training = model.training
    model.eval()
    subset = torch.as_tensor(class_subset, device=device) if class_subset is not None else None
    correct1 = correct5 = loss_sum = 0.0
    n = 0
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(images)
        logits = logits.float()
        if subset is not None:
            logits = logits[:, subset]
        check_finite_inputs("classifier evaluation", logits=logits)
        top1, top5 = accuracy(logits, labels, topk=(1, min(5, logits.shape[1])))
        b = labels.shape[0]
        correct1 += float(top1) * b / 100.0
        correct5 += float(top5) * b / 100.0
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        n += b
    model.train(was_training)
    totals = torch.tensor([correct1, correct5, loss_sum, float(n)], dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)  # each rank evaluated its shard
    c1, c5, ls, n = totals.tolist()
    n = max(n, 1.0)
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": ls / n, "num_samples": int(n)}
