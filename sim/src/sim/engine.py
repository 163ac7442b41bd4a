"""Training loops: SiameseIM pre-training and dense transfer (fine-tuning / linear probing use
``repro_shared.finetune.train_classifier_epoch``). Nothing but the loops.

Exact resume: every random number a step consumes comes either from the per-sample seeds of
``repro_shared.data.build_loader`` (views, colour, masks) or from the global RNGs reseeded by
``seed_step(seed, epoch, batch)`` at the start of the step (drop path, Mixup); the learning rate and the EMA
momentum are functions of ``(epoch, batch)``; running epoch sums travel in the checkpoint. A run killed
mid-epoch and resumed from a step checkpoint is therefore bit-identical to the uninterrupted run.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from repro_shared import dist, logging as rlog
from repro_shared.data import seed_step
from repro_shared.finetune import half_cosine_lr, set_lr
from repro_shared.guards import check_finite
from repro_shared.ssl.momentum import cosine_momentum
from repro_shared.train import accumulate, autocast, epoch_means, new_epoch_stats

from .losses import siameseim_loss

__all__ = ["pretrain_one_epoch", "train_dense_epoch"]


def pretrain_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, scaler: Any, *, epoch: int,
                       epochs: int, lr: float, warmup_epochs: float, base_momentum: float, neg_weight: float,
                       clip_grad: float | None, device: torch.device, seed: int = 0, precision: str = "fp32",
                       metrics=None, log=None, log_every: int = 20, stats: dict | None = None,
                       after_step: Callable[[int, dict], None] | None = None) -> dict[str, float]:
    """One pre-training epoch (or the rest of a resumed one), official ``engine_pretrain.train_one_epoch``.

    Per step ``i`` (fractional epoch ``e = epoch + i / iters``): lr ``half_cosine_lr(e)`` with warmup from 0,
    EMA momentum ``cosine_momentum(e, epochs, base)`` applied inside the forward before the target branch,
    the dense UniGrad loss, backward (GradScaler under fp16), gradient clipping at ``clip_grad`` (after
    unscaling), optimizer step.

    Args:
        model: :class:`sim.models.SiameseIM`, possibly DDP-wrapped.
        loader: ``repro_shared.data.ResumableLoader`` of ``(x1, x2, geometry, mask)`` batches.
        scaler: ``torch.amp.GradScaler`` (disabled unless fp16).
        stats: running sums restored from a mid-epoch checkpoint.
        after_step: ``after_step(optimizer_steps_done, stats)`` after every step (checkpoints).

    Returns:
        Epoch means of ``loss``, ``loss_pos``, ``loss_neg``, ``grad_norm`` and ``skipped`` (unreadable files).

    Raises:
        repro_shared.guards.NonFiniteError: at the first non-finite loss, naming the step and the term, before
            the optimizer touches the weights.
    """
    model.train()
    iters = len(loader)
    start = getattr(loader, "start_batch", 0)
    nominal = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    stats = new_epoch_stats() if stats is None else stats
    params = [p for p in model.parameters() if p.requires_grad]
    batches = rlog.progress(loader, desc=f"pretrain epoch {epoch}", log=log) if log else loader
    for i, (x1, x2, geometry, mask) in enumerate(batches, start=start):
        step = epoch * iters + i
        seed_step(seed, epoch, i)
        if nominal is not None:
            stats["skipped"] += nominal - x1.shape[0]
        e = epoch + i / iters
        set_lr(optimizer, half_cosine_lr(e, lr, epochs, warmup_epochs))
        momentum = cosine_momentum(e, epochs, base_momentum)
        x1, x2 = x1.to(device, non_blocking=True), x2.to(device, non_blocking=True)
        geometry, mask = geometry.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        with autocast(device, precision):
            out = model(x1, x2, geometry, mask, momentum=momentum)
        losses = siameseim_loss(out, neg_weight)
        check_finite({"loss": losses["loss"]}, step=step, epoch=epoch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad if clip_grad else float("inf"))
        scaler.step(optimizer)
        scaler.update()
        # logged values are means over the ranks (official all_reduce_mean), one collective per step
        terms = torch.stack([losses["loss"].detach(), losses["loss_pos"], losses["loss_neg"], grad_norm.float()])
        record = dict(zip(("loss", "loss_pos", "loss_neg", "grad_norm"), dist.all_reduce_mean(terms).tolist()))
        accumulate(stats, record)
        if metrics is not None and (i % log_every == 0 or i == iters - 1):
            metrics.log({**record, "lr": optimizer.param_groups[0]["lr"], "momentum": momentum, "epoch": epoch},
                        step=step)
        if after_step is not None:
            after_step(step + 1, stats)
    return epoch_means(stats)


def train_dense_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, scaler: Any,
                      loss_fn: Callable[[nn.Module, Any, torch.device], dict[str, torch.Tensor]],
                      lr_at: Callable[[int], float], *, epoch: int, device: torch.device, seed: int = 0,
                      precision: str = "fp32", clip_grad: float | None = None, metrics=None, log=None,
                      log_every: int = 20, stats: dict | None = None,
                      after_step: Callable[[int, dict], None] | None = None) -> dict[str, float]:
    """One epoch of a dense-transfer model (detector or segmenter), iteration-based lr ``lr_at(global_step)``.

    ``loss_fn(model, batch, device)`` returns named loss terms; their sum is back-propagated.

    Raises:
        repro_shared.guards.NonFiniteError: at the first non-finite loss term.
    """
    model.train()
    iters = len(loader)
    start = getattr(loader, "start_batch", 0)
    stats = new_epoch_stats() if stats is None else stats
    params = [p for p in model.parameters() if p.requires_grad]
    batches = rlog.progress(loader, desc=f"train epoch {epoch}", log=log) if log else loader
    for i, batch in enumerate(batches, start=start):
        step = epoch * iters + i
        seed_step(seed, epoch, i)
        set_lr(optimizer, lr_at(step))
        with autocast(device, precision):
            terms = loss_fn(model, batch, device)
        terms = {k: v.float() for k, v in terms.items()}
        check_finite(terms, step=step, epoch=epoch)
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, clip_grad)
        scaler.step(optimizer)
        scaler.update()
        record = {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
        accumulate(stats, record)
        if metrics is not None and (i % log_every == 0 or i == iters - 1):
            metrics.log({**record, "lr": max(g["lr"] for g in optimizer.param_groups), "epoch": epoch}, step=step)
        if after_step is not None:
            after_step(step + 1, stats)
    return epoch_means(stats)
