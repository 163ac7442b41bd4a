"""Training and evaluation loops (iteration based, as mmseg's IterBasedRunner), nothing else.

Exact resume: the training loader is a :class:`repro_shared.data.ResumableLoader` (sample order seeded by
(seed, epoch), each sample's augmentation by (seed, epoch, index)) and every iteration reseeds the global
RNGs with :func:`repro_shared.data.seed_step` (seed, epoch, batch, rank) (dropout), so iteration ``it`` of
a resumed run (epoch, batch = divmod(it, batches per epoch)) is bit-identical to that of a run that was
never interrupted. The learning rate of iteration ``it`` is the poly value at ``it`` (mmcv
``PolyLrUpdaterHook.before_train_iter`` uses ``runner.iter`` before it is incremented).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from typing import Callable, Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from repro_shared.data import ResumableLoader, seed_step
from repro_shared.guards import check_finite

from .metrics import SegEvaluator

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PRECISIONS = ("none", "bf16", "fp16")


def param_groups(model: nn.Module, lr: float, weight_decay: float, head_lr_mult: float = 10.0) -> list[dict]:
    """SGD groups: parameters whose name contains ``head`` get ``lr * head_lr_mult`` (mmcv ``custom_keys``)."""
    head = [p for n, p in model.named_parameters() if p.requires_grad and "head" in n]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and "head" not in n]
    return [
        {"params": rest, "lr": lr, "initial_lr": lr, "weight_decay": weight_decay},
        {"params": head, "lr": lr * head_lr_mult, "initial_lr": lr * head_lr_mult, "weight_decay": weight_decay},
    ]


def poly_lr(base_lr: float, it: int, max_iters: int, power: float = 0.9, min_lr: float = 1e-4) -> float:
    """mmcv PolyLrUpdaterHook (by_epoch=False): (base - min) * (1 - it / max)^power + min, ``it`` = iterations
    done before this one (0 for the first step)."""
    return (base_lr - min_lr) * (1.0 - it / max_iters) ** power + min_lr


def resize_to(logits: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize of (N, K, h, w) logits to the label size (H, W), ``align_corners=False``."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def compute_losses(outputs: Mapping[str, torch.Tensor], labels: torch.Tensor, losses: Mapping[str, LossFn]):
    """Sum of head losses: ``losses`` maps output name (``out``, ``aux``) to a loss with its weight inside.
    Logits are upcast to float32 first (the losses run in float32 under mixed precision, as mmcv's
    ``force_fp32`` on the official heads' ``losses``)."""
    parts = {name: fn(resize_to(outputs[name].float(), labels.shape[-2:]), labels) for name, fn in losses.items()
             if name in outputs}
    return sum(parts.values()), parts


class Precision:
    """Mixed precision of a training step: ``mode`` none | bf16 | fp16 (autocast of the forward pass;
    fp16 with a :class:`torch.amp.GradScaler`). ``loss_scale``: ``"dynamic"`` or a number for a static
    scale (mmcv ``Fp16OptimizerHook(loss_scale=512.)``: GradScaler(init_scale=512), steps with inf/NaN
    gradients skipped, the scale reset to 512 after every step).

    Raises:
        ValueError: unknown ``mode`` or a ``loss_scale`` that is neither "dynamic" nor a positive number.
    """

    def __init__(self, mode: str = "none", device: torch.device | str = "cpu", loss_scale: str | float = "dynamic"):
        if mode not in PRECISIONS:
            raise ValueError(f"unknown train.amp={mode!r}; choose one of {PRECISIONS}")
        self.mode, self.device_type = mode, torch.device(device).type
        self.static_scale: float | None = None
        self.scaler: torch.amp.GradScaler | None = None
        if mode == "fp16":
            if loss_scale == "dynamic":
                self.scaler = torch.amp.GradScaler(self.device_type)
            else:
                try:
                    self.static_scale = float(loss_scale)
                except (TypeError, ValueError):
                    self.static_scale = -1.0
                if not self.static_scale > 0:
                    raise ValueError(f"train.loss_scale must be 'dynamic' or a positive number, got {loss_scale!r}")
                self.scaler = torch.amp.GradScaler(self.device_type, init_scale=self.static_scale)

    def autocast(self):
        if self.mode == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=torch.float16 if self.mode == "fp16" else torch.bfloat16)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """backward + optimizer step (scaled, with skipped steps on overflow, for fp16)."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update(self.static_scale)


def check_step_finite(outputs: Mapping[str, torch.Tensor], loss: torch.Tensor, parts: Mapping[str, torch.Tensor],
                      step: int, epoch: int) -> None:
    """Stop at the first non-finite prediction or loss term: :class:`repro_shared.guards.NonFiniteError`
    naming the step and the term (``logits_out``, ``logits_aux``, ``loss``, ``loss_out``, ``loss_aux``).
    Predictions are summarised by max |logit| (NaN and inf propagate), so one host sync per step."""
    values = {f"logits_{k}": v.detach().abs().amax() for k, v in outputs.items()}
    values.update({"loss": loss.detach(), **{f"loss_{k}": v.detach() for k, v in parts.items()}})
    check_finite(values, step=step, epoch=epoch, what="prediction or loss term")


def train_iters(model: nn.Module, loader: ResumableLoader, losses: Mapping[str, LossFn],
                optimizer: torch.optim.Optimizer, max_iters: int, device: torch.device, *, seed: int,
                start_iter: int = 0, min_lr: float = 1e-4, power: float = 0.9, precision: Precision | None = None,
                log_every: int = 50, on_log: Callable[[int, dict], None] | None = None,
                on_iter_end: Callable[[int], None] | None = None, log: logging.Logger | None = None) -> dict:
    """Run iterations ``start_iter .. max_iters - 1`` over ``loader``'s epochs with the poly schedule.

    Iteration ``it`` takes batch ``it % len(loader)`` of epoch ``it // len(loader)``. Batches smaller than
    the loader's batch size (unreadable files skipped with ``data.skip_corrupt=true``) are counted and the
    count is logged at the end of each epoch. Returns the last log row.

    Raises:
        repro_shared.guards.NonFiniteError: at the first non-finite prediction or loss (before the
            optimizer step, so the last checkpoint is the last good state).
    """
    precision = precision or Precision("none", device)
    batch_size = loader.batch_sampler.batch_size
    model.train()
    row: dict = {}
    it = start_iter
    epoch, first = divmod(start_iter, len(loader))
    t0 = time.perf_counter()
    while it < max_iters:
        loader.set_epoch(epoch, first)
        skipped = 0
        for b, (img, lab) in enumerate(loader, start=first):
            seed_step(seed, epoch, b)
            for g in optimizer.param_groups:
                g["lr"] = poly_lr(g["initial_lr"], it, max_iters, power, min_lr)
            skipped += batch_size - img.shape[0]
            img, lab = img.to(device, non_blocking=True), lab.to(device, non_blocking=True)
            with precision.autocast():
                outputs = model(img)
            loss, parts = compute_losses(outputs, lab, losses)
            check_step_finite(outputs, loss, parts, it, epoch)
            optimizer.zero_grad(set_to_none=True)
            precision.step(loss, optimizer)
            it += 1
            if it % log_every == 0 or it == max_iters:
                row = {"loss": float(loss.detach()), **{f"loss_{k}": float(v.detach()) for k, v in parts.items()},
                       "lr": optimizer.param_groups[0]["lr"], "epoch": epoch,
                       "s_per_it": (time.perf_counter() - t0) / log_every}
                t0 = time.perf_counter()
                if on_log is not None:
                    on_log(it, row)
            if on_iter_end is not None:
                on_iter_end(it)
            if it >= max_iters:
                break
        if skipped and log is not None:
            log.warning("epoch %d: skipped %d unreadable training samples (data.skip_corrupt=true; see the "
                        "warnings above for the files)", epoch, skipped)
        epoch, first = epoch + 1, 0
    return row


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, evaluator: SegEvaluator, device: torch.device,
             max_batches: int | None = None, log: logging.Logger | None = None) -> dict[str, float]:
    """Whole-image inference, logits resized to the label size, argmax, dataset-level metrics.
    A ``None`` batch (an unreadable sample skipped with ``data.skip_corrupt=true``) is counted and skipped."""
    model.eval()
    evaluator.reset()
    skipped = 0
    for batch in itertools.islice(loader, max_batches):
        if batch is None:
            skipped += 1
            continue
        img, lab = batch
        logits = resize_to(model(img.to(device))["out"], lab.shape[-2:])
        evaluator.add_batch(logits.argmax(1).cpu(), lab)
    if skipped and log is not None:
        log.warning("evaluation skipped %d unreadable batches (data.skip_corrupt=true)", skipped)
    return evaluator.compute()
