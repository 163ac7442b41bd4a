"""Fast pairwise ranking sums of the PAP loss: sort + prefix sums, no |S| x |P| matrix (spec §10).

For every positive ``i`` (logit ``s_i``) the loss needs (spec §3.2)

    Num_i = sum_{k in S} f_H2(x_ki) w_k,     Den_i = sum_{k in S} f_H1(x_ki),
    x_ki  = clamp((z_k - s_i) / 2 + 1/2, 0, 1),      w_k = 1 - f_I2(u_k).

``f`` is piecewise linear in ``x`` and hence in ``z_k`` with breakpoints ``z = s_i + 2 x_j - 1``. After
sorting ``z`` once, each sum is a handful of range sums of ``w`` and ``w z`` read from prefix sums at
``searchsorted`` positions: O((|S| + |P|) log |S|) time, O(|S| + |P|) memory. The backward pass is the
same trick with the roles swapped (sort the positives, prefix sums of ``c_i`` and ``c_i s_i``).
All accumulation is in float64, so float32 inputs give the reference values to float32 precision.

The reference that materialises the matrix lives in :func:`param_ap_loss.losses.pap_loss_reference`.
"""

from __future__ import annotations

import torch

from .piecewise import SegmentTable

DenSpec = SegmentTable | str  # a piecewise-linear table, "sign" (sign(d)/2 + 1/2) or "step" (1[d >= 0])


def _prefix(v: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N+1,) inclusive prefix sums with a leading 0."""
    return torch.cat([v.new_zeros(1), torch.cumsum(v, 0)])


def _tab(t: SegmentTable, ref: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(x.to(device=ref.device, dtype=torch.float64) for x in (t.xs, t.a, t.b, t.f0, t.f1))


def _sums_over_ranked(z_sorted: torch.Tensor, cw: torch.Tensor, cwz: torch.Tensor, s: torch.Tensor,
                      tab: SegmentTable) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum_k f(x_ki) w_k`` for every positive.

    Args:
        z_sorted: (N,) ascending ranked logits; cw, cwz: (N+1,) prefix sums of ``w`` and ``w z`` in that order.
        s: (P,) positive logits.
    Returns:
        values (P,), and per-segment range sums of ``w`` (P, 5) (reused by the gradient w.r.t. ``s``).

    Regions in ``x_raw = (z - s)/2 + 1/2``: ``x_raw <= 0`` -> f0, ``(x_j, x_{j+1}]`` -> segment j,
    ``x_raw >= 1`` -> f1 (matches the official clamp, whose gradient is 0 at both ends).
    """
    xs, a, b, f0, f1 = _tab(tab, s)
    thr = (s[:, None] + (2 * xs - 1)[None, :]).contiguous()  # (P, 6): z <= thr  <=>  x_raw <= x_j
    # x_raw >= 1 is clamped to x = 1 (constant f1, zero slope), so breakpoints at 1 are closed on the left
    idx = torch.where(xs[None, :] < 1, torch.searchsorted(z_sorted, thr, right=True),
                      torch.searchsorted(z_sorted, thr, right=False))
    W, WZ = cw[idx], cwz[idx]
    w_seg, wz_seg = W[:, 1:] - W[:, :-1], WZ[:, 1:] - WZ[:, :-1]  # (P, 5): x_raw in (x_j, x_{j+1}]
    # on segment j: f = a_j + b_j ((z - s)/2 + 1/2)
    inner = ((a + b / 2)[None, :] - b[None, :] * s[:, None] / 2) * w_seg + (b / 2)[None, :] * wz_seg
    val = f0 * W[:, 0] + f1 * (cw[-1] - W[:, 5]) + inner.sum(1)
    return val, w_seg


def _sums_over_positives(z: torch.Tensor, s_sorted: torch.Tensor, cc: torch.Tensor, ccs: torch.Tensor,
                         tab: SegmentTable) -> tuple[torch.Tensor, torch.Tensor]:
    """For every ranked entry ``k``: ``sum_i c_i f(x_ki)`` and ``sum_i c_i f'(x_ki) / 2``.

    Args:
        z: (N,) ranked logits; s_sorted: (P,) ascending positive logits; cc, ccs: (P+1,) prefix sums of
        ``c`` and ``c s`` in that order.
    Returns:
        (N,), (N,).
    """
    xs, a, b, f0, f1 = _tab(tab, z)
    thr = (z[:, None] + (1 - 2 * xs)[None, :]).contiguous()  # (N, 6), decreasing along dim 1
    # #{s < thr} (x_raw > x_j); for x_j == 1: #{s <= thr} (x_raw >= 1 is the constant top region)
    cnt = torch.where(xs[None, :] < 1, torch.searchsorted(s_sorted, thr, right=False),
                      torch.searchsorted(s_sorted, thr, right=True))
    C, CS = cc[cnt], ccs[cnt]
    c_seg, cs_seg = C[:, :-1] - C[:, 1:], CS[:, :-1] - CS[:, 1:]  # (N, 5): x_raw in (x_j, x_{j+1}]
    inner = ((a + b / 2)[None, :] + b[None, :] * z[:, None] / 2) * c_seg - (b / 2)[None, :] * cs_seg
    val = f0 * (cc[-1] - C[:, 0]) + f1 * C[:, 5] + inner.sum(1)
    slope = ((b / 2)[None, :] * c_seg).sum(1)
    return val, slope


def _step_den(z_sorted: torch.Tensor, s: torch.Tensor, mode: str) -> torch.Tensor:
    """Normaliser for step functions: ``#{z >= s}`` ("step") or ``#{z > s} + #{z == s}/2`` ("sign")."""
    n = z_sorted.numel()
    ge = n - torch.searchsorted(z_sorted, s, right=False)
    if mode == "step":
        return ge.to(torch.float64)
    gt = n - torch.searchsorted(z_sorted, s, right=True)
    return gt.to(torch.float64) + 0.5 * (ge - gt).to(torch.float64)


class RankRatio(torch.autograd.Function):
    """``R_i = Num_i / sg[Den_i]`` for every positive (spec §3.2), exact gradients w.r.t. z, w and s."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, w: torch.Tensor, s: torch.Tensor, num: SegmentTable, den: DenSpec,
                den_eps: float) -> torch.Tensor:
        """z (N,), w (N,), s (P,) -> R (P,) in the dtype of ``s``."""
        out_dtype = s.dtype
        # no re-centring: shifting would break exact ties (z - s = 0 or +-1) that the reference resolves exactly
        z64, s64 = z.detach().to(torch.float64), s.detach().to(torch.float64)
        w64 = w.detach().to(torch.float64)
        z_sorted, order = torch.sort(z64)
        w_sorted = w64[order]
        num_val, w_seg = _sums_over_ranked(z_sorted, _prefix(w_sorted), _prefix(w_sorted * z_sorted), s64, num)
        if isinstance(den, str):
            den_val = _step_den(z_sorted, s64, den)
        else:
            ones = torch.ones_like(z_sorted)
            den_val, _ = _sums_over_ranked(z_sorted, _prefix(ones), _prefix(z_sorted), s64, den)
        if den_eps > 0:
            den_val = den_val.clamp_min(den_eps)
        ctx.save_for_backward(z64, w64, s64, den_val, w_seg)
        ctx.num = num
        return (num_val / den_val).to(out_dtype)

    @staticmethod
    def backward(ctx, grad_r: torch.Tensor):
        z64, w64, s64, den_val, w_seg = ctx.saved_tensors
        num: SegmentTable = ctx.num
        c = grad_r.to(torch.float64) / den_val  # (P,) dL/dNum_i
        s_sorted, order = torch.sort(s64)
        c_sorted = c[order]
        gw, slope = _sums_over_positives(z64, s_sorted, _prefix(c_sorted), _prefix(c_sorted * s_sorted), num)
        gz = w64 * slope
        b = num.b.to(device=c.device, dtype=torch.float64)
        gs = -c * (w_seg * (b / 2)[None, :]).sum(1)
        return (gz.to(grad_r.dtype), gw.to(grad_r.dtype), gs.to(grad_r.dtype), None, None, None)


def rank_ratio(z: torch.Tensor, w: torch.Tensor, s: torch.Tensor, num: SegmentTable, den: DenSpec,
               den_eps: float = 0.0) -> torch.Tensor:
    """Functional form of :class:`RankRatio`; ``den`` is a table (no gradient), ``"sign"`` or ``"step"``."""
    return RankRatio.apply(z, w, s, num, den, float(den_eps))


def soft_counts(keys: torch.Tensor, weights: torch.Tensor, queries: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """``out_i = sum_k w_k H(keys_k - queries_i)`` with ``H(d) = clamp(d / (2 delta) + 1/2, 0, 1)``
    (the smoothed step of AP-Loss / aLRP Loss), no gradient; sort + prefix sums, float64.

    With keys sorted, ``H = 1`` for ``key >= q + delta``, ``0`` for ``key <= q - delta`` and linear in between,
    so each query needs two ``searchsorted`` and four prefix-sum reads.
    keys (N,), weights (N,), queries (Q,) -> (Q,) float64. O((N + Q) log N) time, O(N + Q) memory.
    """
    k_sorted, order = torch.sort(keys.detach().to(torch.float64) / delta)
    q = queries.detach().to(torch.float64) / delta
    w = weights.detach().to(torch.float64)[order]
    cw, cwk = _prefix(w), _prefix(w * k_sorted)
    lo = torch.searchsorted(k_sorted, q - 1, right=True)  # keys <= q - 1 count 0
    hi = torch.searchsorted(k_sorted, q + 1, right=False)  # keys >= q + 1 count 1
    mid_w, mid_wk = cw[hi] - cw[lo], cwk[hi] - cwk[lo]
    return (cw[-1] - cw[hi]) + (mid_wk - (q - 1) * mid_w) / 2


def soft_counts_transposed(keys: torch.Tensor, queries: torch.Tensor, coeffs: torch.Tensor,
                           delta: float = 1.0) -> torch.Tensor:
    """``out_k = sum_i c_i H(keys_k - queries_i)`` for every key (the transposed sum of :func:`soft_counts`,
    e.g. the error-driven update of each negative), no gradient; float64.

    keys (N,), queries (Q,), coeffs (Q,) -> (N,) float64; two ``searchsorted`` per key into the sorted queries.
    """
    k = keys.detach().to(torch.float64) / delta
    q_sorted, order = torch.sort(queries.detach().to(torch.float64) / delta)
    c = coeffs.detach().to(torch.float64)[order]
    cc, ccq = _prefix(c), _prefix(c * q_sorted)
    a = torch.searchsorted(q_sorted, k - 1, right=True)  # queries <= k - 1: H = 1
    b = torch.searchsorted(q_sorted, k + 1, right=False)  # queries < k + 1: H > 0
    return cc[a] + ((k + 1) * (cc[b] - cc[a]) - (ccq[b] - ccq[a])) / 2
