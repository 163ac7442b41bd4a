"""Momentum (target) networks: the BYOL cosine momentum schedule and a fused EMA update.

Used as they are by UniGrad (base 0.996), SiameseIM and M3I (base 0.995).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

__all__ = ["cosine_momentum", "ema_update_", "momentum_pairs"]


def cosine_momentum(step: float, total_steps: float, base: float) -> float:
    """BYOL's momentum schedule ``m = 1 - (1 - base) * (cos(pi * step / total_steps) + 1) / 2``.

    ``m`` rises from ``base`` at step 0 to 1 at ``total_steps``. ``step`` may be fractional (SiameseIM
    writes it as the fractional epoch ``epoch + it / iters_per_epoch`` over ``total_steps = epochs``; the
    value is the same).

    Raises:
        ValueError: ``total_steps <= 0`` or ``base`` outside [0, 1].
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"base momentum must be in [0, 1], got {base}")
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0


def momentum_pairs(online: nn.Module, target: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Matching parameter lists ``(target_params, online_params)`` of two modules of the same structure.

    Buffers (BN running statistics) are not included: in UniGrad and SiameseIM each branch keeps its own.

    Raises:
        ValueError: the two modules' parameter names or shapes differ.
    """
    on = dict(online.named_parameters())
    tg = dict(target.named_parameters())
    if on.keys() != tg.keys():
        diff = sorted(set(on) ^ set(tg))[:10]
        raise ValueError(f"online and target networks differ in their parameters: {diff}")
    bad = [k for k in on if on[k].shape != tg[k].shape]
    if bad:
        raise ValueError(f"online and target parameters differ in shape: {bad[:10]}")
    return [tg[k] for k in on], [on[k] for k in on]


@torch.no_grad()
def ema_update_(target: Iterable[torch.Tensor], online: Iterable[torch.Tensor], momentum: float) -> None:
    """In place, for every pair: ``t <- momentum * t + (1 - momentum) * o`` (two fused ``_foreach`` ops).

    The same arithmetic as the official ``param_m.data = param_m.data * m + param.data * (1 - m)``, in
    two kernels for all tensors rather than two per tensor.

    Raises:
        ValueError: the two lists differ in length.
    """
    t, o = list(target), list(online)
    if len(t) != len(o):
        raise ValueError(f"{len(t)} target tensors but {len(o)} online tensors")
    if not t:
        return
    torch._foreach_mul_(t, momentum)
    torch._foreach_add_(t, o, alpha=1.0 - momentum)
