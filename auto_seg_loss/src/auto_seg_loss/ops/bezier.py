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
* :func:`bezier_lut` / :class:`BezierLUT` -- h tabulated on a uniform grid (2^16 + 1 nodes by default)
  and linearly interpolated, with a custom autograd function whose backward is the slope of the
  interpolant (one gather per element). Approximate; error bounded in the tests and the benchmark.

Also :func:`theta_to_control_points`, the search parameterisation (spec §3.3, last paragraph) that maps
theta in [0, 1]^D to monotone control points, and :func:`identity_theta`.
"""

from __future__ import annotations

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


class BezierLUT(torch.autograd.Function):
    """Linear interpolation in a table of h on ``bins + 1`` uniform nodes of [0, 1].

    forward(x, table) -> y, backward: dy/dx = slope of the interpolating segment (no grad to the table).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        bins = table.numel() - 1
        u = x.clamp(0.0, 1.0) * bins
        i = u.floor().clamp_(max=bins - 1).long()
        lo = table[i]
        slope = table[i + 1] - lo
        ctx.save_for_backward(slope)
        ctx.bins = bins
        return torch.addcmul(lo, slope, u - i)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (slope,) = ctx.saved_tensors
        return grad * slope * ctx.bins, None


def bezier_table(ctrl: torch.Tensor, bins: int = 1 << 16, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(bins + 1,) values of h on the grid k / bins, computed exactly in float64."""
    grid = torch.linspace(0.0, 1.0, bins + 1, dtype=dtype, device=ctrl.device)
    with torch.no_grad():
        return bezier_select(grid, ctrl.detach().to(dtype))


def bezier_lut(x: torch.Tensor, ctrl: torch.Tensor, bins: int = 1 << 16) -> torch.Tensor:
    """h(x) by table lookup (builds the table each call; cache it with :class:`BezierCurve`)."""
    return BezierLUT.apply(x, bezier_table(ctrl, bins).to(x.dtype))


class BezierCurve(torch.nn.Module):
    """A fixed curve h (buffers only) with a selectable implementation.

    Args:
        ctrl: (2(2n-1),) interior control points.
        impl: ``"reference"`` | ``"select"`` | ``"lut"``.
        lut_bins: table resolution for ``"lut"``.
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
        self.register_buffer("table", bezier_table(ctrl, lut_bins) if impl == "lut" else torch.empty(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "lut":
            return BezierLUT.apply(x, self.table.to(x.dtype))
        if self.impl == "select":
            return bezier_select(x, self.ctrl)
        return bezier_reference(x, self.ctrl)


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
