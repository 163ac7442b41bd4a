"""The fine-tuning / linear-probing epoch of the MAE-style recipes (MAE ``engine_finetune.train_one_epoch``),
its criterion and its evaluation loader.

Exact resume: the global RNGs are reseeded by ``seed_step(seed, epoch, batch)`` at the start of every step (drop
path, Mixup/CutMix draws), the lr is a function of the global step, and the running epoch sums travel in the
checkpoint (:class:`repro_shared.train.StepCheckpointer`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .. import dist
from .. import logging as rlog
from ..data import SkipNoneCollate, seed_step
from ..guards import check_finite
from ..train import accumulate, autocast, epoch_means, new_epoch_stats
from .optim import set_lr

__all__ = ["classification_criterion", "eval_loader", "train_classifier_epoch"]


def classification_criterion(mixup: Any, smoothing: float) -> nn.Module:
    """The official criterion: soft-target cross-entropy under Mixup/CutMix (the targets are mixed), else
    label-smoothing cross-entropy (``smoothing > 0``) or plain cross-entropy (timm losses)."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup is not None:
        return SoftTargetCrossEntropy()
    return LabelSmoothingCrossEntropy(smoothing) if smoothing > 0 else nn.CrossEntropyLoss()


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, skip_corrupt: bool = False) -> DataLoader:
    """Sequential evaluation loader; under a process group each rank reads its shard (``DistributedSampler`` pads
    to a multiple of the world size, as the official ``dist_eval``); unreadable samples (``None``) are dropped
    when ``skip_corrupt``."""
    sampler = DistributedSampler(dataset, shuffle=False) if dist.get_world_size() > 1 else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, shuffle=False,
                      collate_fn=SkipNoneCollate() if skip_corrupt else None)


def train_classifier_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, scaler: Any,
                           criterion: Callable, lr_at: Callable[[int], float | None], *, epoch: int,
                           device: torch.device, seed: int = 0, precision: str = "fp32", mixup: Any = None,
                           clip_grad: float | None = None, ema: Any = None, metrics: Any = None, log: Any = None,
                           log_every: int = 20, stats: dict | None = None,
                           after_step: Callable[[int, dict], None] | None = None) -> dict[str, float]:
    """One fine-tuning or linear-probing epoch, or the rest of a resumed one.

    Per step ``i`` (global step ``k = epoch * iters + i``): ``seed_step``; ``lr_at(k)`` set on every group times
    its ``lr_scale`` (``None``: a scheduler of the caller sets the lrs); Mixup/CutMix (``mixup``, the last sample
    of an odd batch dropped, as timm needs an even one); ``criterion(logits.float(), targets)``; backward through
    ``scaler`` (a disabled ``GradScaler`` outside fp16); clipping at ``clip_grad`` after unscaling; step; then
    ``ema.update`` (timm ``ModelEmaV2``-style) when given.

    Args:
        loader: ``repro_shared.data.ResumableLoader`` of ``(images (B, 3, H, W), labels (B,))``; its
            ``start_batch`` is where a resumed epoch continues.
        stats: running sums restored from a mid-epoch checkpoint (:func:`repro_shared.train.new_epoch_stats`).
        after_step: ``after_step(optimizer_steps_done, stats)`` after every step (mid-epoch checkpoints).

    Returns:
        Epoch means of ``loss`` and the count ``skipped`` (samples dropped as unreadable).

    Raises:
        repro_shared.guards.NonFiniteError: at the first non-finite loss, naming the step, before the optimizer
            touches the weights.
    """
    model.train()
    iters = len(loader)
    start = getattr(loader, "start_batch", 0)
    nominal = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    stats = new_epoch_stats() if stats is None else stats
    params = [p for p in model.parameters() if p.requires_grad]
    batches = rlog.progress(loader, desc=f"train epoch {epoch}", log=log) if log else loader
    for i, (x, y) in enumerate(batches, start=start):
        step = epoch * iters + i
        seed_step(seed, epoch, i)
        if nominal is not None:
            stats["skipped"] += nominal - x.shape[0]
        if mixup is not None and x.shape[0] % 2:
            x, y = x[:-1], y[:-1]
        lr = lr_at(step)
        if lr is not None:
            set_lr(optimizer, lr)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if mixup is not None:
            x, y = mixup(x, y)
        with autocast(device, precision):
            logits = model(x)
        loss = criterion(logits.float(), y)
        check_finite({"loss": loss}, step=step, epoch=epoch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, clip_grad)
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            ema.update(dist.unwrap_model(model))
        value = float(loss.detach())
        accumulate(stats, {"loss": value})
        if metrics is not None and (i % log_every == 0 or i == iters - 1):
            metrics.log({"loss": value, "lr": max(g["lr"] for g in optimizer.param_groups), "epoch": epoch},
                        step=step)
        if after_step is not None:
            after_step(step + 1, stats)
    return epoch_means(stats)
