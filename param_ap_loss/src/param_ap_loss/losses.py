"""Parameterized AP loss (spec §3.1-3.2), its exact (step-function) form, GradScale, and baselines.

Inputs of every PAP loss, for one head and one mini-batch (all images and classes ranked together):

* ``logits`` Z: (M, C) raw classification logits;
* ``targets`` T: (M, C) in {-1, 0, 1}: 1 at (anchor, its class) for positives, a whole row of -1 for
  ignored anchors, 0 otherwise;
* ``ious`` U: (M, C) localisation quality in [0, 1] at positive entries, 0 elsewhere.

Eq. (PAP), spec §3.2, with S the ranking set (top-``num_topk`` valid entries), P the positives and
x_ki = clamp((Z_k - Z_i)/2 + 1/2, 0, 1):

    L = 1/(|P| + 1e-8) sum_{i in P} [ 1 - f_I1(u_i) + f_I3(u_i) sum_k f_H2(x_ki)(1 - f_I2(u_k)) / sum_k sg[f_H1(x_ki)] ]
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .ops.boxes import giou_aligned
from .ops.piecewise import piecewise_linear, segment_table, validate_ctrl_points
from .ops.rank_sums import rank_ratio
from .presets import IDENTITY_ROW, get_preset

LOSS_FORMS = ("searched", "linear", "sigmoid", "square")
COCO_TAUS = tuple(0.5 + 0.05 * k for k in range(10))


# ------------------------------------------------------------------------------------ selection
def select_entries(logits: torch.Tensor, ious: torch.Tensor, targets: torch.Tensor, num_topk: int | float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ranking set and positives of Eq. (PAP).

    Returns ``z_S`` (|S|,), ``u_S`` (|S|,), ``s_P`` (|P|,), ``u_P`` (|P|,): S = the top-``num_topk`` valid
    entries (T != -1) by logit (all of them if fewer), P = all entries with T == 1 (never truncated).
    """
    if logits.shape != targets.shape or ious.shape != targets.shape:
        raise ValueError(f"logits, ious and targets must have the same shape (M, C); got "
                         f"{tuple(logits.shape)}, {tuple(ious.shape)}, {tuple(targets.shape)}")
    pos = targets == 1
    valid = targets != -1
    z_all, u_all = logits[valid], ious[valid]
    k = int(num_topk)
    if z_all.numel() > k:
        z_all, idx = torch.topk(z_all, k)
        u_all = u_all[idx]
    return z_all, u_all, logits[pos], ious[pos]


def _check_ctrl(ctrl_points: torch.Tensor | Sequence, ref: torch.Tensor) -> torch.Tensor:
    return validate_ctrl_points(ctrl_points).to(device=ref.device, dtype=ref.dtype)


# ------------------------------------------------------------------------------------ reference
def _pairwise_terms(z: torch.Tensor, u: torch.Tensor, s: torch.Tensor, us: torch.Tensor, ctrl: torch.Tensor | None,
                    loss_form: str) -> torch.Tensor:
    """Per-positive loss terms with the full (|S|, |P|) matrices (the official computation). -> (|P|,)"""
    diff = z[:, None] - s[None, :]
    x = torch.clamp(diff / 2 + 0.5, 0, 1)
    if loss_form == "searched":
        h1 = (torch.sign(diff) / 2 + 0.5) if ctrl.shape[0] == 4 else piecewise_linear(x, ctrl[4]).detach()
        h2 = piecewise_linear(x, ctrl[0])
        i2, i3, i1 = piecewise_linear(u, ctrl[1]), piecewise_linear(us, ctrl[2]), piecewise_linear(us, ctrl[3])
    elif loss_form == "sigmoid":
        h1, h2 = torch.sigmoid(diff).detach(), torch.sigmoid(diff)
        i2, i3, i1 = torch.sigmoid(u * 2 - 1), torch.sigmoid(us * 2 - 1), torch.sigmoid(us * 2 - 1)
    elif loss_form == "linear":
        h1, h2, i2, i3, i1 = x.detach(), x, u, us, us
    elif loss_form == "square":
        h1, h2, i2, i3, i1 = (x ** 2).detach(), x ** 2, u ** 2, us ** 2, us ** 2
    else:
        raise ValueError(f"unknown loss_form {loss_form!r}; known: {', '.join(LOSS_FORMS)}")
    return (1 - i1) + (h2 * (1 - i2)[:, None] * i3[None, :]).sum(0) / h1.sum(0)


def pap_loss_reference(logits: torch.Tensor, ious: torch.Tensor, targets: torch.Tensor,
                       ctrl_points: torch.Tensor | Sequence | None = None, num_topk: int | float = 1e5,
                       loss_form: str = "searched") -> torch.Tensor:
    """Eq. (PAP) exactly as the official ``paploss``: O(|S| |P|) time and memory. Kept for tests."""
    z, u, s, us = select_entries(logits, ious, targets, num_topk)
    ctrl = _check_ctrl(ctrl_points, logits) if loss_form == "searched" else None
    terms = _pairwise_terms(z, u, s, us, ctrl, loss_form)
    return terms.sum() / (s.numel() + 1e-8)


# ------------------------------------------------------------------------------------ fast
def pap_loss_fast(logits: torch.Tensor, ious: torch.Tensor, targets: torch.Tensor,
                  ctrl_points: torch.Tensor | Sequence | None = None, num_topk: int | float = 1e5,
                  loss_form: str = "searched", den_eps: float = 0.0, chunk: int = 256) -> torch.Tensor:
    """Eq. (PAP) with the same values and gradients as :func:`pap_loss_reference`, no (|S|, |P|) matrix.

    Piecewise-linear forms (``searched``, ``linear``) use sort + prefix sums
    (:mod:`param_ap_loss.ops.rank_sums`); ``sigmoid``/``square`` are evaluated over chunks of ``chunk``
    positives with activation checkpointing (memory O(|S| chunk)). ``den_eps > 0`` clamps the
    normaliser from below (guard for pathological H1 shapes; 0 = official behaviour).
    """
    if loss_form not in LOSS_FORMS:
        raise ValueError(f"unknown loss_form {loss_form!r}; known: {', '.join(LOSS_FORMS)}")
    z, u, s, us = select_entries(logits, ious, targets, num_topk)
    if s.numel() == 0:
        return logits.sum() * 0 + ious.sum() * 0
    if loss_form in ("searched", "linear"):
        rows = _check_ctrl(ctrl_points, logits) if loss_form == "searched" else \
            torch.tensor([IDENTITY_ROW] * 5, dtype=logits.dtype, device=logits.device)
        if loss_form == "searched":
            i2, i3, i1 = piecewise_linear(u, rows[1]), piecewise_linear(us, rows[2]), piecewise_linear(us, rows[3])
        else:
            i2, i3, i1 = u, us, us
        den = segment_table(rows[4]) if rows.shape[0] == 5 else "sign"
        r = rank_ratio(z, 1 - i2, s, segment_table(rows[0]), den, den_eps)
        terms = (1 - i1) + i3 * r
        return terms.sum() / (s.numel() + 1e-8)
    total = logits.new_zeros(())
    for start in range(0, s.numel(), chunk):
        part = checkpoint(_pairwise_terms, z, u, s[start:start + chunk], us[start:start + chunk], None, loss_form,
                          use_reentrant=False)
        total = total + part.sum()
    return total / (s.numel() + 1e-8)


# ------------------------------------------------------------------------------------ exact
def exact_ap_loss(logits: torch.Tensor, ious: torch.Tensor, targets: torch.Tensor,
                  taus: Sequence[float] = COCO_TAUS, num_topk: int | float = 1e5) -> torch.Tensor:
    """Eq. (1 - AP_tau) of spec §3.1 with the step functions, averaged over ``taus`` (no gradient).

    f_H = 1[d >= 0], f_I = 1[u >= tau]; sort + prefix sums. With distinct logits this is the
    non-interpolated AP at each IoU threshold (a positive below tau counts as a false positive).
    """
    z, u, s, us = select_entries(logits.detach(), ious.detach(), targets, num_topk)
    if s.numel() == 0:
        return logits.new_zeros(())
    z_sorted, order = torch.sort(z.to(torch.float64))
    u_sorted = u.to(torch.float64)[order]
    first_ge = torch.searchsorted(z_sorted, s.to(torch.float64), right=False)  # ranks: #{z >= s_i} = n - first_ge
    den = (z_sorted.numel() - first_ge).to(torch.float64)
    losses = []
    for tau in taus:
        cw = torch.cat([u_sorted.new_zeros(1), torch.cumsum((u_sorted < tau).to(torch.float64), 0)])
        num = cw[-1] - cw[first_ge]  # false positives ranked at or above each positive
        hit = (us >= tau).to(torch.float64)
        ratio = torch.where(den > 0, num / den.clamp_min(1), torch.zeros_like(num))
        losses.append(((1 - hit) + hit * ratio).sum() / s.numel())
    return torch.stack(losses).mean().to(logits.dtype)


def exact_ap_loss_reference(logits: torch.Tensor, ious: torch.Tensor, targets: torch.Tensor,
                            taus: Sequence[float] = COCO_TAUS, num_topk: int | float = 1e5) -> torch.Tensor:
    """Pairwise-matrix version of :func:`exact_ap_loss` (for tests)."""
    z, u, s, us = select_entries(logits.detach(), ious.detach(), targets, num_topk)
    h = (z[:, None] - s[None, :] >= 0).to(torch.float64)
    out = []
    for tau in taus:
        hit = (us >= tau).to(torch.float64)
        miss = (u < tau).to(torch.float64)
        out.append(((1 - hit) + hit * (h * miss[:, None]).sum(0) / h.sum(0)).sum() / s.numel())
    return torch.stack(out).mean().to(logits.dtype)


# ------------------------------------------------------------------------------------ module
class PAPLoss(nn.Module):
    """Parameterized AP loss with named presets or explicit control points.

    Args:
        preset: one of :data:`param_ap_loss.presets.PRESETS` (sets control points and ``reg_weight``).
        ctrl_points: (5, 12) or (4, 12) table, rows H2, I2, I3, I1[, H1] (overrides the preset's).
        loss_form: ``searched`` | ``linear`` | ``sigmoid`` | ``square`` (spec §3.2).
        num_topk: size limit of the ranking set (official 1e5).
        impl: ``fast`` (prefix sums) or ``reference`` (official pairwise matrices).
        den_eps: lower clamp of the normaliser in the fast path (0 = official behaviour).
    """

    def __init__(self, preset: str | None = None, ctrl_points: Sequence | None = None, loss_form: str = "searched",
                 num_topk: float = 1e5, impl: str = "fast", reg_weight: float | None = None, den_eps: float = 0.0):
        super().__init__()
        if loss_form not in LOSS_FORMS:
            raise ValueError(f"unknown loss_form {loss_form!r}; known: {', '.join(LOSS_FORMS)}")
        if impl not in ("fast", "reference"):
            raise ValueError(f"unknown impl {impl!r}; use 'fast' or 'reference'")
        p = get_preset(preset) if preset else None
        ctrl = ctrl_points if ctrl_points is not None else (p.ctrl_points if p else None)
        if loss_form == "searched" and ctrl is None:
            raise ValueError("loss_form 'searched' needs a preset or ctrl_points")
        table = validate_ctrl_points(ctrl) if ctrl is not None else torch.tensor([IDENTITY_ROW] * 5, dtype=torch.float64)
        self.register_buffer("ctrl_points", table.float(), persistent=False)
        self.loss_form, self.num_topk, self.impl, self.den_eps = loss_form, num_topk, impl, den_eps
        self.reg_weight = float(reg_weight if reg_weight is not None else (p.reg_weight if p else 1.0))

    def set_parameters(self, ctrl_points: torch.Tensor | Sequence, reg_weight: float) -> None:
        """Replace control points and lambda (used by the search for each sampled loss)."""
        self.ctrl_points = validate_ctrl_points(ctrl_points).to(self.ctrl_points)
        self.reg_weight = float(reg_weight)

    def forward(self, logits: torch.Tensor, ious: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(M, C), (M, C), (M, C) -> scalar loss."""
        ctrl = self.ctrl_points.to(logits.dtype)
        if self.impl == "reference":
            return pap_loss_reference(logits, ious, targets, ctrl, self.num_topk, self.loss_form)
        return pap_loss_fast(logits, ious, targets, ctrl, self.num_topk, self.loss_form, self.den_eps)

    def extra_repr(self) -> str:
        return f"loss_form={self.loss_form}, reg_weight={self.reg_weight:.4f}, num_topk={int(self.num_topk)}, impl={self.impl}"


class GradScale(torch.autograd.Function):
    """Identity on (cls, box); backward multiplies the box gradient by lambda (official ``GradScale``)."""

    @staticmethod
    def forward(ctx, cls_out: torch.Tensor, box_out: torch.Tensor, scale: float):
        ctx.scale = float(scale)
        return cls_out.view_as(cls_out), box_out.view_as(box_out)

    @staticmethod
    def backward(ctx, g_cls: torch.Tensor, g_box: torch.Tensor):
        return g_cls, g_box * ctx.scale, None


def grad_scale(cls_out: torch.Tensor, box_out: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Functional :class:`GradScale`."""
    return GradScale.apply(cls_out, box_out, scale)


# ------------------------------------------------------------------------------------ baselines
def sigmoid_focal_loss_sum(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
                           ) -> torch.Tensor:
    """Sum of the sigmoid focal loss -alpha_t (1 - p_t)^gamma log p_t; (M, C), (M, C) in {0, 1} -> scalar."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    a_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (a_t * (1 - p_t) ** gamma * ce).sum()


def giou_loss_sum(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum of 1 - GIoU over matching rows; (N, 4), (N, 4) -> scalar."""
    return (1 - giou_aligned(pred, target)).sum()

