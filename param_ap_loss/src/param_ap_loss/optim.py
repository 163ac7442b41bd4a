"""Optimizer, per-name learning-rate groups and the mmdet / Deformable DETR learning-rate schedule.

* SGD (momentum, weight decay) for the mmdet detectors; AdamW for Deformable DETR.
* ``param_groups``: a list of ``{names: [substring, ...], lr_mult: m}``. A parameter whose name contains
  one of a group's substrings gets ``lr * m`` (first matching group wins; the rest use ``lr``). The
  Deformable DETR recipe uses ``backbone.body`` x 0.1 (official ``lr_backbone`` 2e-5 for lr 2e-4) and
  ``reference_points`` / ``sampling_offsets`` x 0.1 (official ``lr_linear_proj_mult``).
* :func:`warmup_step_lambda`: mmcv's ``LrUpdaterHook`` with linear warm-up and step decay, as a
  ``LambdaLR`` factor of the optimizer-step index (see the function for the exact offset).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adamw")


def build_param_groups(model: nn.Module, lr: float, groups: Iterable[Any] = ()) -> list[dict[str, Any]]:
    """Trainable parameters of ``model`` split into lr groups by name (first matching group wins).

    Returns a list of ``{"params", "lr", "name"}`` dicts: the default group first, then one per
    configured group (empty groups are dropped).

    Raises:
        ValueError: a group without ``names`` or with a non-positive ``lr_mult``.
    """
    specs = []
    for i, g in enumerate(groups or ()):
        names = list(g.get("names") or [])
        mult = float(g.get("lr_mult", 1.0))
        if not names or mult <= 0:
            raise ValueError(f"train.param_groups[{i}] needs a non-empty 'names' list and lr_mult > 0; got {dict(g)}")
        specs.append((names, mult))
    buckets: list[list[nn.Parameter]] = [[] for _ in range(len(specs) + 1)]
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        k = next((i + 1 for i, (names, _) in enumerate(specs) if any(s in name for s in names)), 0)
        buckets[k].append(p)
    out = [{"params": buckets[0], "lr": lr, "name": "default"}]
    out += [{"params": b, "lr": lr * mult, "name": "+".join(names)} for b, (names, mult) in zip(buckets[1:], specs)]
    return [g for g in out if g["params"]]


def build_optimizer(model: nn.Module, train_cfg: Any) -> torch.optim.Optimizer:
    """SGD or AdamW over :func:`build_param_groups` from ``train.{optimizer, lr, momentum, weight_decay,
    param_groups}``.

    Raises:
        ValueError: unknown ``train.optimizer`` (lists the known ones).
    """
    kind = str(train_cfg.get("optimizer", "sgd"))
    if kind not in OPTIMIZERS:
        raise ValueError(f"unknown train.optimizer {kind!r}; known: {', '.join(OPTIMIZERS)}")
    lr, wd = float(train_cfg.lr), float(train_cfg.weight_decay)
    groups = build_param_groups(model, lr, train_cfg.get("param_groups") or ())
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
    return torch.optim.SGD(groups, lr=lr, momentum=float(train_cfg.momentum), weight_decay=wd)


def warmup_step_lambda(warmup_iters: int, warmup_ratio: float, milestones_iters: Iterable[int], gamma: float = 0.1):
    """mmcv ``LrUpdaterHook`` (linear warm-up, step policy) as a ``LambdaLR`` factor of the step index ``it``.

    ``factor(it) = gamma^{#milestones <= it} * (r + (1 - r) it / W)`` for ``it < W``, without the warm-up
    term after. mmcv sets the lr of iteration ``it`` (0-based) in ``before_train_iter``; ``LambdaLR`` gives
    ``factor(0)`` at construction and ``factor(k)`` after its k-th ``step()``, which the engine calls after
    each optimizer step, so optimizer step ``it`` runs at ``factor(it)`` exactly as officially (tested).
    Milestones are iterations (``epoch * iters_per_epoch``): the first iteration of a decay epoch already
    runs at the decayed lr, as mmcv's epoch-based step policy and Deformable DETR's ``StepLR`` do.
    """
    milestones = sorted(int(m) for m in milestones_iters)

    def factor(it: int) -> float:
        f = gamma ** sum(it >= m for m in milestones)
        if it < warmup_iters:
            f *= warmup_ratio + (1 - warmup_ratio) * it / warmup_iters
        return f

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg: Any, iters_per_epoch: int):
    """``LambdaLR`` with :func:`warmup_step_lambda` from ``train.{warmup_iters, warmup_ratio, milestones}``
    (milestones in epochs)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_step_lambda(
        int(train_cfg.warmup_iters), float(train_cfg.warmup_ratio),
        [int(e) * iters_per_epoch for e in train_cfg.milestones]))
