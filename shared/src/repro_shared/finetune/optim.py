"""Optimiser pieces of the MAE fine-tuning / linear-probing recipes.

:func:`param_groups_layer_decay` follows BEiT / MAE ``param_groups_lrd`` by parameter name, so it also works
for a ViT wrapped inside another module (``prefix``) or one that is not a timm model; on a timm
``VisionTransformer`` it gives the same groups as timm's ``param_groups_layer_decay`` (tested).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

__all__ = ["vit_layer_id", "param_groups_layer_decay", "half_cosine_lr", "set_lr", "build_lars"]

_STEM = ("cls_token", "pos_embed", "reg_token", "dist_token")


def vit_layer_id(name: str, num_layers: int, prefix: str = "") -> int:
    """BEiT / MAE layer id of a ViT parameter: ``cls_token``, ``pos_embed`` and ``patch_embed.*`` -> 0,
    ``blocks.i.*`` -> ``i + 1``, everything else (``fc_norm``, ``head``, ``norm``) -> ``num_layers`` (= depth + 1).

    ``prefix`` is stripped first (e.g. ``"encoder."`` for a wrapped ViT); names without it go to ``num_layers``.
    """
    if prefix:
        if not name.startswith(prefix):
            return num_layers
        name = name[len(prefix):]
    if name in _STEM or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers


def param_groups_layer_decay(model: nn.Module, weight_decay: float = 0.05, layer_decay: float = 0.75, *,
                             depth: int | None = None, prefix: str = "",
                             no_weight_decay: Iterable[str] = ("pos_embed", "cls_token", "dist_token"),
                             lr_mult: Mapping[str, float] | None = None) -> list[dict]:
    """Parameter groups with layer-wise lr decay (BEiT / MAE ``param_groups_lrd``).

    Scale of layer ``l`` (:func:`vit_layer_id`): ``layer_decay ** (depth + 1 - l)``, so the head has 1.0, the
    last block ``layer_decay``, the patch embedding ``layer_decay ** (depth + 1)``. No weight decay on 1-D
    tensors (biases, norms) and on the names in ``no_weight_decay`` (after ``prefix``). Frozen parameters
    (``requires_grad=False``) are left out.

    Args:
        model: a ViT with ``blocks`` (or ``depth`` given).
        depth: number of blocks; default ``len(model.blocks)`` (after ``prefix``).
        prefix: the ViT's parameter-name prefix inside ``model`` (e.g. ``"encoder."``).
        lr_mult: extra lr multipliers for names containing a keyword (SiameseIM's code: ``{"offset": 0.1}``).

    Returns:
        ``[{"params", "lr_scale", "weight_decay", "layer_id"}, ...]``; use :func:`set_lr` to apply the scales.

    Raises:
        ValueError: ``depth`` not given and the model has no ``blocks``.
    """
    if depth is None:
        owner = model
        for part in [p for p in prefix.split(".") if p]:
            owner = getattr(owner, part)
        if not hasattr(owner, "blocks"):
            raise ValueError("param_groups_layer_decay needs `depth` for a model without a `blocks` list")
        depth = len(owner.blocks)
    num_layers = depth + 1
    nwd = set(no_weight_decay)
    groups: dict[tuple[int, bool, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        short = name[len(prefix):] if prefix and name.startswith(prefix) else name
        decay = not (p.ndim == 1 or short in nwd)
        layer = vit_layer_id(name, num_layers, prefix)
        mult = 1.0
        for key, m in (lr_mult or {}).items():
            if key in name:
                mult = float(m)
        g = groups.setdefault((layer, decay, mult), {
            "params": [], "lr_scale": layer_decay ** (num_layers - layer) * mult,
            "weight_decay": weight_decay if decay else 0.0, "layer_id": layer})
        g["params"].append(p)
    return list(groups.values())


def half_cosine_lr(epoch: float, base_lr: float, epochs: float, warmup_epochs: float, min_lr: float = 0.0) -> float:
    """MAE / SiameseIM learning rate at fractional epoch ``epoch = e + it / iters_per_epoch``.

    ``base_lr * epoch / warmup`` during warmup (from 0), then
    ``min_lr + (base_lr - min_lr) * (1 + cos(pi * (epoch - warmup) / (epochs - warmup))) / 2``.
    Call it before optimizer step ``k`` with ``epoch = k / iters_per_epoch`` (the official loop's offset).
    """
    if epoch < warmup_epochs:
        return base_lr * epoch / warmup_epochs
    span = max(epochs - warmup_epochs, 1e-12)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / span))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to ``lr * group["lr_scale"]`` (1 when the group has no scale)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def build_lars(params: Iterable[nn.Parameter] | nn.Module, lr: float, *, weight_decay: float = 0.0,
               momentum: float = 0.9, trust_coefficient: float = 0.001) -> torch.optim.Optimizer:
    """MAE's linear-probe LARS with timm's ``Lars``.

    Tensors with ``ndim > 1`` get weight decay and the trust ratio ``tc * ||w|| / ||g + wd w||`` (timm
    computes ``||g|| + wd ||w||`` in the denominator, equal to MAE's at ``wd = 0``, the linear-probe
    setting); 1-D tensors get neither (timm ``always_adapt`` per group, ``eps = 0`` as MAE). Then SGD with
    momentum, no dampening.
    """
    ps = [p for p in (params.parameters() if isinstance(params, nn.Module) else params) if p.requires_grad]
    from timm.optim import Lars

    groups: Sequence[dict] = [
        {"params": [p for p in ps if p.ndim > 1], "weight_decay": weight_decay, "always_adapt": True},
        {"params": [p for p in ps if p.ndim <= 1], "weight_decay": 0.0, "always_adapt": False},
    ]
    return Lars([g for g in groups if g["params"]], lr=lr, momentum=momentum, trust_coeff=trust_coefficient, eps=0.0)
