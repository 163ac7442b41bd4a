"""Monotone piecewise-linear functions on [0, 1] through six control points (spec §3.3).

A function is given by one row of 12 numbers ``x_0, y_0, x_1, y_1, ..., x_5, y_5`` with
``(x_0, y_0) = (0, 0)``, ``(x_5, y_5) = (1, 1)`` and non-decreasing ``x`` and ``y``. Evaluation follows
the official ``_linear`` exactly:

* ``x`` in ``(x_j, x_{j+1}]`` uses segment ``j`` (so the derivative at an interior breakpoint is the
  slope of the segment on its left);
* ``x == 0`` uses segment ``#{j: x_j == 0} - 1`` (no 0/0 when ``x_1 == 0``).

The search parameterises each function by 8 numbers in [0, 1] (:func:`theta_to_ctrl`): every free
point lies in the box spanned by the previous point and (1, 1), which makes the curve monotone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NUM_POINTS = 6
ROW_LEN = 2 * NUM_POINTS
IDENTITY_THETA = (0.2, 0.2, 0.25, 0.25, 1.0 / 3.0, 1.0 / 3.0, 0.5, 0.5)
"""Search initialisation: maps to the identity line through (0,0),(.2,.2),...,(.8,.8),(1,1)."""


def validate_ctrl_points(ctrl: torch.Tensor | list, num_functions: tuple[int, ...] = (4, 5), name: str = "ctrl_points",
                         atol: float = 1e-6) -> torch.Tensor:
    """Check a control-point table and return it as a float64 tensor of shape ``(F, 12)``.

    Raises ``ValueError`` with what was wrong: wrong shape or number of points, end points not
    (0,0)/(1,1), values outside [0, 1], or non-monotone ``x``/``y``.
    """
    t = torch.as_tensor(ctrl, dtype=torch.float64).detach().cpu()
    if t.dim() == 1:
        t = t[None]
    if t.dim() != 2 or t.shape[1] != ROW_LEN:
        raise ValueError(
            f"{name}: each function needs {NUM_POINTS} control points given as {ROW_LEN} numbers "
            f"x0,y0,...,x5,y5; got a table of shape {tuple(t.shape)}")
    if num_functions and t.shape[0] not in num_functions:
        raise ValueError(f"{name}: expected {' or '.join(map(str, num_functions))} functions (rows in order "
                         f"H2, I2, I3, I1[, H1]); got {t.shape[0]}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: control points must be finite")
    xs, ys = t[:, 0::2], t[:, 1::2]
    if (t < -atol).any() or (t > 1 + atol).any():
        raise ValueError(f"{name}: control points must lie in [0, 1]^2")
    if (xs[:, 0].abs() > atol).any() or (ys[:, 0].abs() > atol).any() \
            or ((xs[:, -1] - 1).abs() > atol).any() or ((ys[:, -1] - 1).abs() > atol).any():
        raise ValueError(f"{name}: every function must start at (0, 0) and end at (1, 1)")
    for label, v in (("x", xs), ("y", ys)):
        bad = (v[:, 1:] < v[:, :-1] - atol).any(dim=1)
        if bad.any():
            rows = bad.nonzero().flatten().tolist()
            raise ValueError(f"{name}: {label} coordinates of function row(s) {rows} are not non-decreasing; "
                             "the functions must be monotone")
    return t


def piecewise_linear(x: torch.Tensor, ctrl: torch.Tensor) -> torch.Tensor:
    """Evaluate one piecewise-linear function elementwise (official ``_linear`` semantics).

    Args:
        x: any shape, values in [0, 1].
        ctrl: (12,) control points ``x0,y0,...,x5,y5`` (same dtype/device as ``x``).
    Returns:
        ``f(x)``, same shape as ``x``; differentiable in ``x`` (segment slope, left slope at breakpoints).
    """
    cx, cy = ctrl[0::2], ctrl[1::2]
    idx = (x[..., None] > cx).sum(-1) + (cx == 0).sum() * (x == 0) - 1
    idx = idx.clamp(0, NUM_POINTS - 2)
    x0, x1, y0, y1 = cx[idx], cx[idx + 1], cy[idx], cy[idx + 1]
    return (y1 - y0) / (x1 - x0) * (x - x0) + y0


@dataclass(frozen=True)
class SegmentTable:
    """A piecewise-linear function as five affine pieces ``f(x) = a_j + b_j x`` on ``(x_j, x_{j+1}]``.

    ``f0``/``f1`` are the official values at ``x = 0`` and ``x = 1``. Zero-width segments get
    ``a = b = 0`` (they are never selected for ``x > 0``). All tensors are float64 scalars / (5,)/(6,).
    """

    xs: torch.Tensor  # (6,)
    a: torch.Tensor  # (5,)
    b: torch.Tensor  # (5,)
    f0: torch.Tensor  # ()
    f1: torch.Tensor  # ()


def segment_table(ctrl: torch.Tensor) -> SegmentTable:
    """Affine pieces of one function row (12,) in float64, used by the prefix-sum loss."""
    c = ctrl.to(torch.float64)
    xs, ys = c[0::2], c[1::2]
    dx, dy = xs[1:] - xs[:-1], ys[1:] - ys[:-1]
    live = dx > 0
    b = torch.where(live, dy / torch.where(live, dx, torch.ones_like(dx)), torch.zeros_like(dx))
    a = torch.where(live, ys[:-1] - b * xs[:-1], torch.zeros_like(dx))
    nz = int((xs == 0).sum())
    f0 = ys[nz - 1] if nz >= 1 else ys[0]
    f1 = ys[int((xs < 1).sum())] if int((xs < 1).sum()) < NUM_POINTS else ys[-1]
    return SegmentTable(xs=xs, a=a, b=b, f0=f0, f1=f1)


def theta_to_ctrl(theta: torch.Tensor) -> torch.Tensor:
    """Map search parameters to control points (spec §3.3).

    Args:
        theta: (..., 8) in [0, 1]: ``p_1 = theta[0:2]``, ``p_j = theta[2j-2:2j] * (1 - p_{j-1}) + p_{j-1}``.
    Returns:
        (..., 12): ``(0,0), p_1..p_4, (1,1)`` flattened.
    """
    if theta.shape[-1] != 8:
        raise ValueError(f"theta_to_ctrl expects 8 numbers per function (4 free points); got {theta.shape[-1]}")
    pts = []
    prev = torch.zeros_like(theta[..., 0:2])
    for j in range(4):
        p = theta[..., 2 * j:2 * j + 2] * (1 - prev) + prev
        pts.append(p)
        prev = p
    zeros, ones = torch.zeros_like(prev), torch.ones_like(prev)
    return torch.cat([zeros, *pts, ones], dim=-1)


def grad_scale_from_theta(theta_g: torch.Tensor | float) -> torch.Tensor | float:
    """Box-gradient multiplier ``lambda = 10 ** (2 * theta_g - 1)`` in [0.1, 10] (spec §3.3)."""
    return 10.0 ** (2 * theta_g - 1)
