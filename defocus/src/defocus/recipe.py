"""Training-recipe pieces of the ImageNet recipe (spec §3.2-3.3): scheduled drop path, param groups,
LR scaling, per-iteration cosine schedule with warmup (timm)."""

from __future__ import annotations

import torch
from timm.scheduler import CosineLRScheduler
from torch import nn

__all__ = ["scheduled_drop_path_rate", "param_groups", "scale_lr", "build_optimizer", "build_scheduler"]

NO_DECAY_NAMES = ("cls_token", "pos_embed")
NO_DECAY_SUBSTRINGS = ("decay", "alpha", "beta", "gamma", "A", "A_log", "D")


def scheduled_drop_path_rate(epoch: int, epochs: int, min_rate: float, max_rate: float) -> float:
    """r(e) = min + e / (EPOCHS - 1) * (max - min), constant within an epoch (spec §3.2).

    Base config (0.1 -> 0.75, 300 epochs): r(0) = 0.1, r(150) = 0.426, r(299) = 0.75. One-epoch runs
    (EPOCHS - 1 = 0, a division by zero in the official code) use ``min_rate``.
    """
    if epochs <= 1:
        return float(min_rate)
    return float(min_rate + epoch / (epochs - 1) * (max_rate - min_rate))


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Official ``set_weight_decay`` rule: 1-D params, biases, cls/pos tokens, and names containing
    'decay', 'alpha', 'beta', 'gamma', 'A', 'A_log' or 'D' (case-sensitive; A_log, D, freq are caught)."""
    return (param.ndim <= 1 or name.endswith(".bias") or name in NO_DECAY_NAMES
            or any(k in name for k in NO_DECAY_SUBSTRINGS))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weights and the no-decay set of :func:`no_weight_decay`."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if no_weight_decay(name, p) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def scale_lr(lr: float, total_batch: int, accumulation_steps: int = 1) -> float:
    """Linear LR scaling: lr * total_batch / 512 (* accumulation steps), spec §3.3."""
    return lr * total_batch / 512.0 * accumulation_steps


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps)


def build_scheduler(optimizer, epochs: int, warmup_epochs: int, iters_per_epoch: int, min_lr: float,
                    warmup_lr: float) -> CosineLRScheduler:
    """Per-iteration cosine with linear warmup prefix, one cycle (call ``step_update(epoch*iters + i)``)."""
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, (epochs - warmup_epochs) * iters_per_epoch),
        lr_min=min_lr,
        warmup_lr_init=warmup_lr,
        warmup_t=warmup_epochs * iters_per_epoch,
        cycle_limit=1,
        t_in_epochs=False,
        warmup_prefix=True,
    )
