"""Training and evaluation loops (spec §3.5): nothing but the loop.

Every random number a training step consumes (drop path, Mixup/CutMix) comes from the global RNGs reseeded
by ``repro_shared.data.seed_step(seed, epoch, batch_index)`` at the start of the step, and the batches come
from a resumable loader (``repro_shared.data.build_loader``): a run killed in the middle of an epoch and
resumed from a step checkpoint is bit-identical to the uninterrupted run.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from repro_shared import dist, logging as rlog
from repro_shared.data import seed_step
from repro_shared.guards import check_finite
from repro_shared.train import accumulate, autocast, epoch_means, new_epoch_stats

from .losses import defocus_loss

__all__ = ["train_one_epoch", "train_detection_epoch", "evaluate"]


def train_one_epoch(model: nn.Module, loader, optimizer, scheduler, *, epoch: int, device: torch.device,
                    drop_path_rate: float, aux_weight: float, clip_grad: float, seed: int = 0, mixup=None, ema=None,
                    precision: str = "fp32", log=None, metrics=None, log_every: int = 50, stats: dict | None = None,
                    after_step: Callable[[int, dict], None] | None = None) -> dict:
    """One epoch (or the rest of it); the global drop-path rate is fixed for the epoch (scheduled drop path, §3.2).

    Args:
        loader: a ``repro_shared.data.ResumableLoader`` (its ``start_batch`` is the first batch of a resumed
            epoch) or any iterable of ``(images (b, 3, S, S), labels (b,))``.
        scheduler: timm scheduler; after optimizer step ``s`` (0-based, global) it gets ``step_update(s)``, the
            official call (spec §3.5), which sets the lr of step ``s + 1``: steps 0 and 1 both run at the
            warm-up lr and the peak is first used by step ``warmup_t + 1``.
        seed: run seed; step ``i`` of the epoch reseeds the global RNGs with ``seed_step(seed, epoch, i)``.
        stats: running sums from ``repro_shared.train.new_epoch_stats`` (restored from a mid-epoch checkpoint on resume).
        after_step: called as ``after_step(optimizer_steps_done, stats)`` after every step (checkpointing).

    Returns:
        Epoch means of loss, loss_cls, loss_aux and ``skipped`` (unreadable samples dropped by
        ``data.skip_corrupt=true``; also logged as a warning).

    Raises:
        repro_shared.guards.NonFiniteError: at the first non-finite loss term, naming the step and the term,
            before the optimizer touches the weights.
    """
    model.train()
    iters = len(loader)
    start = getattr(loader, "start_batch", 0)
    sampler = getattr(loader, "batch_sampler", None)
    nominal = getattr(sampler, "batch_size", None)
    stats = new_epoch_stats() if stats is None else stats
    batches = rlog.progress(loader, desc=f"train {epoch}", log=log) if log else loader
    for i, (x, y) in enumerate(batches, start=start):
        step = epoch * iters + i  # global optimizer-step index
        seed_step(seed, epoch, i)
        if nominal is not None:
            stats["skipped"] += nominal - x.shape[0]
        if mixup is not None and x.shape[0] % 2:  # timm Mixup needs an even batch (odd after a skipped file)
            x, y = x[:-1], y[:-1]
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if mixup is not None:
            x, y = mixup(x, y)
        with autocast(device, precision):
            logits, aux = model(x, drop_path_rate=drop_path_rate, return_aux=True)
        losses = defocus_loss(logits.float(), None if aux is None else aux.float(), y, aux_weight)
        check_finite({k: losses[k] for k in ("loss_cls", "loss_aux", "loss") if k in losses}, step=step, epoch=epoch)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad) if clip_grad else None
        optimizer.step()
        if scheduler is not None:
            scheduler.step_update(step)  # official: the lr of the NEXT step
        if ema is not None:
            ema.update(model)
        record = dict(zip(losses, torch.stack([v.detach().float() for v in losses.values()]).tolist()))  # one sync
        accumulate(stats, record)
        if metrics is not None and (i % log_every == 0 or i == iters - 1):
            rec = dict(record, lr=optimizer.param_groups[0]["lr"], drop_path_rate=drop_path_rate, epoch=epoch)
            if grad_norm is not None:
                rec["grad_norm"] = grad_norm.item()
            metrics.log(rec, step=step)
        if after_step is not None:
            after_step(step + 1, stats)
    if stats["skipped"]:
        rlog.get_logger("defocus").warning("epoch %d: %d unreadable training samples were skipped "
                                           "(data.skip_corrupt=true; their paths are in the warnings above)",
                                           epoch, stats["skipped"])
    return epoch_means(stats)


def train_detection_epoch(model: nn.Module, loader, optimizer, *, epoch: int, device: torch.device, clip_grad: float,
                          seed: int = 0, metrics=None, log_every: int = 25, stats: dict | None = None,
                          after_step: Callable[[int, dict], None] | None = None) -> dict:
    """One epoch (or the rest of it) of a torchvision detector on ``(images, targets)`` batches.

    Same conventions as :func:`train_one_epoch` (resumable loader, ``seed_step`` per step, running sums in
    ``stats``, ``after_step`` hook); the loss is the sum of the detector's loss terms.

    Raises:
        repro_shared.guards.NonFiniteError: at the first non-finite loss term, naming the step and the term.
    """
    model.train()
    iters = len(loader)
    start = getattr(loader, "start_batch", 0)
    nominal = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    stats = new_epoch_stats() if stats is None else stats
    for i, (images, targets) in enumerate(loader, start=start):
        step = epoch * iters + i
        seed_step(seed, epoch, i)
        if nominal is not None:
            stats["skipped"] += nominal - len(images)
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
        losses = model(images, targets)
        check_finite(losses, step=step, epoch=epoch)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
        terms = torch.stack([loss.detach(), *(v.detach() for v in losses.values())]).float().tolist()  # one sync
        record = dict(zip(["loss", *losses], terms))
        accumulate(stats, record)
        if metrics is not None and (i % log_every == 0 or i == iters - 1):
            metrics.log({**record, "lr": optimizer.param_groups[-1]["lr"], "epoch": epoch}, step=step)
        if after_step is not None:
            after_step(step + 1, stats)
    if stats["skipped"]:
        rlog.get_logger("defocus").warning("epoch %d: %d unreadable training images were skipped "
                                           "(data.skip_corrupt=true)", epoch, stats["skipped"])
    return epoch_means(stats)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, class_indices: torch.Tensor | None = None) -> dict:
    """Top-1/top-5 (%) of the CLS logits in fp32, averaged over ranks (spec §4).

    ``class_indices`` (K,) keeps only those logit columns (IN-22k model on IN-1k val via map22kto1k).
    """
    model.eval()
    correct1 = torch.zeros((), device=device)
    correct5 = torch.zeros((), device=device)
    total = torch.zeros((), device=device)
    loss_sum = torch.zeros((), device=device)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x).float()
        if class_indices is not None:
            logits = logits[:, class_indices.to(logits.device)]
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        correct1 += (top[:, 0] == y).sum()
        correct5 += (top == y[:, None]).any(-1).sum()
        total += y.numel()
    if dist.get_world_size() > 1:
        for t in (correct1, correct5, total, loss_sum):
            torch.distributed.all_reduce(t)
    return {"top1": 100.0 * (correct1 / total).item(), "top5": 100.0 * (correct5 / total).item(),
            "loss": (loss_sum / total).item()}
