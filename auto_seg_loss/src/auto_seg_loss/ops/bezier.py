"""Piecewise quadratic Bezier curve h: [0, 1] -> [0, 1] with h(0) = 0, h(1) = 1 (spec §3.3).

A curve with n pieces has control points P_0 = (0, 0), P_1, ..., P_{2n-1}, P_{2n} = (1, 1); the 2n - 1
interior points are given flat as ``ctrl = [x_1, y_1, ..., x_{2n-1}, y_{2n-1}]`` (shape (2(2n-1),)).
Piece j covers x in (x_{2j}, x_{2j+2}] (piece 0 also x <= 0). On a piece with end points x_0 < x_2 and
middle x_1, with a = (x_1 - x_0)/(x_2 - x_0) and xi = (x - x_0)/(x_2 - x_0), the curve parameter is the
root of xi = 2a t(1 - t) + t^2:

    t = xi                                       if a == 1/2   (degenerate, linear in t)
    t = (a - sqrt(a^2 + (1 - 2a) xi)) / (2a - 1)  otherwise
      = xi / (a + sqrt(a^2 + (1 - 2a) xi))        (same root, stable form used by the fast paths)
    y = (1 - t)^2 y_0 + 2 t (1 - t) y_1 + t^2 y_2

Three implementations with one signature ``f(x, ctrl) -> h(x)`` (x of any shape, values in [0, 1]):

* :func:`bezier_reference` -- the official evaluation order: every piece is solved on every element
  (inputs outside a piece clamped to its end) and the pieces are merged by masks. Readable, slow.
* :func:`bezier_select` -- each element is solved only on its own piece (one ``bucketize`` + gathers of
  the per-piece constants), with the rationalised root (exact; also accurate when a is within rounding
  of 1/2, where the official form cancels catastrophically).
* :func:`bezier_lut` / :class:`BezierLUT` -- h tabulated on the grid k / 2^16 (:func:`build_lut`), one
  run of nodes per piece so that no bin straddles a piece junction, and linearly interpolated with a
  custom autograd function whose backward is the slope of the interpolating segment (two gathers per
  element). Approximate; error bounded in the tests and the benchmark.

Also :func:`theta_to_control_points`, the search parameterisation (spec §3.3, last paragraph) that maps
theta in [0, 1]^D to monotone control points, and :func:`identity_theta`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


def _points(ctrl: torch.Tensor) -> torch.Tensor:
    """(2(2n-1),) interior coordinates -> (2n+1, 2) control points incl. the fixed ends (0,0), (1,1)."""
    if ctrl.dim() != 1 or ctrl.numel() % 4 != 2:
        raise ValueError(
            f"control points must be a flat vector of 2*(2n-1) numbers (n pieces), got shape {tuple(ctrl.shape)}"
        )
    zero, one = ctrl.new_zeros(2), ctrl.new_ones(2)
    return torch.cat([zero, ctrl, one]).view(-1, 2)


def _solve_t(a: torch.Tensor, xi: torch.Tensor, degenerate: bool) -> torch.Tensor:
    """Official root of xi = 2a t(1-t) + t^2 (spec §3.3); ``degenerate`` marks a == 1/2 exactly."""
    if degenerate:
        return xi
    return (a - torch.sqrt(a * a + (1 - 2 * a) * xi)) / (2 * a - 1)


def _solve_t_stable(a: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """The same root as ``xi / (a + sqrt(a^2 + (1-2a) xi))`` (numerator rationalised): no branch at
    a = 1/2 and no cancellation for a close to 1/2; 0/0 at a = xi = 0 is mapped to t = 0."""
    den = a + torch.sqrt(a * a + (1 - 2 * a) * xi)
    return xi / den.clamp_min(1e-30)


def bezier_reference(x: torch.Tensor, ctrl: torch.Tensor) -> torch.Tensor:
    """h(x) as in the official ``_bezier`` (out-of-place variant). x: any shape; ctrl: (2(2n-1),)."""
    pts = _points(ctrl.to(x.dtype))
    n = (pts.shape[0] - 1) // 2
    y = x
    for j in range(n):
        (x0, y0), (x1, y1), (x2, y2) = pts[2 * j], pts[2 * j + 1], pts[2 * j + 2]
        if j == 0:
            inside = x <= x2
        else:
            inside = (x > x0) & (x <= x2)
        xp = torch.where(inside, x, x2)
        a = (x1 - x0) / (x2 - x0)
        xi = (xp - x0) / (x2 - x0)
        t = _solve_t(a, xi, bool(a == 0.5))
        yj = (1 - t) ** 2 * y0 + 2 * t * (1 - t) * y1 + t**2 * y2
        y = yj if j == 0 else torch.where(inside, yj, y)
    return y


def _piece_constants(ctrl: torch.Tensor, dtype: torch.dtype):
    pts = _points(ctrl.to(dtype))
    x0, x1, x2 = pts[0:-1:2, 0], pts[1::2, 0], pts[2::2, 0]
    y0, y1, y2 = pts[0:-1:2, 1], pts[1::2, 1], pts[2::2, 1]
    return x0, x1, x2, y0, y1, y2


def bezier_select(x: torch.Tensor, ctrl: torch.Tensor) -> torch.Tensor:
    """h(x), each element solved on its own piece only (exact). x: any shape, values in [0, 1]."""
    x0, x1, x2, y0, y1, y2 = _piece_constants(ctrl, x.dtype)
    width = x2 - x0
    a = (x1 - x0) / width
    idx = torch.bucketize(x.detach(), x2[:-1].detach().contiguous())  # piece j: x in (x2[j-1], x2[j]]
    xi = (x - x0[idx]) / width[idx]
    t = _solve_t_stable(a[idx], xi)
    one_t = 1 - t
    return one_t * one_t * y0[idx] + 2 * t * one_t * y1[idx] + t * t * y2[idx]


class LUTLayout(NamedTuple):
    """Where each Bezier piece lives in a lookup table (see :func:`build_lut`).

    bins: B, grid spacing 1/B. junctions: the piece ends e_1 < ... < e_{n-1} inside (0, 1).
    shifts: per junction, the change of the table offset c_j - c_{j-1} (integers): an element x of piece j
    sits at table position u = x * B + c_j.
    """

    bins: int
    junctions: tuple[float, ...]
    shifts: tuple[float, ...]


_LUT_MARGIN = 1.0  # grid nodes each piece's table extends past its junctions (>> float rounding of x * B + c)


def build_lut(ctrl: torch.Tensor, bins: int = 1 << 16) -> tuple[torch.Tensor, torch.Tensor, LUTLayout]:
    """Tabulate h for :class:`BezierLUT` without ever interpolating across a piece junction.

    Every piece j gets its own run of nodes g / B of the uniform grid, from (at least ``_LUT_MARGIN``
    nodes) before its start to (at least ``_LUT_MARGIN`` nodes) after its end; the runs are concatenated.
    Nodes inside the piece hold h exactly (float64, the stable root of :func:`bezier_select`); nodes
    outside it continue the chord of the piece's partial bin at that end, so on each side of a junction
    the interpolant is the piece's own (next to a junction: the chord of that piece over the sub-bin).
    x = 0 and x = 1 are nodes of the first / last run, so h(0) = 0 and h(1) = 1 stay exact.

    Returns:
        values: (T,) float64 h at the nodes; steps: (T,) float64 value increment of the bin starting at
        each node (the increment of the bin before it for the last node of a run); layout: :class:`LUTLayout`.

    Raises:
        ValueError: ``bins`` is not a power of two (x * bins must be exact in floating point).
    """
    if bins < 2 or bins & (bins - 1):
        raise ValueError(f"lut_bins must be a power of two >= 2 (x * bins must be exact), got {bins}")
    ctrl = ctrl.detach().to(torch.float64).cpu()
    pts = _points(ctrl)
    ends = pts[0::2, 0].tolist()  # e_0 = 0, e_1, ..., e_n = 1
    n = len(ends) - 1
    values, steps, offsets = [], [], []
    size = 0
    for j in range(n):
        lo_e, hi_e = ends[j], ends[j + 1]
        first = 0 if j == 0 else math.floor(lo_e * bins - _LUT_MARGIN)
        last = bins if j == n - 1 else math.ceil(hi_e * bins + _LUT_MARGIN)
        g = torch.arange(first, last + 1, dtype=torch.float64) / bins
        y = _piece_values(g.clamp(lo_e, hi_e), pts, j)
        inner = g[(g > lo_e) & (g < hi_e)]
        left, right = g < lo_e, g > hi_e
        if bool(left.any()):  # chord from (e_j, h(e_j)) to the first node inside the piece, extended left
            xb = float(inner[0]) if inner.numel() else hi_e
            ya, yb = _piece_values(torch.tensor([lo_e, xb], dtype=torch.float64), pts, j).tolist()
            y[left] = ya + (yb - ya) / (xb - lo_e) * (g[left] - lo_e)
        if bool(right.any()):  # chord from the last node inside the piece to (e_{j+1}, h(e_{j+1})), extended right
            xa = float(inner[-1]) if inner.numel() else lo_e
            ya, yb = _piece_values(torch.tensor([xa, hi_e], dtype=torch.float64), pts, j).tolist()
            y[right] = yb + (yb - ya) / (hi_e - xa) * (g[right] - hi_e)
        step = torch.cat([y.diff(), y.diff()[-1:]])
        offsets.append(size - first)  # table position of x in this piece: x * B + offset
        values.append(y)
        steps.append(step)
        size += len(g)
    shifts = tuple(float(b - a) for a, b in zip(offsets[:-1], offsets[1:]))
    return torch.cat(values), torch.cat(steps), LUTLayout(int(bins), tuple(ends[1:-1]), shifts)


def _piece_values(x: torch.Tensor, pts: torch.Tensor, j: int) -> torch.Tensor:
    """h on piece j for x inside [x_{2j}, x_{2j+2}] (float64), with the stable root of :func:`bezier_select`."""
    (x0, y0), (x1, y1), (x2, y2) = pts[2 * j].tolist(), pts[2 * j + 1].tolist(), pts[2 * j + 2].tolist()
    a = torch.tensor((x1 - x0) / (x2 - x0), dtype=torch.float64)
    t = _solve_t_stable(a, (x - x0) / (x2 - x0))
    return (1 - t) ** 2 * y0 + 2 * t * (1 - t) * y1 + t * t * y2


class BezierLUT(torch.autograd.Function):
    """Linear interpolation in tables built by :func:`build_lut`; two gathers per element.

    forward(x, values, steps, layout) -> y. An element x (clamped to [0, 1]) of piece j (decided by
    x > e_j in x's dtype, as :func:`bezier_select` decides) is looked up at u = x * B + c_j, inside piece
    j's own run of nodes, so no bin mixes two pieces; x * B is exact (B a power of two), c_j a small
    integer. y = values[i] + steps[i] * (u - i) with i = floor(u).
    backward: dy/dx = steps[i] * B, the slope of the interpolating segment (no gradient to the tables).
    x: any shape, float32/float64 (half precision is computed in float32 by :class:`BezierCurve`);
    values, steps: (T,) on x's device in x's dtype.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, values: torch.Tensor, steps: torch.Tensor, layout: LUTLayout) -> torch.Tensor:
        g = x.clamp(0.0, 1.0) * layout.bins  # exact; g > e * B  <=>  x > e in x's dtype
        u = g
        for e, shift in zip(layout.junctions, layout.shifts):
            u = torch.add(u, g > e * layout.bins, alpha=shift)  # the run of the piece right of junction e
        i = u.floor().long().clamp_(0, values.numel() - 1)  # a NaN input gives a valid index (and a NaN output)
        step = steps[i]
        ctx.save_for_backward(step)
        ctx.bins = layout.bins
        return torch.addcmul(values[i], step, u - i)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (step,) = ctx.saved_tensors
        return grad * step * ctx.bins, None, None, None


def bezier_lut(x: torch.Tensor, ctrl: torch.Tensor, bins: int = 1 << 16) -> torch.Tensor:
    """h(x) by table lookup (builds the tables each call; cache them with :class:`BezierCurve`)."""
    values, steps, layout = build_lut(ctrl, bins)
    return BezierLUT.apply(x, values.to(device=x.device, dtype=x.dtype), steps.to(device=x.device, dtype=x.dtype),
                           layout)


class BezierCurve(torch.nn.Module):
    """A fixed curve h (buffers only) with a selectable implementation.

    The control points and the lookup table are registered buffers (they move with ``.to(device)``)
    and are in addition moved to the input's device and dtype at use, so a curve that was not moved
    still works on a CUDA input. Half-precision inputs are evaluated in float32 and returned in their
    own dtype.

    Args:
        ctrl: (2(2n-1),) interior control points.
        impl: ``"reference"`` | ``"select"`` | ``"lut"``.
        lut_bins: table resolution for ``"lut"`` (grid spacing 1 / lut_bins; a power of two).
    """

    IMPLS = ("reference", "select", "lut")

    def __init__(self, ctrl, impl: str = "lut", lut_bins: int = 1 << 16):
        super().__init__()
        if impl not in self.IMPLS:
            raise ValueError(f"unknown bezier impl {impl!r}; choose one of {self.IMPLS}")
        ctrl = torch.as_tensor(ctrl, dtype=torch.float64).flatten()
        _points(ctrl)
        check_monotone(ctrl)
        self.impl = impl
        self.register_buffer("ctrl", ctrl)
        values, steps, self.layout = build_lut(ctrl, lut_bins) if impl == "lut" else (torch.empty(0), torch.empty(0), None)
        self.register_buffer("values", values, persistent=False)
        self.register_buffer("steps", steps, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            return self.forward(x.float()).to(x.dtype)
        if self.impl == "lut":
            return BezierLUT.apply(x, self.values.to(device=x.device, dtype=x.dtype),
                                   self.steps.to(device=x.device, dtype=x.dtype), self.layout)
        if self.impl == "select":
            return bezier_select(x, self.ctrl.to(x.device))
        return bezier_reference(x, self.ctrl.to(x.device))


def check_monotone(ctrl: torch.Tensor) -> None:
    """Raise ``ValueError`` unless all control x's and y's lie in [0, 1], are non-decreasing, and every
    piece has positive width (the monotonicity constraint of spec §3.3)."""
    pts = _points(torch.as_tensor(ctrl, dtype=torch.float64))
    if bool((pts < 0).any() or (pts > 1).any()):
        raise ValueError(f"control points must lie in [0, 1]^2, got {pts[1:-1].tolist()}")
    if bool((pts[1:] < pts[:-1]).any()):
        raise ValueError(f"control point coordinates must be non-decreasing (monotone curve), got {pts[1:-1].tolist()}")
    if bool((pts[2::2, 0] <= pts[0:-1:2, 0]).any()):
        raise ValueError(f"every Bezier piece needs x_(2j+2) > x_(2j), got {pts[1:-1].tolist()}")


def theta_to_control_points(theta: torch.Tensor, num_pieces: int) -> torch.Tensor:
    """Search parameters -> control points (spec §3.3): per curve, Q_1 = theta_1 and
    Q_j = theta_j * (1 - Q_{j-1}) + Q_{j-1} coordinate-wise, j = 2..2n-1.

    theta: (..., D) with D a multiple of 2(2n-1) (curves concatenated); returns the same shape.
    """
    per_curve = 2 * (2 * num_pieces - 1)
    if theta.shape[-1] % per_curve:
        raise ValueError(f"theta length {theta.shape[-1]} is not a multiple of 2(2n-1) = {per_curve}")
    q = theta.reshape(*theta.shape[:-1], -1, 2 * num_pieces - 1, 2)
    out = [q[..., 0, :]]
    for j in range(1, q.shape[-2]):
        out.append(q[..., j, :] * (1 - out[-1]) + out[-1])
    return torch.stack(out, dim=-2).reshape(theta.shape)


def identity_theta(num_pieces: int, num_curves: int = 1) -> torch.Tensor:
    """theta whose control points lie on y = x, evenly spaced (h = identity): (num_curves * 2(2n-1),)."""
    m = 2 * num_pieces - 1
    pts = torch.arange(1, m + 1, dtype=torch.float64) / (m + 1)  # target x = y = j / 2n
    prev = torch.cat([torch.zeros(1, dtype=torch.float64), pts[:-1]])
    th = (pts - prev) / (1 - prev)
    return th.repeat_interleave(2).repeat(num_curves)
