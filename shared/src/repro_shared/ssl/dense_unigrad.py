"""The dense UniGrad-form loss of SiameseIM (spec sim.md section 3.1), used as it is by M3I.

For ``M`` rows (all tokens of the local batch) of predictions ``P`` and already-normalised targets ``T``
(``M x D``; the caller applies the target LayerNorm)::

    pos = (1/M) sum_m ||p_m - t_m||^2                 squared L2 summed over channels, mean over rows
    F   = mean over ranks of (T^T T / M)              D x D target correlation, no gradient
    neg = (1/M) sum_m p_m^T F p_m
    L   = (pos + lambda * neg) / D                    lambda = 0.02 in SiameseIM

so that ``dL/dp_m = 2/(M D) [(p_m - t_m) + lambda F p_m]``: a pull to the target plus UniGrad's
decorrelation push, with ``F`` a memory-free stand-in for negatives.

The official code forms the ``M x M`` matrix ``P F P^T`` and takes its diagonal (``O(M^2)`` memory: 2.5 GB at
``M = 128 * 196``, twice with its gradient); here ``neg`` is the row-wise ``((P F) * P).sum(-1).mean()`` in row
blocks with the analytic gradient, ``O(M D^2)`` time and no ``M x D`` temporaries beyond the gradient itself,
equal up to float rounding. Everything runs in float32 with autocast off. ``F`` is
all-reduced (sum / world size) only when a process group is initialised with more than one rank, so the
loss also works in a single process (the official one crashes without ``torch.distributed``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as tdist

__all__ = ["UniGradTerms", "target_correlation", "dense_unigrad_terms", "dense_unigrad_loss"]


class UniGradTerms(NamedTuple):
    """The loss and its parts: ``loss = (pos + neg_weight * neg) / D`` (scalars), ``correlation`` ``F`` (D, D)."""

    loss: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor
    correlation: torch.Tensor


def _autocast_device(t: torch.Tensor) -> str:
    return t.device.type if t.device.type in ("cuda", "cpu", "xpu") else "cpu"


def target_correlation(target: torch.Tensor, *, all_reduce: bool = True) -> torch.Tensor:
    """``F = T^T T / M``, float32 ``(D, D)``, averaged over ranks under an initialised process group.

    Args:
        target: ``(..., D)``; all leading dimensions are flattened into ``M`` rows. Not differentiated.
        all_reduce: average over the ranks of the default group (when initialised and world size > 1).
            Every rank must hold the same ``M`` for this to be the global ``T^T T / M_total``, as in the
            official code (``drop_last`` batches).
    """
    with torch.autocast(device_type=_autocast_device(target), enabled=False):
        t = target.detach().reshape(-1, target.shape[-1]).float()
        corr = t.T @ t / t.shape[0]
    if all_reduce and tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
        tdist.all_reduce(corr)
        corr = corr / tdist.get_world_size()
    return corr


_CHUNK_ROWS = 8192  # rows per block of the forward / backward: temporaries stay O(chunk * D)


class _DenseUniGrad(torch.autograd.Function):
    """``(pos, neg)`` of float32 rows ``p`` ``(M, D)`` against ``t`` with a fixed ``F``, with the analytic gradient
    ``d pos / d p = 2 (p - t) / M`` and ``d neg / d p = 2 p F / M`` (``F`` symmetric). Nothing of size ``M x D``
    is saved for the backward (it recomputes block by block), so the peak memory of forward + backward is the
    gradient itself plus ``O(chunk * D)``."""

    @staticmethod
    def forward(ctx, p: torch.Tensor, t: torch.Tensor, corr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos = p.new_zeros(())
        neg = p.new_zeros(())
        for s in range(0, p.shape[0], _CHUNK_ROWS):  # one (chunk, D) temporary at a time
            pc, tc = p[s:s + _CHUNK_ROWS], t[s:s + _CHUNK_ROWS]
            pos += torch.sub(pc, tc).pow_(2).sum()
            neg += torch.mm(pc, corr).mul_(pc).sum()
        ctx.save_for_backward(p, t, corr)
        m = p.shape[0]
        return pos / m, neg / m

    @staticmethod
    def backward(ctx, g_pos: torch.Tensor, g_neg: torch.Tensor):
        p, t, corr = ctx.saved_tensors
        m = p.shape[0]
        grad = torch.empty_like(p)
        for s in range(0, m, _CHUNK_ROWS):  # written in place into the gradient, one (chunk, D) temporary
            pc, out = p[s:s + _CHUNK_ROWS], grad[s:s + _CHUNK_ROWS]
            torch.sub(pc, t[s:s + _CHUNK_ROWS], out=out).mul_(g_pos)
            out.add_(torch.mm(pc, corr).mul_(g_neg)).mul_(2.0 / m)
        return grad, None, None


def dense_unigrad_terms(pred: torch.Tensor, target: torch.Tensor, neg_weight: float = 0.02, *,
                        all_reduce: bool = True) -> UniGradTerms:
    """The dense UniGrad loss and its parts (module docstring), row-wise, float32.

    Args:
        pred: ``(..., D)`` predictions (e.g. ``(B, N, D)``); differentiable (the gradient comes back in
            ``pred``'s dtype).
        target: same shape as ``pred``; normalised targets (SiameseIM: LayerNorm without affine, eps 1e-5);
            no gradient flows into it.
        neg_weight: ``lambda``, the weight of the decorrelation term (0 gives plain normalised L2).
        all_reduce: average ``F`` over ranks (see :func:`target_correlation`).

    Returns:
        :class:`UniGradTerms` ``(loss, pos, neg, correlation)``.

    Raises:
        ValueError: ``pred`` and ``target`` differ in shape, or hold no rows.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    if pred.numel() == 0:
        raise ValueError("the dense UniGrad loss needs at least one row")
    corr = target_correlation(target, all_reduce=all_reduce)
    with torch.autocast(device_type=_autocast_device(pred), enabled=False):
        p = pred.reshape(-1, pred.shape[-1]).float()
        t = target.detach().reshape(-1, target.shape[-1]).float()
        pos, neg = _DenseUniGrad.apply(p, t, corr)
        loss = (pos + neg_weight * neg) / p.shape[-1]
    return UniGradTerms(loss, pos, neg, corr)


def dense_unigrad_loss(pred: torch.Tensor, target: torch.Tensor, neg_weight: float = 0.02, *,
                       all_reduce: bool = True) -> torch.Tensor:
    """The scalar loss of :func:`dense_unigrad_terms` (float32)."""
    return dense_unigrad_terms(pred, target, neg_weight, all_reduce=all_reduce).loss
