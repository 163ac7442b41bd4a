"""The M3I pre-training loop (fine-tuning / linear probing use ``repro_shared.finetune.train_classifier_epoch``).

Exact resume: every random number a step consumes comes from the per-sample seeds of
``repro_shared.data.build_loader`` / :class:`m3i.data.sources.WeightedSourceSampler` (views, colour, mix masks) or
from the global RNGs reseeded by ``seed_step(seed, epoch, batch)`` at the start of the step (drop path, Mixup);
the learning rate and the EMA momentum are functions of ``(epoch, batch)``; the target network and the
fine-tuning EMA are part of the checkpointed state; running epoch sums travel in the checkpoint. A run killed
mid-epoch and resumed from a step checkpoint is therefore bit-identical to the uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from repro_shared import dist
from repro_shared import logging as rlog
from repro_shared.data import seed_step
from repro_shared.finetune import half_cosine_lr, set_lr
from repro_shared.guards import check_finite
from repro_shared.ssl.momentum import cosine_momentum
from repro_shared.train import accumulate, autocast, epoch_means, new_epoch_stats

from .losses import M3IObjective

__all__ = ["pretrain_one_epoch"]


def pretrain_one_epoch(model: nn.Module, loader, optimizer, scaler: Any, objective: M3IObjective, *, epoch: int,
                       epochs: int, lr: float, min_lr: float, warmup_epochs: float, base_momentum: float,
                       clip_grad: float | None, device: torch.device, seed: int = 0, precision: str = "fp32",
                       ds_engine: Any = None, metrics=None, log=None, log_every: int = 20, stats: dict | None = None,
                       after_step: Callable[[int, dict], None] | None = None) -> dict[str, float]:
    """One M3I pre-training epoch (or the rest of a resumed one), SiameseIM's loop order.

    Per step ``i`` (fractional epoch ``e = epoch + i / iters``): lr ``half_cosine_lr(e)`` (warmup from 0, times each
    group's ``lr_scale``); EMA momentum ``cosine_momentum(e, epochs, base)`` applied to the target network
    before the forward (SiameseIM updates inside the forward, before the targets; at step 0 target = online);
    forward under autocast; the objective in float32; the non-finite check of every term before any weight
    changes; backward (GradScaler under fp16), clipping at ``clip_grad`` after unscaling, optimizer step. With
    a DeepSpeed engine (``ds_engine``) the engine does backward, clipping, loss scaling and the step, and the
    EMA moves on gradient-accumulation boundaries only.

    Args:
        model: :class:`m3i.models.m3i.M3IModel`, possibly DDP-wrapped (ignored when ``ds_engine`` is given).
        loader: resumable loader of ``(view1, view2, geometry, mix, label, tokens, has_text)`` batches.
        stats: running sums restored from a mid-epoch checkpoint; after_step: ``after_step(steps_done, stats)``.

    Returns:
        Epoch means of ``loss`` and each active term, ``grad_norm``, and ``skipped`` (unreadable files).

    Raises:
        repro_shared.guards.NonFiniteError: at the first non-finite loss term, naming the step and the term.
    """
    runner = ds_engine if ds_engine is not None else model
    runner.train()
    core = dist.unwrap_model(runner)
    iters = len(loader)
    start = getattr(loader, "start_batch", 0)
    nominal = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    stats = new_epoch_stats() if stats is None else stats
    params = [p for p in core.parameters() if p.requires_grad]
    opt = ds_engine.optimizer if ds_engine is not None else optimizer
    batches = rlog.progress(loader, desc=f"pretrain epoch {epoch}", log=log) if log else loader
    for i, batch in enumerate(batches, start=start):
        step = epoch * iters + i
        seed_step(seed, epoch, i)
        view1, view2, geometry, mix, labels, tokens, has_text = (t.to(device, non_blocking=True) for t in batch)
        if nominal is not None:
            stats["skipped"] += nominal - view1.shape[0]
        e = epoch + i / iters
        set_lr(opt, half_cosine_lr(e, lr, epochs, warmup_epochs, min_lr))
        momentum = cosine_momentum(e, epochs, base_momentum)
        if ds_engine is None or ds_engine.is_gradient_accumulation_boundary():
            core.momentum_update(momentum)
        with autocast(device, precision):
            out = runner(view1, view2, geometry, mix, tokens)
        losses = objective(out, labels, has_text)
        check_finite(losses, step=step, epoch=epoch)
        if ds_engine is not None:
            ds_engine.backward(losses["loss"])
            ds_engine.step()
            grad_norm = ds_engine.get_global_grad_norm()
            grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        else:
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip_grad if clip_grad else float("inf")))
            scaler.step(optimizer)
            scaler.update()
        record = {k: float(v.detach()) for k, v in losses.items()} | {"grad_norm": grad_norm}
        if out.logit_scale is not None:
            record["logit_scale"] = float(out.logit_scale.detach().exp())
        accumulate(stats, record)
        if metrics is not None and (i % log_every == 0 or i == iters - 1):
            metrics.log({**record, "lr": max(g["lr"] for g in opt.param_groups), "momentum": momentum, "epoch": epoch},
                        step=step)
        if after_step is not None:
            after_step(step + 1, stats)
    return epoch_means(stats)
