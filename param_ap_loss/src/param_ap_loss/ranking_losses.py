"""Hand-crafted ranking losses of the paper's baseline rows: AP-Loss and aLRP Loss (our code).

Both rank the positives P against the negatives N of one mini-batch (all anchors x classes, ignored
entries excluded) with the smoothed step ``H(x_ij) = clamp((s_j - s_i) / (2 delta) + 1/2, 0, 1)``,
``delta = 1``, and train the logits with an *error-driven* update instead of the gradient of the smoothed
loss (the papers' perceptron-style rule). For a positive ``i``:

    rank+(i) = 1 + sum_{k in P, k != i} H(x_ik),   N_FP(i) = sum_{j in N} H(x_ij),   rank(i) = rank+(i) + N_FP(i)
    prec(i)  = rank+(i) / rank(i)

* **AP-Loss** (Chen et al., CVPR 2019 / TPAMI 2020): ``L = 1 - mean_i prec(i)``; the update of a
  positive is ``-(1 - prec(i)) / |P|`` and of a negative ``sum_i H(x_ij) / rank(i) / |P|`` (the primary
  terms ``L_ij = H(x_ij) / rank(i)``). With ``interpolate=True`` (the implementation behind the paper's
  "AP Loss + L1" row, the aLRP code base) the precision is interpolated: positives are visited in
  ascending score and ``P(i) = max(prec(k): s_k <= s_i)``; the loss is ``1 - mean P(i)``, a positive's
  update ``-(1 - P(i)) / |P|`` and its primary terms are rescaled by ``(1 - P(i)) / (1 - prec(i))``.
* **aLRP Loss** (Oksuz et al., NeurIPS 2020): with localisation errors ``E_k`` of the positives
  (``E = (1 - GIoU) / (2 (1 - tau))``, tau the positive IoU threshold of the head),

      L_cls = 1 - mean_i prec(i),
      L_loc = mean_i (1 / rank(i)) sum_{k in P: s_k >= s_i} E_k    (rank detached; gradient through E),

  the update of a positive with ``N_FP(i) > eps`` is ``-(sum_{k != i} E_k H(x_ik) + N_FP(i)) / rank(i) / |P|``
  and it is spread over the negatives in proportion to ``H(x_ij) / N_FP(i)`` (so positive and negative
  updates balance). ``L_loc`` is multiplied by the self-balancing weight ``SB`` (start 50; every
  ``period`` iterations ``SB = (mean L_loc + mean L_cls) / mean L_loc`` over that period).

All pairwise sums use sort + prefix sums (:func:`param_ap_loss.ops.rank_sums.soft_counts`), so cost is
O((|P| + |N|) log) instead of the official |P| x |N| loops; values and updates are identical (tested
against explicit pairwise formulas and hand-computed cases).
"""

from __future__ import annotations

import torch
from torch import nn

from .ops.rank_sums import soft_counts, soft_counts_transposed


def _ranks(logits: torch.Tensor, targets: torch.Tensor, delta: float):
    """Positives' logits (P,), negatives' logits (N,), rank+ (P,), N_FP (P,) in float64."""
    pos, neg = targets == 1, targets == 0
    s, n = logits[pos], logits[neg]
    rank_pos = soft_counts(s, torch.ones_like(s), s, delta) + 0.5  # self term H(0) = 1/2 -> 1 + sum_{k != i}
    n_fp = soft_counts(n, torch.ones_like(n), s, delta)
    return pos, neg, s, n, rank_pos, n_fp


class _APLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, delta: float, interpolate: bool):
        pos, neg, s, n, rank_pos, n_fp = _ranks(logits.detach(), targets, delta)
        num_pos = s.numel()
        rank = rank_pos + n_fp
        prec = rank_pos / rank
        if interpolate:
            order = torch.sort(s.detach(), stable=True).indices
            hat = torch.empty_like(prec)
            hat[order] = torch.cummax(prec[order], 0).values
            scale = torch.where(prec >= hat, torch.ones_like(prec), (1 - hat) / (1 - prec).clamp_min(1e-300))
        else:
            hat, scale = prec, torch.ones_like(prec)
        grad = torch.zeros(logits.shape, dtype=torch.float64, device=logits.device)
        grad[pos] = -(1 - hat) / num_pos
        grad[neg] = soft_counts_transposed(n, s, scale / rank, delta) / num_pos
        ctx.save_for_backward(grad)
        return (1 - hat.mean()).to(logits.dtype)

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return (grad * g).to(g.dtype), None, None, None


def ap_loss(logits: torch.Tensor, targets: torch.Tensor, delta: float = 1.0, interpolate: bool = True) -> torch.Tensor:
    """AP-Loss with the error-driven update (module docstring).

    Args:
        logits: (M,) or (M, C) raw scores; targets: same shape, 1 positive, 0 negative, -1 ignored.
        delta: half width of the smoothed step (1.0 officially).
        interpolate: interpolated precision (the aLRP code base's AP-Loss, default) or the plain definition.
    Returns:
        scalar ``1 - AP``; 0 with a graph when there is no positive.
    """
    if not (targets == 1).any():
        return logits.sum() * 0
    return _APLoss.apply(logits.reshape(-1), targets.reshape(-1), float(delta), bool(interpolate))


class _ALRPCls(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, loc_errors, delta: float, eps: float):
        pos, neg, s, n, rank_pos, n_fp = _ranks(logits.detach(), targets, delta)
        num_pos = s.numel()
        e = loc_errors.detach().to(torch.float64)
        rank = rank_pos + n_fp
        prec = rank_pos / rank
        others_e = soft_counts(s, e, s, delta) - 0.5 * e  # sum_{k != i} E_k H(x_ik)
        active = n_fp > eps
        g_pos = torch.where(active, -(others_e + n_fp) / rank, torch.zeros_like(rank))
        per_fp = torch.where(active, -g_pos / n_fp.clamp_min(eps), torch.zeros_like(rank))
        grad = torch.zeros(logits.shape, dtype=torch.float64, device=logits.device)
        grad[pos] = g_pos / num_pos
        grad[neg] = soft_counts_transposed(n, s, per_fp, delta) / num_pos
        ctx.save_for_backward(grad)
        return (1 - prec.mean()).to(logits.dtype), rank.to(logits.dtype)

    @staticmethod
    def backward(ctx, g, _g_rank):
        (grad,) = ctx.saved_tensors
        return (grad * g).to(g.dtype), None, None, None, None


def alrp_loss(logits: torch.Tensor, targets: torch.Tensor, loc_errors: torch.Tensor, delta: float = 1.0,
              eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """aLRP Loss components ``(L_cls, L_loc)`` without self-balancing (module docstring).

    Args:
        logits: (M,) or (M, C); targets: same shape in {-1, 0, 1}.
        loc_errors: (P,) localisation errors ``E`` of the positives in the order of ``logits[targets == 1]``
            (row-major); ``L_loc`` is differentiable w.r.t. them, ``L_cls``'s update uses them detached.
    Returns:
        two scalars; zeros with a graph when there is no positive.
    """
    flat_t = targets.reshape(-1)
    if not (flat_t == 1).any():
        zero = logits.sum() * 0 + loc_errors.sum() * 0
        return zero, zero
    flat = logits.reshape(-1)
    if loc_errors.numel() != int((flat_t == 1).sum()):
        raise ValueError(f"loc_errors has {loc_errors.numel()} entries for {int((flat_t == 1).sum())} positives")
    cls, rank = _ALRPCls.apply(flat, flat_t, loc_errors, float(delta), float(eps))
    desc = torch.sort(flat[flat_t == 1].detach(), stable=True).indices.flip(0)
    loc = (torch.cumsum(loc_errors[desc], 0) / rank.detach()[desc]).mean()
    return cls, loc


class ALRPLoss(nn.Module):
    """aLRP Loss with self-balancing; the SB state lives in buffers (saved with the model, so resume is exact).

    Args:
        head_weight: multiplies both components (official: 0.2 for the RPN, 1 otherwise).
        period: iterations between SB updates (official 3665 = one COCO epoch at batch 32).
        sb_init: initial SB weight (official 50).
    forward(logits (M, C), targets (M, C), loc_errors (P,)) -> {"loss_cls", "loss_bbox"}.
    """

    def __init__(self, head_weight: float = 1.0, period: int = 3665, sb_init: float = 50.0, delta: float = 1.0):
        super().__init__()
        if period < 1:
            raise ValueError(f"aLRP self-balancing period must be >= 1 iteration, got {period}")
        self.head_weight, self.period, self.delta = float(head_weight), int(period), float(delta)
        self.register_buffer("sb_weight", torch.tensor(float(sb_init), dtype=torch.float64))
        self.register_buffer("cls_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("loc_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, loc_errors: torch.Tensor) -> dict[str, torch.Tensor]:
        cls, loc = alrp_loss(logits, targets, loc_errors, self.delta)
        cls, loc = self.head_weight * cls, self.head_weight * loc
        sb = self.sb_weight.to(loc.dtype)
        if self.training and bool((targets == 1).any()):
            self._update(cls.detach(), loc.detach())
        return {"loss_cls": cls, "loss_bbox": loc * sb}

    @torch.no_grad()
    def _update(self, cls: torch.Tensor, loc: torch.Tensor) -> None:
        """Official history: accumulate the period's values, then SB = (mean loc + mean cls) / mean loc
        (no host sync: the period test is a tensor ``where``)."""
        self.cls_sum += cls.double()
        self.loc_sum += loc.double()
        self.count += 1
        full = self.count >= self.period
        new = (self.loc_sum + self.cls_sum) / self.loc_sum.clamp_min(1e-12)
        self.sb_weight.copy_(torch.where(full, new, self.sb_weight))
        for buf in (self.cls_sum, self.loc_sum):
            buf.copy_(torch.where(full, torch.zeros_like(buf), buf))
        self.count.copy_(torch.where(full, torch.zeros_like(self.count), self.count))

    def extra_repr(self) -> str:
        return f"head_weight={self.head_weight}, period={self.period}"
