"""Training and evaluation loops (spec §3.5): nothing but the loop."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from repro_shared import dist, logging as rlog

from .losses import defocus_loss

__all__ = ["train_one_epoch", "evaluate"]


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_one_epoch(model: nn.Module, loader, optimizer, scheduler, *, epoch: int, device: torch.device,
                    drop_path_rate: float, aux_weight: float, clip_grad: float, mixup=None, ema=None,
                    precision: str = "fp32", log=None, metrics=None, log_every: int = 50) -> dict:
    """One epoch; the global drop-path rate is fixed for the epoch (scheduled drop path, §3.2).

    Returns the epoch means of loss, loss_cls, loss_aux.
    """
    model.train()
    iters = len(loader)
    sums: dict[str, float] = {}
    n = 0
    for step, (x, y) in enumerate(rlog.progress(loader, desc=f"train {epoch}", log=log) if log else loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if mixup is not None:
            x, y = mixup(x, y)
        with _autocast(device, precision):
            logits, aux = model(x, drop_path_rate=drop_path_rate, return_aux=True)
        losses = defocus_loss(logits.float(), None if aux is None else aux.float(), y, aux_weight)
        loss = losses["loss"]
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch} step {step}; lower the LR or check the data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad) if clip_grad else None
        optimizer.step()
        if scheduler is not None:
            scheduler.step_update(epoch * iters + step + 1)  # the LR of the next step
        if ema is not None:
            ema.update(model)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        n += 1
        if metrics is not None and (step % log_every == 0 or step == iters - 1):
            rec = {k: v.item() for k, v in losses.items()}
            rec.update(lr=optimizer.param_groups[0]["lr"], drop_path_rate=drop_path_rate, epoch=epoch)
            if grad_norm is not None:
                rec["grad_norm"] = grad_norm.item()
            metrics.log(rec, step=epoch * iters + step)
    return {k: v / max(n, 1) for k, v in sums.items()}


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
