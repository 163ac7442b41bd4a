"""The loops: one pre-training epoch, one linear-evaluation epoch, validation. Nothing else.

Every training step first reseeds the global RNGs from ``(seed, epoch, batch index, rank)``
(``repro_shared.data.seed_step``); the loader's order and each sample's augmentation are functions of
``(seed, epoch, index)``. With the training state in the checkpoint (weights, momentum copies, optimizer,
scaler, F / queue, the epoch's running sums), a run killed at any step and resumed is bit-identical.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from repro_shared.data import seed_step
from repro_shared.guards import check_finite
from repro_shared.logging import MetricsWriter
from repro_shared.train import autocast

from .data.cutmix import cutmix_views
from .losses import MixInfo

__all__ = ["EpochMeter", "train_one_epoch", "lineval_one_epoch", "validate"]

@dataclass
class EpochMeter:
    """Running sums of the current epoch; saved in mid-epoch checkpoints so that a resumed epoch reports the
    same averages as an uninterrupted one."""

    loss: float = 0.0
    pos_sim: float = 0.0
    steps: int = 0
    skipped: int = 0

    def update(self, terms: dict[str, torch.Tensor], skipped: int = 0) -> None:
        self.loss += float(terms["loss"].detach())
        self.pos_sim += float(terms["pos_sim"])
        self.steps += 1
        self.skipped += int(skipped)

    def summary(self) -> dict[str, float]:
        n = max(self.steps, 1)
        return {"loss": self.loss / n, "pos_sim": self.pos_sim / n, "skipped_samples": self.skipped}

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, loader, *,
                    epoch: int, step: int, seed: int, lr_at: Callable[[int], float], mm_at: Callable[[int], float],
                    device: torch.device, precision: str, scaler: torch.amp.GradScaler, meter: EpochMeter,
                    batch_size: int, cutmix_alpha: float = 0.0, metrics: MetricsWriter | None = None,
                    log_every: int = 10, on_step_end: Callable[[int], None] | None = None,
                    channels_last: bool = False) -> int:
    """Pre-train over the rest of ``loader``'s current epoch (from ``loader.start_batch``).

    Per step (official order, spec §3.6): lr and EMA momentum of ``step`` -> forward (EMA update of the momentum
    copies, then their forward) -> objective in fp32 outside autocast -> non-finite check (stops with
    ``NonFiniteError`` naming the step and term, before the optimizer touches the weights) -> zero_grad,
    backward, SGD step.

    Args:
        model: :class:`~unigrad.models.SiameseNet`, possibly DDP-wrapped. criterion: an objective of
            :mod:`unigrad.losses`. loader: a ``repro_shared.data.ResumableLoader`` of ``([x1, x2], label)``.
        step: optimizer steps done before this call (global, 0-based counter of the next step).
        lr_at, mm_at: schedules of the global step. batch_size: per-rank batch (to count skipped samples).
        cutmix_alpha: > 0 enables CutMix of the online views (UniGrad only, experimental).
        channels_last: move the images to channels-last memory (with a channels-last model on a GPU).
        on_step_end: called with the new step count after each step (checkpointing).

    Returns:
        The step count after the epoch.
    """
    model.train()
    criterion.train()
    for i, (views, _) in enumerate(loader, start=loader.start_batch):
        seed_step(seed, epoch, i)
        lr, mm = lr_at(step), mm_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x1, x2 = (v.to(device, non_blocking=True, memory_format=fmt) for v in views)
        mix = None
        if cutmix_alpha > 0:
            x1, x2, perm, lam = cutmix_views(x1, x2, cutmix_alpha)
            mix = MixInfo(perm, lam)
        with autocast(device, precision):
            out = model(x1, x2, mm=mm)
        terms = criterion(out, mix=mix) if mix is not None else criterion(out)
        check_finite(terms, step=step, epoch=epoch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        step += 1
        meter.update(terms, skipped=batch_size - x1.shape[0])
        if metrics is not None and step % log_every == 0:
            metrics.log({"loss": float(terms["loss"].detach()), "pos_sim": float(terms["pos_sim"]), "lr": lr, "mm": mm,
                         "epoch": epoch}, step=step)
        if on_step_end is not None:
            on_step_end(step)
    return step


def lineval_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loader, *, epoch: int, step: int,
                      seed: int, device: torch.device, log: logging.Logger | None = None,
                      on_step_end: Callable[[int], None] | None = None) -> tuple[int, float]:
    """One epoch of the linear protocol: the whole model in EVAL mode (frozen BN statistics), cross-entropy on
    the trainable fc only (SimSiam / official ``lineval.py``). Returns ``(step, mean loss)``."""
    model.eval()
    total, count = 0.0, 0
    for i, (x, y) in enumerate(loader, start=loader.start_batch):
        seed_step(seed, epoch, i)
        logits = model(x.to(device, non_blocking=True))
        loss = F.cross_entropy(logits, y.to(device))
        check_finite({"loss": loss}, step=step, epoch=epoch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        total, count = total + float(loss.detach()), count + 1
        if on_step_end is not None:
            on_step_end(step)
    if log is not None:
        log.info("lineval epoch %d | loss %.4f", epoch, total / max(count, 1))
    return step, total / max(count, 1)


@torch.no_grad()
def validate(model: nn.Module, loader, device: torch.device) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) over ``loader`` (this rank's shard), summed over ranks."""
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=device)  # top1, top5, n
    for x, y in loader:
        logits = model(x.to(device, non_blocking=True))
        y = y.to(device)
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        counts[0] += (top5[:, 0] == y).sum()
        counts[1] += (top5 == y[:, None]).any(1).sum()
        counts[2] += y.numel()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(counts)
    n = max(float(counts[2]), 1.0)
    return {"top1": 100.0 * float(counts[0]) / n, "top5": 100.0 * float(counts[1]) / n}
