"""Training and evaluation loops (iteration based, as mmseg's IterBasedRunner), nothing else."""

from __future__ import annotations

import itertools
import time
from typing import Callable, Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .metrics import SegEvaluator

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def param_groups(model: nn.Module, lr: float, weight_decay: float, head_lr_mult: float = 10.0) -> list[dict]:
    """SGD groups: parameters whose name contains ``head`` get ``lr * head_lr_mult`` (mmcv ``custom_keys``)."""
    head = [p for n, p in model.named_parameters() if p.requires_grad and "head" in n]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and "head" not in n]
    return [
        {"params": rest, "lr": lr, "initial_lr": lr, "weight_decay": weight_decay},
        {"params": head, "lr": lr * head_lr_mult, "initial_lr": lr * head_lr_mult, "weight_decay": weight_decay},
    ]


def poly_lr(base_lr: float, it: int, max_iters: int, power: float = 0.9, min_lr: float = 1e-4) -> float:
    """mmcv PolyLrUpdaterHook: (base - min) * (1 - it / max)^power + min."""
    return (base_lr - min_lr) * (1.0 - it / max_iters) ** power + min_lr


def resize_to(logits: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize of (N, K, h, w) logits to the label size (H, W), ``align_corners=False``."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def compute_losses(outputs: Mapping[str, torch.Tensor], labels: torch.Tensor, losses: Mapping[str, LossFn]):
    """Sum of head losses: ``losses`` maps output name (``out``, ``aux``) to a loss with its weight inside."""
    parts = {name: fn(resize_to(outputs[name], labels.shape[-2:]), labels) for name, fn in losses.items()
             if name in outputs}
    return sum(parts.values()), parts


def train_iters(model: nn.Module, data: Iterable, losses: Mapping[str, LossFn], optimizer: torch.optim.Optimizer,
                max_iters: int, device: torch.device, start_iter: int = 0, min_lr: float = 1e-4, power: float = 0.9,
                log_every: int = 50, on_log: Callable[[int, dict], None] | None = None,
                on_iter_end: Callable[[int], None] | None = None) -> dict:
    """Run iterations ``start_iter .. max_iters - 1`` with the poly schedule; returns the last log row."""
    model.train()
    row: dict = {}
    t0 = time.perf_counter()
    for it, (img, lab) in zip(range(start_iter, max_iters), data):
        for g in optimizer.param_groups:
            g["lr"] = poly_lr(g["initial_lr"], it, max_iters, power, min_lr)
        img, lab = img.to(device, non_blocking=True), lab.to(device, non_blocking=True)
        loss, parts = compute_losses(model(img), lab, losses)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {float(loss)} at iteration {it} (parts {parts})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (it + 1) % log_every == 0 or it + 1 == max_iters:
            row = {"loss": float(loss.detach()), **{f"loss_{k}": float(v.detach()) for k, v in parts.items()},
                   "lr": optimizer.param_groups[0]["lr"], "s_per_it": (time.perf_counter() - t0) / log_every}
            t0 = time.perf_counter()
            if on_log is not None:
                on_log(it + 1, row)
        if on_iter_end is not None:
            on_iter_end(it + 1)
    return row


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, evaluator: SegEvaluator, device: torch.device,
             max_batches: int | None = None) -> dict[str, float]:
    """Whole-image inference, logits resized to the label size, argmax, dataset-level metrics."""
    model.eval()
    evaluator.reset()
    for img, lab in itertools.islice(loader, max_batches):
        logits = resize_to(model(img.to(device))["out"], lab.shape[-2:])
        evaluator.add_batch(logits.argmax(1).cpu(), lab)
    return evaluator.compute()
