"""Pieces every selective-scan backend shares: input checks, the delta prologue and the output epilogue.

Semantics (mamba-ssm v1.2.0 ``selective_scan_fn``, spec §6.1, plus De-focus Mamba's head-wise RMS norm, §2.2
step 8, as an optional part of the epilogue so that backends can fuse it):

    delta <- softplus(delta + delta_bias)             (bias and softplus each optional; float32)
    h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t    (paper Eq. 2-3; Euler for B as the kernel)
    y_t = <C_t, h_t>                                    (paper Eq. 4)
    y <- y * rsqrt(mean_G(y^2) + 1e-6)                  (if group_size = G > 0: every G consecutive channels)
    out = (y + D * u) * silu(z)                          (D and z each optional)

Shapes: ``u, delta, z`` (b, E, L); ``A`` (E, N); ``B, C`` (b, N, L) (one group shared by all E channels);
``D, delta_bias`` (E,). The dispatcher (``selective_scan.py``) and every backend import this module; none
imports another backend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["GROUP_NORM_EPS", "check_scan_inputs", "compute_dtype", "prepare_delta", "head_rms_norm", "epilogue"]

GROUP_NORM_EPS = 1e-6  # official "retnet groupnorm" epsilon


def check_scan_inputs(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, group_size: int = 0) -> None:
    """Raise a ValueError naming the offending tensor if the shapes do not fit together."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (b, E, L), got shape {tuple(u.shape)}")
    b, E, L = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: delta must match u {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != E:
        raise ValueError(f"selective_scan: A must be (E={E}, N), got {tuple(A.shape)}")
    N = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.shape != (b, N, L):
            raise ValueError(f"selective_scan: {name} must be (b={b}, N={N}, L={L}), got {tuple(t.shape)}")
    if group_size and E % group_size:
        raise ValueError(f"selective_scan: group_size {group_size} does not divide the {E} channels")


def compute_dtype(u: Tensor) -> torch.dtype:
    """float64 for float64 inputs, float32 otherwise (bf16/fp16 inputs are computed in float32)."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def prepare_delta(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool, dtype: torch.dtype) -> Tensor:
    """softplus(delta + delta_bias) in ``dtype`` (each step optional); (b, E, L)."""
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def head_rms_norm(y: Tensor, group_size: int) -> Tensor:
    """y * rsqrt(mean(y^2) + 1e-6) over every ``group_size`` consecutive channels, no affine; y (b, E, L)."""
    b, E, L = y.shape
    g = y.view(b, E // group_size, group_size, L)
    return (g * torch.rsqrt(g.pow(2).mean(2, keepdim=True) + GROUP_NORM_EPS)).view(b, E, L)


def epilogue(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype: torch.dtype,
             group_size: int = 0) -> Tensor:
    """out = (norm_G(y) + D*u) * silu(z), computed in ``dtype``; y, u, z (b, E, L); D (E,)."""
    y = y.to(dtype)
    if group_size:
        y = head_rms_norm(y, group_size)
    if D is not None:
        y = y + u.to(dtype) * D.to(dtype)[None, :, None]
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y
