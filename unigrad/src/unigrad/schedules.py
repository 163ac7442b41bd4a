"""Learning-rate and momentum schedules, exactly as the official loops compute them (spec §3.6, §4.2).

Pre-training sets the lr and the EMA momentum of global step ``step`` (0-based, counted in optimizer steps)
BEFORE that step's forward: the first step runs at ``min_lr`` and momentum ``base``.
"""

from __future__ import annotations

import math

from repro_shared.ssl.momentum import cosine_momentum

__all__ = ["scaled_lr", "pretrain_lr", "ema_momentum", "lineval_lr"]


def scaled_lr(base_lr: float, global_batch: int, denominator: int = 256) -> float:
    """Linear scaling rule ``base_lr * global_batch / denominator`` (0.05 * 1024 / 256 = 0.2 in pre-training)."""
    return base_lr * global_batch / denominator


def pretrain_lr(step: int, *, init_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 1e-3,
                cosine_denominator: str = "total") -> float:
    """Official ``adjust_lr``: linear warm-up from ``min_lr`` to ``init_lr``, then cosine back toward ``min_lr``.

    ``min_lr = min_lr_ratio * init_lr``;
    ``step < W``: ``lr = (init_lr - min_lr) * step / W + min_lr``;
    else ``lr = min_lr + (init_lr - min_lr) * (1 + cos(pi * (step - W) / D)) / 2`` with ``D = total_steps`` (the
    official quirk: the final lr is above ``min_lr``, ~1.43e-3 for the 100-epoch run) or ``total_steps - W``
    (``cosine_denominator="after_warmup"``).

    Raises:
        ValueError: unknown ``cosine_denominator``.
    """
    if cosine_denominator not in ("total", "after_warmup"):
        raise ValueError(f"cosine_denominator must be 'total' or 'after_warmup', got {cosine_denominator!r}")
    min_lr = min_lr_ratio * init_lr
    if step < warmup_steps:
        return (init_lr - min_lr) * step / warmup_steps + min_lr
    denom = total_steps if cosine_denominator == "total" else max(total_steps - warmup_steps, 1)
    return min_lr + 0.5 * (init_lr - min_lr) * (1.0 + math.cos(math.pi * (step - warmup_steps) / denom))


def ema_momentum(step: int, *, total_steps: int, base: float) -> float:
    """Official ``adjust_mm`` (BYOL cosine): ``1 - (1 - base) (cos(pi step / T) + 1) / 2``, base 0.996 -> 1."""
    return cosine_momentum(step, total_steps, base)


def lineval_lr(epoch: int, *, init_lr: float, epochs: int) -> float:
    """Linear evaluation (SimSiam protocol): per-epoch cosine ``init_lr * (1 + cos(pi epoch / epochs)) / 2``, no warm-up."""
    return init_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
