"""Literal, per-sample evaluations of the spec's gradient formulas: the references for tests and benchmarks.

Each function loops over the anchors and sums over the set V of "other" embeddings exactly as the unified
formula is written, ``g_i = -pos_i + lambda * sum_{v in V} w_v(i) v`` (spec §3.2), with nothing shared
with :mod:`unigrad.losses.gradient_forms` (no correlation matrix F, no batch-level matrix products: one anchor
at a time, its weights w_v and the weighted sum over V). Slow on purpose; use float64 inputs for tests. Inputs
are unit-norm rows (n, C); outputs (n, C).
"""

from __future__ import annotations

import torch

__all__ = ["unified", "unigrad", "simclr", "moco", "byol_directpred", "barlow_twins", "vicreg",
           "ema_weights"]


def unified(pos: torch.Tensor, anchors: torch.Tensor, negatives: torch.Tensor, weight, lambd: float = 1.0
            ) -> torch.Tensor:
    """``g_i = -pos_i + lambd * sum_j weight(i, anchors_i, negatives) [j] * negatives_j``, one anchor at a time.

    ``weight(i, a, V)`` returns the (|V|,) weights ``w_v`` of anchor i.
    """
    rows = []
    for i in range(anchors.shape[0]):
        w = weight(i, anchors[i], negatives)
        rows.append(-pos[i] + lambd * (w @ negatives))  # sum_v w_v v
    return torch.stack(rows)


def ema_weights(num_batches: int, rho: float) -> list[float]:
    """Weight of batch k (0 = first) in an EMA initialised with batch 0: ``rho^(T-1)`` for k = 0, then
    ``(1 - rho) rho^(T-1-k)``; they sum to 1."""
    t = num_batches
    return [rho ** (t - 1)] + [(1 - rho) * rho ** (t - 1 - k) for k in range(1, t)]


def unigrad(u1: torch.Tensor, t2: torch.Tensor, history: list[torch.Tensor], lambd: float, rho: float) -> torch.Tensor:
    """UniGrad, ``g1_i = -t2_i + lambda sum_v rho_v (u1_i^T v) v`` over every past target v.

    ``history``: the target sets (each ``cat(t1, t2)`` of a step, all ranks, (2N, C)) from the first step to the
    current one; ``rho_v`` = the batch's EMA weight (:func:`ema_weights`) / its size.
    """
    vs = torch.cat(history)
    rho_v = torch.cat([torch.full((len(h),), w / len(h), dtype=u1.dtype)
                       for h, w in zip(history, ema_weights(len(history), rho))])
    return unified(t2, u1, vs, lambda i, a, v: rho_v * (v @ a), lambd)


def simclr(u1: torch.Tensor, t2: torch.Tensor, candidates: torch.Tensor, tau: float) -> torch.Tensor:
    """Contrastive, ``g1_i = (-t2_i + sum_v s_v v) / tau``, ``s = softmax_v(u1_i^T v / tau)`` over ``candidates`` (M, C)."""
    return unified(t2, u1, candidates, lambda i, a, v: torch.softmax(v @ a / tau, 0)) / tau


def moco(u1: torch.Tensor, t2: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """MoCo, as :func:`simclr` with the candidates of anchor i = ``{t2_i} + queue``."""
    rows = [simclr(u1[i:i + 1], t2[i:i + 1], torch.cat([t2[i:i + 1], queue]), tau)[0] for i in range(len(u1))]
    return torch.stack(rows)


def byol_directpred(u1: torch.Tensor, t2: torch.Tensor, F: torch.Tensor, eps: float) -> torch.Tensor:
    """BYOL with the DirectPred predictor, one sample at a time (spec §3.4):
    ``g = (1/||W_p u||) (-W_p t + (<W_p u, t> / (u^T M u)) M u)``, ``W_p = F^(1/2)/sqrt(s_max) + eps`` in F's
    eigenbasis, ``M = F / s_max + eps^2 I``."""
    s, U = torch.linalg.eigh(F)
    s = s.clamp(min=0)
    w_p = U @ torch.diag((torch.sqrt(s / s.max()) + eps).clamp(min=1e-4)) @ U.T
    m = F / s.max() + eps ** 2 * torch.eye(F.shape[0], dtype=F.dtype)
    rows = []
    for u, t in zip(u1, t2):
        h = w_p @ u
        rows.append((-(w_p @ t) + (h @ t) / (u @ m @ u) * (m @ u)) / h.norm())
    return torch.stack(rows)


def barlow_twins(t2: torch.Tensor, bank1: torch.Tensor, bank2t: torch.Tensor, lambd: float, n: int) -> torch.Tensor:
    """Feature decorrelation (Barlow Twins), ``g1_i = 2 (-t2_i + lambda sum_j (t2_i^T v2_j / N) v1_j)``,
    v1 = ``bank1`` (online view-1 batch), v2 = ``bank2t`` (view-2 targets)."""
    rows = []
    for i in range(t2.shape[0]):
        rows.append(2 * (-t2[i] + lambd * ((bank2t @ t2[i]) / n) @ bank1))  # sum_j (t2_i . v2_j / N) v1_j
    return torch.stack(rows)


def vicreg(u1: torch.Tensor, t2: torch.Tensor, bank1t: torch.Tensor, lambd: float) -> torch.Tensor:
    """Within-branch decorrelation (our VICReg form), ``g1_i = -t2_i + lambda sum_j (u1_i^T v1_j / N) v1_j``."""
    n = bank1t.shape[0]
    return unified(t2, u1, bank1t, lambda i, a, v: (v @ a) / n, lambd)
